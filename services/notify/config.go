package notify

import (
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/lease"
	"github.com/otawatch/otawatch/services/internal/match"
)

// Receiver kinds (ReceiverConfig.ReceiverKind): the default route sends
// critical alerts to the first pagerduty receiver, warnings to the first
// slack one and info alerts to the first email one, as a daily digest.
const (
	KindPagerDuty = "pagerduty"
	KindSlack     = "slack"
	KindEmail     = "email"
	KindWebhook   = "webhook"
)

// ReceiverConfig is one entry of the receivers list. The type lives with
// the receivers (the app assembles one block per receiver package:
// pagerduty, slack, email, webhook) because those packages import this
// one; notify needs only this much of it.
type ReceiverConfig interface {
	// ReceiverName is the entry's name, the receiver token of NOTIFY's
	// subjects.
	ReceiverName() string
	// ReceiverKind is the kind of its one block (Kind* constants).
	ReceiverKind() string
	// SetDefaults fills in the entry's unset keys (Config.SetDefaults
	// calls it: the configuration walk does not reach list entries).
	SetDefaults()
	// Validate reports the entry's problems (its blocks' keys, missing
	// secret files) relative to the entry.
	Validate(p conf.Problems)
	// Notifier builds the receiver.
	Notifier(log *slog.Logger) (Notifier, error)
}

// Config is the notify service's section ("notify"). R is the receivers'
// entry type (the app's).
type Config[R ReceiverConfig] struct {
	// Route is the routing tree's root, Alertmanager's route: every alert
	// enters at the root and goes down the first child whose matchers it
	// satisfies (and on, past a child with continue). A root without a
	// receiver and without children routes as the seed did: critical ->
	// the first pagerduty receiver, warning -> the first slack receiver,
	// info -> the first email receiver's daily digest (each only when
	// such a receiver is configured).
	Route *Route `yaml:"route"`
	// Receivers are the configured receivers.
	Receivers []R `yaml:"receivers"`
	// InhibitRules mute target alerts while a source alert is raised.
	// Nil is the default: a critical success-rate-low of a job mutes that
	// job's per-device warnings. An empty list turns inhibition off.
	InhibitRules []InhibitRule `yaml:"inhibit_rules"`
	// ExternalURL is the dashboard's address, for links in notifications.
	ExternalURL string `yaml:"external_url"`
	// Timeout bounds one delivery attempt.
	Timeout time.Duration `yaml:"timeout"`
	// RetryInitial and RetryMax bound the backoff between attempts
	// (exponential with jitter); RetryFor is how long a notification is
	// retried before its failure is final (a later change of its group
	// tries again).
	RetryInitial time.Duration `yaml:"retry_initial"`
	RetryMax     time.Duration `yaml:"retry_max"`
	RetryFor     time.Duration `yaml:"retry_for"`
	// LeaseBucket and LeaseTTL: the JetStream KV lease that makes one
	// instance the active one; a standby takes over within LeaseTTL.
	LeaseBucket string        `yaml:"lease_bucket"`
	LeaseTTL    time.Duration `yaml:"lease_ttl"`
}

// Route is one node of the routing tree. Unset keys are inherited from the
// parent (the root's from the defaults).
type Route struct {
	// Receiver gets the alerts that end at this route.
	Receiver string `yaml:"receiver"`
	// Matchers select the alerts that enter this route (all must hold):
	// severity="critical", rule=~"device-.*", job!="", device_type="x".
	Matchers []string `yaml:"matchers"`
	// Continue: an alert that matched this route goes on to its later
	// siblings too.
	Continue bool `yaml:"continue"`
	// GroupBy are the labels whose values make a group; ["..."] groups by
	// every label (one alert a group).
	GroupBy []string `yaml:"group_by"`
	// GroupWait is how long a new group waits for more alerts before its
	// first notification; GroupInterval how long it waits after a
	// notification before one about new alerts; RepeatInterval how long
	// before it repeats an unchanged firing notification.
	GroupWait      *time.Duration `yaml:"group_wait"`
	GroupInterval  *time.Duration `yaml:"group_interval"`
	RepeatInterval *time.Duration `yaml:"repeat_interval"`
	// DigestAt makes the route a digest: its groups are notified once a
	// day at this local time ("08:00", in TimeZone), each with every alert
	// it had in the period, instead of after group_wait/group_interval.
	DigestAt string `yaml:"digest_at"`
	// TimeZone is DigestAt's zone (IANA name); empty is the process's.
	TimeZone string `yaml:"time_zone"`
	// Routes are the children, tried in order.
	Routes []*Route `yaml:"routes"`
}

