package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/notify/httpsend"
	"github.com/otawatch/otawatch/services/notify/tmpl"
)

// Headers the receiver sets.
const (
	// SignatureHeader is "sha256=" + hex HMAC-SHA256 of the body, when a
	// secret is configured.
	SignatureHeader = "X-Otawatch-Signature"
	// IDHeader identifies the notification (NotificationID): equal on
	// every attempt at it.
	IDHeader = "X-Otawatch-Notification-Id"
)

// PayloadVersion is Payload.Version: it changes when a field changes
// meaning or goes away (new fields do not change it).
const PayloadVersion = "1"

// Config is one webhook receiver.
type Config struct {
	// URL is where notifications are posted (http or https).
	URL string `yaml:"url"`
	// SecretFile, when set, holds the key requests are signed with.
	SecretFile string `yaml:"secret_file"`
	// Timeout bounds one attempt (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// Summary overrides Payload.Summary's template (tmpl.DefaultTitle).
	Summary string `yaml:"summary"`
}

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
}

// Validate reports every problem of the receiver, reading secret_file to
// check it is there and not empty.
func (c *Config) Validate(p conf.Problems) {
	if c.URL == "" {
		p.Addf("url", "is required")
	} else if err := httpsend.CheckURL(c.URL); err != nil {
		p.Addf("url", "%v", err)
	}
	if c.SecretFile != "" {
		if s, err := conf.ReadSecret(c.SecretFile); err != nil {
			p.Addf("secret_file", "%v", err)
		} else if s == "" {
			p.Addf("secret_file", "%s is empty", c.SecretFile)
		}
	}
	if c.Timeout <= 0 {
		p.Addf("timeout", "must be positive")
	}
	if _, err := tmpl.ParseText("summary", c.Summary, tmpl.DefaultTitle); err != nil {
		p.Addf("summary", "%v", err)
	}
}

// Payload is the JSON body of a webhook request.
type Payload struct {
	Version      string            `json:"version"`
	ID           string            `json:"id"`
	Receiver     string            `json:"receiver"`
	Status       string            `json:"status"`
	GroupKey     string            `json:"groupKey"`
	GroupLabels  map[string]string `json:"groupLabels"`
	CommonLabels map[string]string `json:"commonLabels"`
	// Summary is the notification in one line (the summary template).
	Summary     string             `json:"summary"`
	ExternalURL string             `json:"externalURL,omitempty"`
	Time        time.Time          `json:"time"`
	Alerts      []events.AlertData `json:"alerts"`
}

// Notifier posts notifications to one URL.
type Notifier struct {
	cfg     Config
	secret  []byte
	summary *tmpl.Text
	client  *http.Client
}

// New builds the receiver: it applies the defaults, returns a *conf.Error
// listing every problem of cfg, and reads the secret.
func New(cfg Config) (*Notifier, error) {
	if err := conf.Check("", &cfg); err != nil {
		return nil, err
	}
	secret, err := conf.ReadSecret(cfg.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %w", err)
	}
	summary, err := tmpl.ParseText("summary", cfg.Summary, tmpl.DefaultTitle)
	if err != nil {
		return nil, err
	}
	return &Notifier{cfg: cfg, secret: []byte(secret), summary: summary, client: httpsend.NewClient()}, nil
}

// NotificationID identifies a notification: its group, status and
// decision time, hashed.
func NotificationID(n *notify.Notification) string {
	sum := sha256.Sum256([]byte(n.GroupKey + "\x00" + n.Status + "\x00" + n.Time.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(sum[:16])
}

// Sign is the signature header's value for body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether header (SignatureHeader's value) signs body under
// secret, in constant time.
func Verify(secret, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	mac, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(mac, m.Sum(nil))
}

// Notify posts n.
func (r *Notifier) Notify(ctx context.Context, n *notify.Notification) (notify.Result, error) {
	summary, err := r.summary.Execute(tmpl.NewData(n))
	if err != nil {
		return notify.Result{}, fmt.Errorf("webhook %s: %w", n.Receiver, err)
	}
	p := Payload{
		Version: PayloadVersion, ID: NotificationID(n), Receiver: n.Receiver, Status: n.Status, GroupKey: n.GroupKey,
		GroupLabels: n.GroupLabels, CommonLabels: n.CommonLabels, Summary: strings.TrimSpace(summary),
		ExternalURL: n.ExternalURL, Time: n.Time.UTC(), Alerts: n.Alerts,
	}
	if p.GroupLabels == nil {
		p.GroupLabels = map[string]string{}
	}
	if p.CommonLabels == nil {
		p.CommonLabels = map[string]string{}
	}
	if p.Alerts == nil {
		p.Alerts = []events.AlertData{}
	}
	body, err := json.Marshal(p)
	if err != nil {
		return notify.Result{}, fmt.Errorf("webhook %s: encode payload: %w", n.Receiver, err)
	}
	h := http.Header{IDHeader: {p.ID}}
	if len(r.secret) > 0 {
		h.Set(SignatureHeader, Sign(r.secret, body))
	}
	res, err := httpsend.Post(ctx, r.client, r.cfg.Timeout, httpsend.Request{URL: r.cfg.URL, Header: h, Body: body})
	if err != nil {
		return res, fmt.Errorf("webhook %s: %w", n.Receiver, err)
	}
	return res, nil
}
