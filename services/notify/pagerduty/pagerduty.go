package pagerduty

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/notify/httpsend"
	"github.com/otawatch/otawatch/services/notify/tmpl"
)

// DefaultURL is PagerDuty's Events API host.
const DefaultURL = "https://events.pagerduty.com"

// Config is one PagerDuty receiver.
type Config struct {
	// URL is the Events API base (default DefaultURL); events go to
	// {url}/v2/enqueue. A proxy or a test server stands in here.
	URL string `yaml:"url"`
	// RoutingKeyFile holds the integration's routing key.
	RoutingKeyFile string `yaml:"routing_key_file"`
	// Timeout bounds one attempt (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// Source is payload.source (default "otawatch").
	Source string `yaml:"source"`
	// Summary overrides the payload.summary template (tmpl.DefaultTitle).
	Summary string `yaml:"summary"`
	// MaxDevices bounds the devices listed in custom_details (default
	// 100); devices_total still counts them all.
	MaxDevices int `yaml:"max_devices"`
}

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Source == "" {
		c.Source = "otawatch"
	}
	if c.MaxDevices == 0 {
		c.MaxDevices = 100
	}
}

// Validate reports every problem of the receiver, reading the routing key
// file to check it is there and not empty.
func (c *Config) Validate(p conf.Problems) {
	if err := httpsend.CheckURL(c.URL); err != nil {
		p.Addf("url", "%v", err)
	}
	if c.RoutingKeyFile == "" {
		p.Addf("routing_key_file", "is required (the integration's routing key)")
	} else if key, err := conf.ReadSecret(c.RoutingKeyFile); err != nil {
		p.Addf("routing_key_file", "%v", err)
	} else if strings.TrimSpace(key) == "" {
		p.Addf("routing_key_file", "%s is empty", c.RoutingKeyFile)
	}
	if c.Timeout <= 0 {
		p.Addf("timeout", "must be positive")
	}
	if c.MaxDevices < 1 {
		p.Addf("max_devices", "%d is less than 1", c.MaxDevices)
	}
	if _, err := tmpl.ParseText("summary", c.Summary, tmpl.DefaultTitle); err != nil {
		p.Addf("summary", "%v", err)
	}
}

// Notifier sends notifications to one PagerDuty integration.
type Notifier struct {
	cfg        Config
	endpoint   string
	routingKey string
	summary    *tmpl.Text
	client     *http.Client
}

// New builds the receiver: it applies the defaults, returns a *conf.Error
// listing every problem of cfg, and reads the routing key.
func New(cfg Config) (*Notifier, error) {
	if err := conf.Check("", &cfg); err != nil {
		return nil, err
	}
	key, err := conf.ReadSecret(cfg.RoutingKeyFile)
	if err != nil {
		return nil, fmt.Errorf("pagerduty routing key: %w", err)
	}
	summary, err := tmpl.ParseText("summary", cfg.Summary, tmpl.DefaultTitle)
	if err != nil {
		return nil, err
	}
	return &Notifier{
		cfg: cfg, endpoint: strings.TrimRight(cfg.URL, "/") + "/v2/enqueue",
		routingKey: strings.TrimSpace(key), summary: summary, client: httpsend.NewClient(),
	}, nil
}

// DedupKey is the dedup_key of a group: a hash of the group key, so it is
// the same for every notification of the group, whoever sends it, and
// within PagerDuty's 255 characters whatever the group's labels.
func DedupKey(groupKey string) string {
	sum := sha256.Sum256([]byte(groupKey))
	return hex.EncodeToString(sum[:])
}

// Event is an Events API v2 event, as PagerDuty documents it.
type Event struct {
	RoutingKey  string   `json:"routing_key"`
	EventAction string   `json:"event_action"`
	DedupKey    string   `json:"dedup_key"`
	Payload     *Payload `json:"payload,omitempty"`
	Client      string   `json:"client,omitempty"`
	ClientURL   string   `json:"client_url,omitempty"`
	Links       []Link   `json:"links,omitempty"`
}