// InhibitRule mutes alerts matching TargetMatchers while an alert matching
// SourceMatchers is raised with the same values of the Equal labels.
type InhibitRule struct {
	SourceMatchers []string `yaml:"source_matchers"`
	TargetMatchers []string `yaml:"target_matchers"`
	Equal          []string `yaml:"equal"`
}

// Defaults of the notify section (Alertmanager's for the route timings).
const (
	DefaultGroupWait      = 30 * time.Second
	DefaultGroupInterval  = 5 * time.Minute
	DefaultRepeatInterval = 4 * time.Hour
	DefaultTimeout        = 10 * time.Second
	DefaultRetryInitial   = 500 * time.Millisecond
	DefaultRetryMax       = 30 * time.Second
	DefaultRetryFor       = 10 * time.Minute
	DefaultLeaseBucket    = "notify_lease"
	DefaultLeaseTTL       = 10 * time.Second
	DefaultDigestAt       = "08:00"
)

// DefaultInhibitRules is inhibit_rules when unset: a critical
// success-rate-low of a job mutes that job's per-device warnings while it
// is raised (one page says the job is failing; the warnings of its devices
// are the same story).
func DefaultInhibitRules() []InhibitRule {
	return []InhibitRule{{
		SourceMatchers: []string{`severity="critical"`, `rule="success-rate-low"`, `job=~".+"`},
		TargetMatchers: []string{`severity="warning"`, `device=~".+"`},
		Equal:          []string{LabelJob},
	}}
}

// SetDefaults fills in unset keys.
func (c *Config[R]) SetDefaults() {
	for _, r := range c.Receivers {
		r.SetDefaults()
	}
	if c.InhibitRules == nil {
		c.InhibitRules = DefaultInhibitRules()
	}
	setDur(&c.Timeout, DefaultTimeout)
	setDur(&c.RetryInitial, DefaultRetryInitial)
	setDur(&c.RetryMax, DefaultRetryMax)
	setDur(&c.RetryFor, DefaultRetryFor)
	setDur(&c.LeaseTTL, DefaultLeaseTTL)
	if c.LeaseBucket == "" {
		c.LeaseBucket = DefaultLeaseBucket
	}
	if c.Route == nil {
		c.Route = &Route{}
	}
	if c.Route.Receiver == "" && len(c.Route.Routes) == 0 {
		// A root that routes nothing anywhere is the seed's tree, with
		// the root's timings.
		c.Route.Routes = c.defaultRoutes()
	}
	d := func(v time.Duration) *time.Duration { return &v }
	if c.Route.GroupWait == nil {
		c.Route.GroupWait = d(DefaultGroupWait)
	}
	if c.Route.GroupInterval == nil {
		c.Route.GroupInterval = d(DefaultGroupInterval)
	}
	if c.Route.RepeatInterval == nil {
		c.Route.RepeatInterval = d(DefaultRepeatInterval)
	}
	if c.Route.GroupBy == nil {
		c.Route.GroupBy = []string{LabelRule, LabelJob, LabelWave}
	}
}

func setDur(d *time.Duration, def time.Duration) {
	if *d == 0 {
		*d = def
	}
}

// defaultRoutes are the seed's routes over the configured receivers.
func (c *Config[R]) defaultRoutes() []*Route {
	first := func(kind string) string {
		for _, r := range c.Receivers {
			if r.ReceiverKind() == kind {
				return r.ReceiverName()
			}
		}
		return ""
	}
	var routes []*Route
	if r := first(KindPagerDuty); r != "" {
		routes = append(routes, &Route{Receiver: r, Matchers: []string{`severity="critical"`}})
	}
	if r := first(KindSlack); r != "" {
		routes = append(routes, &Route{Receiver: r, Matchers: []string{`severity="warning"`}})
	}
	if r := first(KindEmail); r != "" {
		routes = append(routes, &Route{Receiver: r, Matchers: []string{`severity="info"`},
			GroupBy: []string{}, DigestAt: DefaultDigestAt})
	}
	return routes
}

