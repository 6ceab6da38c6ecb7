package email

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/notify/tmpl"
)

// DefaultDigestSubject is the digest's subject.
const DefaultDigestSubject = `otawatch digest {{.To.Format "2006-01-02"}}: {{plural .Total "alert"}} in {{plural (len .Groups) "group"}}`

// DefaultDigestText is the digest's plain text: the period, the totals,
// then each rule and job with its devices and first alerts.
const DefaultDigestText = `otawatch daily digest, {{.From.Format "2006-01-02 15:04"}} to {{.To.Format "2006-01-02 15:04 MST"}}
{{plural .Total "alert"}} ({{.Firing}} firing, {{.Resolved}} resolved) on {{plural .Devices "device"}}.
{{range .Groups}}
{{.Rule}}{{if .Job}}, job {{.Job}}{{end}} ({{.Severity}}): {{plural (len .Alerts) "alert"}}, {{.Firing}} firing
{{- if .Devices}}
  devices: {{.DeviceList 20}}{{end}}
{{range first 10 .Alerts}}  - [{{.State}}] {{.Message}}, since {{time .StartsAt}}
{{end}}{{with more 10 .Alerts}}  ... and {{.}} more
{{end}}{{end}}{{with .ExternalURL}}
Dashboard: {{.}}
{{end}}`

// DefaultDigestHTML is DefaultDigestText as HTML.
const DefaultDigestHTML = `<h2>otawatch daily digest</h2>
<p>{{.From.Format "2006-01-02 15:04"}} to {{.To.Format "2006-01-02 15:04 MST"}}: {{plural .Total "alert"}} ({{.Firing}} firing, {{.Resolved}} resolved) on {{plural .Devices "device"}}.</p>
{{- range .Groups}}
<h3>{{.Rule}}{{if .Job}}, job {{.Job}}{{end}} ({{.Severity}})</h3>
<p>{{plural (len .Alerts) "alert"}}, {{.Firing}} firing{{if .Devices}}; devices: {{.DeviceList 20}}{{end}}</p>
<table>
<tr><th>state</th><th>message</th><th>since</th></tr>
{{- range first 10 .Alerts}}
<tr><td>{{.State}}</td><td>{{.Message}}</td><td>{{time .StartsAt}}</td></tr>
{{- end}}
</table>
{{- with more 10 .Alerts}}
<p>... and {{.}} more</p>{{end}}
{{- end}}
{{- with .ExternalURL}}
<p><a href="{{.}}">Dashboard</a></p>{{end}}
`

// DigestData is what a digest template sees.
type DigestData struct {
	Receiver string
	// From and To bound the period (in the digest's time zone).
	From, To time.Time
	// Total, Firing and Resolved count the period's alerts (each once, in
	// its latest state); Devices the distinct devices they are about.
	Total, Firing, Resolved, Devices int
	// Groups are the alerts by rule and job, sorted by rule then job.
	Groups      []DigestGroup
	ExternalURL string
}

// DigestGroup is one rule's alerts in one job ("" for none).
type DigestGroup struct {
	Rule, Job string
	// Severity is the highest of the group's alerts.
	Severity         string
	Alerts           []events.AlertData
	Firing, Resolved int
	// Devices are the distinct devices, in alert order.
	Devices []string
}

// DeviceList is the first n devices and how many more.
func (g DigestGroup) DeviceList(n int) string { return tmpl.List(g.Devices, n) }

// alertID is an alert's identity: events.AlertData's (Key, Severity,
// StartsAt).
func alertID(a events.AlertData) string {
	return a.Key + "\x00" + a.Severity + "\x00" + a.StartsAt.UTC().Format(time.RFC3339Nano)
}

