package email

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/notify/tmpl"
)

// Notifier mails notifications to the configured recipients.
type Notifier struct {
	cfg      Config
	password string
	tls      *tls.Config
	// from and to are the bare addresses of the envelope (MAIL FROM,
	// RCPT TO); cfg.From and cfg.To go in the headers as written.
	from string
	to   []string
	t    *templates
}

// New builds the receiver: it applies the defaults, returns a *conf.Error
// listing every problem of cfg, and reads the password.
func New(cfg Config) (*Notifier, error) {
	if err := conf.Check("", &cfg); err != nil {
		return nil, err
	}
	r := &Notifier{cfg: cfg, t: cfg.templates(conf.NewProblems())}
	var err error
	if r.password, err = conf.ReadSecret(cfg.PasswordFile); err != nil {
		return nil, fmt.Errorf("smtp password: %w", err)
	}
	if r.tls, err = cfg.tlsConfig(); err != nil {
		return nil, err
	}
	from, _ := mail.ParseAddress(cfg.From) // validated
	r.from = from.Address
	for _, to := range cfg.To {
		a, _ := mail.ParseAddress(to)
		r.to = append(r.to, a.Address)
	}
	return r, nil
}

// Notify mails n now.
func (r *Notifier) Notify(ctx context.Context, n *notify.Notification) (notify.Result, error) {
	d := tmpl.NewData(n)
	m, err := r.render(r.t.subject, r.t.text, r.t.html, d)
	if err != nil {
		return notify.Result{}, fmt.Errorf("email %s: %w", n.Receiver, err)
	}
	m.date = n.Time
	m.messageID = messageID(r.from, n.Receiver, n.GroupKey, n.Status, n.Time.UTC().Format(time.RFC3339Nano))
	return r.deliver(ctx, n.Receiver, m)
}

// NotifyDigest mails n's alerts as a digest of the period from since
// (zero: a day before n.Time) to n.Time, grouped by rule and job: what a
// caller that schedules digests itself (a digest_at route) sends instead
// of Notify.
func (r *Notifier) NotifyDigest(ctx context.Context, n *notify.Notification, since time.Time) (notify.Result, error) {
	if since.IsZero() {
		since = n.Time.Add(-24 * time.Hour)
	}
	return r.sendDigest(ctx, n.Receiver, since, n.Time, n.Alerts, n.ExternalURL)
}

func (r *Notifier) sendDigest(ctx context.Context, receiver string, from, to time.Time, alerts []events.AlertData, externalURL string) (notify.Result, error) {
	d := NewDigestData(receiver, from, to, alerts)
	d.ExternalURL = externalURL
	m, err := r.render(r.t.digestSubject, r.t.digestText, r.t.digestHTML, d)
	if err != nil {
		return notify.Result{}, fmt.Errorf("email %s digest: %w", receiver, err)
	}
	m.date = to
	m.messageID = messageID(r.from, "digest", receiver, from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano))
	return r.deliver(ctx, receiver+" digest", m)
}

func (r *Notifier) render(subject, text *tmpl.Text, html *tmpl.HTML, data any) (*message, error) {
	m := &message{from: r.cfg.From, to: r.cfg.To}
	var err error
	if m.subject, err = subject.Execute(data); err != nil {
		return nil, err
	}
	if m.text, err = text.Execute(data); err != nil {
		return nil, err
	}
	var h string
	if h, err = html.Execute(data); err != nil {
		return nil, err
	}
	m.html = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + htmlEscape(oneLine(m.subject)) +
		"</title></head>\n<body>\n" + h + "</body></html>\n"
	return m, nil
}

func (r *Notifier) deliver(ctx context.Context, what string, m *message) (notify.Result, error) {
	msg, err := m.bytes()
	if err != nil {
		return notify.Result{}, fmt.Errorf("email %s: build message: %w", what, err)
	}
	res, err := r.send(ctx, msg)
	if err != nil {
		return res, fmt.Errorf("email %s: %w", what, err)
	}
	return res, nil
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;").Replace(s)
}