// Validate reports every problem of the section: receivers (names, their
// blocks, secret files), routes (unknown receivers, bad matchers, bad
// timings), inhibit rules and the delivery settings.
func (c *Config[R]) Validate(p conf.Problems) {
	names := map[string]bool{}
	for i, r := range c.Receivers {
		rp := p.Sub(fmt.Sprintf("receivers.%d", i))
		name := r.ReceiverName()
		switch {
		case name == events.NotifySilences:
			rp.Addf("name", "%q is reserved (silence subjects)", name)
		case names[name]:
			rp.Addf("name", "receiver %q is defined twice", name)
		default:
			if err := events.ValidateID("receiver name", name); err != nil {
				rp.Addf("name", "%v", err)
			}
		}
		names[name] = true
		r.Validate(rp)
	}
	if c.Route != nil {
		c.Route.validate(p.Sub("route"), names, true)
	}
	for i, ir := range c.InhibitRules {
		ip := p.Sub(fmt.Sprintf("inhibit_rules.%d", i))
		if _, err := match.ParseAll(ir.SourceMatchers); err != nil {
			ip.Addf("source_matchers", "%v", err)
		}
		if _, err := match.ParseAll(ir.TargetMatchers); err != nil {
			ip.Addf("target_matchers", "%v", err)
		}
		for _, l := range ir.Equal {
			if !match.LabelName(l) {
				ip.Addf("equal", "%q is not a label name", l)
			}
		}
	}
	if c.ExternalURL != "" {
		if u, err := url.Parse(c.ExternalURL); err != nil || u.Scheme == "" || u.Host == "" {
			p.Addf("external_url", "%q is not an absolute URL", c.ExternalURL)
		}
	}
	if c.Timeout < 10*time.Millisecond {
		p.Addf("timeout", "%s is shorter than 10ms", c.Timeout)
	}
	if c.RetryInitial <= 0 || c.RetryMax < c.RetryInitial {
		p.Addf("retry_max", "retry_initial %s and retry_max %s: want 0 < retry_initial <= retry_max", c.RetryInitial, c.RetryMax)
	}
	if c.RetryFor < 0 {
		p.Addf("retry_for", "must not be negative")
	}
	lease.CheckConfig(p, c.LeaseBucket, c.LeaseTTL)
}

func (r *Route) validate(p conf.Problems, receivers map[string]bool, root bool) {
	if root && len(r.Matchers) > 0 {
		p.Addf("matchers", "the root route matches every alert: it may not have matchers")
	}
	if root && r.Continue {
		p.Addf("continue", "the root route may not continue")
	}
	if r.Receiver != "" && !receivers[r.Receiver] {
		p.Addf("receiver", "unknown receiver %q (receivers: %s)", r.Receiver, strings.Join(sortedKeys(receivers), ", "))
	}
	for _, s := range r.Matchers {
		if _, err := match.Parse(s); err != nil {
			p.Addf("matchers", "%v", err)
		}
	}
	for _, l := range r.GroupBy {
		if l != "..." && !match.LabelName(l) {
			p.Addf("group_by", "%q is not a label name (or ...)", l)
		}
	}
	for key, d := range map[string]*time.Duration{"group_wait": r.GroupWait, "group_interval": r.GroupInterval, "repeat_interval": r.RepeatInterval} {
		if d != nil && *d < 0 {
			p.Addf(key, "%s is negative", *d)
		}
	}
	if r.GroupInterval != nil && *r.GroupInterval < time.Millisecond {
		p.Addf("group_interval", "%s is shorter than 1ms", *r.GroupInterval)
	}
	if r.DigestAt != "" {
		if _, err := time.Parse("15:04", r.DigestAt); err != nil {
			p.Addf("digest_at", "%q is not a time of day (HH:MM)", r.DigestAt)
		}
	}
	if r.TimeZone != "" {
		if _, err := time.LoadLocation(r.TimeZone); err != nil {
			p.Addf("time_zone", "%v", err)
		}
	}
	for i, ch := range r.Routes {
		if ch == nil {
			p.Addf(fmt.Sprintf("routes.%d", i), "is empty")
			continue
		}
		ch.validate(p.Sub(fmt.Sprintf("routes.%d", i)), receivers, false)
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
