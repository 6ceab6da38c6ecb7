package slack

import (
	"strings"
	"time"

	"github.com/otawatch/otawatch/services/notify"
)

// Notifier renders what it would send (otawatch replay notify).
var _ notify.Previewer = (*Notifier)(nil)

// Preview is the message n would post, as text: its sections (title,
// then body), without posting it (notify.Previewer).
func (r *Notifier) Preview(n *notify.Notification, _ bool, _ time.Time) (string, error) {
	m, err := r.Message(n)
	if err != nil {
		return "", err
	}
	var parts []string
	for _, b := range m.Blocks {
		if b.Type == "section" && b.Text != nil {
			parts = append(parts, b.Text.Text)
		}
	}
	return strings.Join(parts, "\n"), nil
}
