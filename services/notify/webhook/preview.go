package webhook

import (
	"fmt"
	"strings"
	"time"

	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/notify/tmpl"
)

// Notifier renders what it would send (otawatch replay notify).
var _ notify.Previewer = (*Notifier)(nil)

// Preview is the payload's summary n would post and where, without
// posting it (notify.Previewer).
func (r *Notifier) Preview(n *notify.Notification, _ bool, _ time.Time) (string, error) {
	summary, err := r.summary.Execute(tmpl.NewData(n))
	if err != nil {
		return "", fmt.Errorf("webhook %s: %w", n.Receiver, err)
	}
	return fmt.Sprintf("POST %s (%d alerts): %s", r.cfg.URL, len(n.Alerts), strings.TrimSpace(summary)), nil
}