// Payload is a trigger's payload.
type Payload struct {
	Summary       string         `json:"summary"`
	Source        string         `json:"source"`
	Severity      string         `json:"severity"`
	Timestamp     string         `json:"timestamp,omitempty"`
	Component     string         `json:"component,omitempty"`
	Class         string         `json:"class,omitempty"`
	CustomDetails map[string]any `json:"custom_details,omitempty"`
}

// Link is a link shown on the incident.
type Link struct {
	Href string `json:"href"`
	Text string `json:"text"`
}

// Event actions.
const (
	ActionTrigger = "trigger"
	ActionResolve = "resolve"
)

// maxSummary is PagerDuty's limit on payload.summary.
const maxSummary = 1024

// Severity maps an otawatch severity onto PagerDuty's four (critical,
// error, warning, info); an unknown one is "error", so it still pages
// rather than hiding as info.
func Severity(s string) string {
	switch s {
	case "critical", "error", "warning", "info":
		return s
	}
	return "error"
}

// Event builds the event for n: a resolve when the group has resolved, a
// trigger otherwise.
func (r *Notifier) Event(n *notify.Notification) (*Event, error) {
	ev := &Event{RoutingKey: r.routingKey, DedupKey: DedupKey(n.GroupKey)}
	if n.Status == notify.StatusResolved {
		// A resolve is the three keys PagerDuty documents for it.
		ev.EventAction = ActionResolve
		return ev, nil
	}
	ev.EventAction, ev.Client, ev.ClientURL = ActionTrigger, "otawatch", n.ExternalURL
	d := tmpl.NewData(n)
	summary, err := r.summary.Execute(d)
	if err != nil {
		return nil, err
	}
	summary = strings.TrimSpace(summary)
	if len(summary) > maxSummary {
		summary = httpsend.Trim(summary[:maxSummary-len("…")])
	}
	details := map[string]any{
		"firing":        len(d.Firing),
		"resolved":      len(d.Resolved),
		"rule":          strings.Join(d.Rules, ", "),
		"devices_total": len(d.Devices),
		"devices":       first(d.Devices, r.cfg.MaxDevices),
	}
	if len(d.Jobs) > 0 {
		details["job"] = strings.Join(d.Jobs, ", ")
	}
	if len(d.Waves) > 0 {
		details["wave"] = d.WaveList()
	}
	if len(n.GroupLabels) > 0 {
		details["group_labels"] = n.GroupLabels
	}
	var msgs []string
	for _, a := range first(d.Firing, 10) {
		msgs = append(msgs, a.Message)
	}
	if len(msgs) > 0 {
		details["messages"] = msgs
	}
	ev.Payload = &Payload{
		Summary: summary, Source: r.cfg.Source, Severity: Severity(d.Severity),
		Component: strings.Join(d.Jobs, ", "), Class: strings.Join(d.Rules, ", "),
		CustomDetails: details,
	}
	if starts := earliest(d); !starts.IsZero() {
		ev.Payload.Timestamp = starts.UTC().Format(time.RFC3339Nano)
	}
	if n.ExternalURL != "" {
		ev.Links = []Link{{Href: n.ExternalURL, Text: "otawatch dashboard"}}
	}
	return ev, nil
}

// Notify sends n as one event.
func (r *Notifier) Notify(ctx context.Context, n *notify.Notification) (notify.Result, error) {
	ev, err := r.Event(n)
	if err != nil {
		return notify.Result{}, fmt.Errorf("pagerduty %s: %w", n.Receiver, err)
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return notify.Result{}, fmt.Errorf("pagerduty %s: encode event: %w", n.Receiver, err)
	}
	res, err := httpsend.Post(ctx, r.client, r.cfg.Timeout, httpsend.Request{URL: r.endpoint, Body: body})
	if err != nil {
		return res, fmt.Errorf("pagerduty %s %s: %w", n.Receiver, ev.EventAction, err)
	}
	return res, nil
}

func first[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	if s == nil {
		return []T{}
	}
	return s
}

func earliest(d *tmpl.Data) time.Time {
	alerts := d.Firing
	if len(alerts) == 0 {
		alerts = d.Alerts
	}
	times := make([]time.Time, 0, len(alerts))
	for _, a := range alerts {
		if !a.StartsAt.IsZero() {
			times = append(times, a.StartsAt)
		}
	}
	if len(times) == 0 {
		return time.Time{}
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	return times[0]
}