// NewDigestData groups alerts for a digest of from..to: each alert once, in
// its latest state (resolved wins over raised), by rule and job.
func NewDigestData(receiver string, from, to time.Time, alerts []events.AlertData) *DigestData {
	d := &DigestData{Receiver: receiver, From: from, To: to}
	latest := map[string]int{}
	var uniq []events.AlertData
	for _, a := range alerts {
		id := alertID(a)
		if i, ok := latest[id]; ok {
			if a.State == events.AlertResolved || uniq[i].State != events.AlertResolved {
				uniq[i] = a
			}
			continue
		}
		latest[id] = len(uniq)
		uniq = append(uniq, a)
	}
	groups := map[[2]string]*DigestGroup{}
	devices := map[string]bool{}
	for _, a := range uniq {
		k := [2]string{a.RuleID, a.JobID}
		g := groups[k]
		if g == nil {
			g = &DigestGroup{Rule: a.RuleID, Job: a.JobID}
			groups[k] = g
		}
		g.Alerts = append(g.Alerts, a)
		if a.State == events.AlertResolved {
			g.Resolved++
			d.Resolved++
		} else {
			g.Firing++
			d.Firing++
		}
		if g.Severity == "" || rank(a.Severity) > rank(g.Severity) {
			g.Severity = a.Severity
		}
		if a.DeviceID != "" {
			dev := a.TypeID + "/" + a.DeviceID
			if !devices[dev] {
				devices[dev] = true
			}
			if !contains(g.Devices, a.DeviceID) {
				g.Devices = append(g.Devices, a.DeviceID)
			}
		}
	}
	d.Total, d.Devices = len(uniq), len(devices)
	for _, g := range groups {
		d.Groups = append(d.Groups, *g)
	}
	sort.Slice(d.Groups, func(i, j int) bool {
		if d.Groups[i].Rule != d.Groups[j].Rule {
			return d.Groups[i].Rule < d.Groups[j].Rule
		}
		return d.Groups[i].Job < d.Groups[j].Job
	})
	return d
}

func rank(sev string) int {
	return map[string]int{"info": 1, "warning": 2, "critical": 3}[sev]
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// DigestConfig says when a Digest sends.
type DigestConfig struct {
	// Receiver names the digest in its mail and in logs.
	Receiver string
	// At is the time of day ("08:00") in TimeZone (an IANA name; empty is
	// UTC).
	At       string
	TimeZone string
	// RetryInterval is the wait after a failure worth another try
	// (default 5m); a retry never waits past the next day's digest.
	RetryInterval time.Duration
	// ExternalURL is the dashboard's address, for the link.
	ExternalURL string
	// OnSend, when set, is told of every attempt (to record it on NOTIFY).
	OnSend func(DigestAttempt)
}

// DigestAttempt is one attempt at sending a digest.
type DigestAttempt struct {
	Receiver string
	// From and To bound the period; Alerts is how many it listed.
	From, To time.Time
	Alerts   int
	Result   notify.Result
	Err      error
}

// Digest collects notifications and mails them once a day. Its Notify
// queues; Run sends at the configured time.
type Digest struct {
	r     *Notifier
	cfg   DigestConfig
	clock svc.Clock
	log   *slog.Logger
	loc   *time.Location
	hour  int
	min   int

	mu      sync.Mutex
	ctx     context.Context
	since   time.Time
	seq     uint64
	pending map[string]pendingAlert
	timer   svc.Timer
	next    time.Time
}

type pendingAlert struct {
	alert events.AlertData
	seq   uint64
}

// NewDigest makes the digest of r's mails, on clock (nil: the wall clock).
func NewDigest(r *Notifier, cfg DigestConfig, clock svc.Clock, log *slog.Logger) (*Digest, error) {
	at, err := time.Parse("15:04", cfg.At)
	if err != nil {
		return nil, fmt.Errorf("digest time %q is not HH:MM", cfg.At)
	}
	loc := time.UTC
	if cfg.TimeZone != "" {
		if loc, err = time.LoadLocation(cfg.TimeZone); err != nil {
			return nil, fmt.Errorf("digest time zone %q: %w", cfg.TimeZone, err)
		}
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = 5 * time.Minute
	}
	if clock == nil {
		clock = svc.RealClock{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Digest{
		r: r, cfg: cfg, clock: clock, log: log.With("receiver", cfg.Receiver), loc: loc,
		hour: at.Hour(), min: at.Minute(), since: clock.Now().In(loc), pending: map[string]pendingAlert{},
	}, nil
}

// Notify queues n's alerts for the next digest (each alert once, in its
// latest state). It does no I/O.
func (d *Digest) Notify(_ context.Context, n *notify.Notification) (notify.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range n.Alerts {
		id := alertID(a)
		if p, ok := d.pending[id]; ok && p.alert.State == events.AlertResolved && a.State != events.AlertResolved {
			continue
		}
		d.seq++
		d.pending[id] = pendingAlert{alert: a, seq: d.seq}
	}
	next := d.next
	if next.IsZero() {
		next = d.nextDaily(d.clock.Now())
	}
	return notify.Result{Answer: "queued for the digest of " + next.Format(time.RFC3339)}, nil
}

// Pending is the number of alerts queued.
func (d *Digest) Pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending)
}

// Next is when the digest sends next (zero before Run).
func (d *Digest) Next() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.next
}

