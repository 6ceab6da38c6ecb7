package pagerduty

import (
	"fmt"
	"time"

	"github.com/otawatch/otawatch/services/notify"
)

// Notifier renders what it would send (otawatch replay notify).
var _ notify.Previewer = (*Notifier)(nil)

// Preview is the event n would send, in a line: the action, the dedup
// key and, for a trigger, the severity and summary, without sending it
// (notify.Previewer).
func (r *Notifier) Preview(n *notify.Notification, _ bool, _ time.Time) (string, error) {
	ev, err := r.Event(n)
	if err != nil {
		return "", err
	}
	if ev.Payload == nil {
		return fmt.Sprintf("%s dedup_key %s", ev.EventAction, ev.DedupKey), nil
	}
	return fmt.Sprintf("%s dedup_key %s [%s] %s", ev.EventAction, ev.DedupKey, ev.Payload.Severity, ev.Payload.Summary), nil
}
