package email

import (
	"strings"
	"time"

	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/notify/tmpl"
)

// Notifier renders what it would send (otawatch replay notify).
var _ notify.Previewer = (*Notifier)(nil)

// Preview is the mail n would send (a digest's, for a digest route's
// notification of the period from since): its recipients, subject and
// text part, without sending it (notify.Previewer).
func (r *Notifier) Preview(n *notify.Notification, digest bool, since time.Time) (string, error) {
	var m *message
	var err error
	if digest {
		if since.IsZero() {
			since = n.Time.Add(-24 * time.Hour) // as NotifyDigest
		}
		d := NewDigestData(n.Receiver, since, n.Time, n.Alerts)
		d.ExternalURL = n.ExternalURL
		m, err = r.render(r.t.digestSubject, r.t.digestText, r.t.digestHTML, d)
	} else {
		m, err = r.render(r.t.subject, r.t.text, r.t.html, tmpl.NewData(n))
	}
	if err != nil {
		return "", err
	}
	return "To: " + strings.Join(r.cfg.To, ", ") + "\nSubject: " + oneLine(m.subject) + "\n\n" + strings.TrimSpace(m.text), nil
}