// nextDaily is the first digest time after now.
func (d *Digest) nextDaily(now time.Time) time.Time {
	l := now.In(d.loc)
	t := time.Date(l.Year(), l.Month(), l.Day(), d.hour, d.min, 0, 0, d.loc)
	if !t.After(l) {
		t = time.Date(l.Year(), l.Month(), l.Day()+1, d.hour, d.min, 0, 0, d.loc)
	}
	return t
}

// Run sends the digest at its time every day until ctx ends; it returns
// nil then.
func (d *Digest) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.ctx != nil {
		d.mu.Unlock()
		return errors.New("digest is already running")
	}
	d.ctx = ctx
	d.arm(d.nextDaily(d.clock.Now()))
	d.mu.Unlock()
	<-ctx.Done()
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
	}
	d.mu.Unlock()
	return nil
}

// arm sets the timer for at. d.mu is held.
func (d *Digest) arm(at time.Time) {
	if d.timer != nil {
		d.timer.Stop()
	}
	d.next = at
	d.timer = d.clock.AfterFunc(at.Sub(d.clock.Now()), d.fire)
}

func (d *Digest) fire() {
	d.mu.Lock()
	ctx := d.ctx
	d.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	now := d.clock.Now()
	sent, res, err := d.Flush(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	next := d.nextDaily(now)
	if sent && err != nil && res.Retry {
		if retry := now.Add(max(d.cfg.RetryInterval, res.RetryAfter)); retry.Before(next) {
			next = retry
		}
	}
	if ctx.Err() == nil {
		d.arm(next)
	}
}

// Flush mails what is queued now, as the period from the last digest sent
// to now; sent is false when nothing was queued (no mail). On success the
// mailed alerts leave the queue; on failure they stay for the next try.
func (d *Digest) Flush(ctx context.Context) (sent bool, res notify.Result, err error) {
	d.mu.Lock()
	if len(d.pending) == 0 {
		d.mu.Unlock()
		return false, notify.Result{}, nil
	}
	upTo := d.seq
	alerts := make([]pendingAlert, 0, len(d.pending))
	for _, p := range d.pending {
		alerts = append(alerts, p)
	}
	from := d.since
	d.mu.Unlock()

	sort.Slice(alerts, func(i, j int) bool {
		a, b := alerts[i].alert, alerts[j].alert
		if !a.StartsAt.Equal(b.StartsAt) {
			return a.StartsAt.Before(b.StartsAt)
		}
		return a.Key < b.Key
	})
	list := make([]events.AlertData, len(alerts))
	for i, p := range alerts {
		list[i] = p.alert
	}
	to := d.clock.Now().In(d.loc)
	res, err = d.r.sendDigest(ctx, d.cfg.Receiver, from, to, list, d.cfg.ExternalURL)
	if d.cfg.OnSend != nil {
		d.cfg.OnSend(DigestAttempt{Receiver: d.cfg.Receiver, From: from, To: to, Alerts: len(list), Result: res, Err: err})
	}
	if err != nil {
		d.log.Warn("digest not sent", "alerts", len(list), "retry", res.Retry, "err", err)
		return true, res, err
	}
	d.log.Info("digest sent", "alerts", len(list), "answer", res.Answer)
	d.mu.Lock()
	for id, p := range d.pending {
		if p.seq <= upTo {
			delete(d.pending, id)
		}
	}
	d.since = to
	d.mu.Unlock()
	return true, res, nil
}
