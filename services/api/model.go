package api

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/fleet"
	"github.com/otawatch/otawatch/services/internal/silence"
	"github.com/otawatch/otawatch/services/internal/waves"
)

// recentCap is how many recent events the dashboard shows.
const recentCap = 50

// model is the api service's read model: the fleet state folded from
// SHADOW, the rollout jobs folded from ROLLOUT, the active alerts folded
// from ALERTS and the silences and notification decisions folded from
// NOTIFY (notifications.go), plus the latest events for the dashboard. One
// goroutine per stream writes; handlers read under the read lock and get
// copies.
type model struct {
	mu     sync.RWMutex
	fleet  *fleet.State
	jobs   map[string]*jobView
	alerts map[string]*alertView
	recent ring[recentEvent] // the newest recentCap
	// notifications are the newest notifyCap decisions on NOTIFY;
	// silences the silences not known to have ended, by id.
	notifications ring[notificationView]
	silences      map[string]*silence.Silence
	// timelines are the jobs' waves against time, for the dashboard's
	// timeline chart (charts.go).
	timelines timelines

	// pos is, per stream, the last message handed to apply: how far the
	// model is, which a snapshot records and a fold to an instant resumes
	// from (history.go).
	pos map[string]position

	// version grows on every applied event; the dashboard rebuilds when it
	// moved.
	version atomic.Uint64
}

// position is the last message of a stream the model was handed: its
// sequence and when the stream stored it.
type position struct {
	Seq    uint64    `json:"seq"`
	Stored time.Time `json:"stored"`
}

func newModel() *model {
	return &model{
		fleet:  fleet.New(),
		jobs:   map[string]*jobView{},
		alerts: map[string]*alertView{},
		recent: newRing[recentEvent](recentCap),

		notifications: newRing[notificationView](notifyCap),
		silences:      map[string]*silence.Silence{},
		pos:           map[string]position{},
	}
}

// apply folds one message of a stream the model follows, under the write
// lock, and moves the stream's position to it whether or not the event
// applies: an event the model refuses is refused again by any later fold,
// so the position is how far the model has read, not what it kept.
func (m *model) apply(msg consume.Msg) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var err error
	switch msg.Stream {
	case events.StreamShadow:
		err = m.applyShadow(msg.Seq, msg.Event)
	case events.StreamRollout:
		err = m.applyRollout(msg.Seq, msg.Event)
	case events.StreamAlerts:
		err = m.applyAlert(msg.Seq, msg.Subject, msg.Event)
	case events.StreamNotify:
		err = m.applyNotify(msg.Seq, msg.Subject, msg.Event)
	default:
		return fmt.Errorf("the read model does not follow stream %s", msg.Stream)
	}
	if msg.Seq > m.pos[msg.Stream].Seq {
		m.pos[msg.Stream] = position{Seq: msg.Seq, Stored: msg.Stored}
	}
	return err
}

// ring keeps the newest values pushed, up to its capacity: what the
// dashboard's lists show (recent events, recent notifications).
type ring[T any] struct {
	buf  []T
	next int // where the next push goes once buf is full
}

func newRing[T any](capacity int) ring[T] { return ring[T]{buf: make([]T, 0, capacity)} }

func (r *ring[T]) push(v T) {
	if len(r.buf) < cap(r.buf) {
		r.buf = append(r.buf, v)
		return
	}
	r.buf[r.next] = v
	r.next = (r.next + 1) % len(r.buf)
}

// newest returns the last value pushed, to change in place; nil when
// none was.
func (r *ring[T]) newest() *T {
	if len(r.buf) == 0 {
		return nil
	}
	return &r.buf[(r.next-1+len(r.buf))%len(r.buf)]
}

// list returns a copy of the values, newest first.
func (r *ring[T]) list() []T {
	n := len(r.buf)
	out := make([]T, 0, n)
	// While the ring fills, next is 0 and the newest is at n-1; once
	// full, the newest is just before next: (next-1-i) mod n is both.
	for i := 0; i < n; i++ {
		out = append(out, r.buf[((r.next-1-i)%n+n)%n])
	}
	return out
}

// jobView is a rollout job as its ROLLOUT events describe it.
type jobView struct {
	JobID string `json:"jobId"`
	// Status is events.RolloutCreated, Running, Paused, Aborted or
	// Completed.
	Status string `json:"status"`
	// Target is the firmware of job_created, when it names one.
	Target *events.DesiredFirmware `json:"target,omitempty"`
	// Wave is the latest wave started, of WaveCount (0 until the job
	// starts and fixes its plan).
	Wave      int       `json:"wave"`
	WaveCount int       `json:"waveCount,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`

	// ledger is the job's plan and sends, for its waves' progress
	// (waves.Ledger, the fold the rollout service keeps too).
	ledger waves.Ledger
}

// alertView is one active alert.
type alertView struct {
	Key      string `json:"key"`
	Rule     string `json:"rule,omitempty"`
	Severity string `json:"severity,omitempty"`
	// Since is when the condition started to hold (AlertData.StartsAt, else
	// the event's time).
	Since    time.Time `json:"since"`
	Message  string    `json:"message,omitempty"`
	TypeID   string    `json:"typeId,omitempty"`
	DeviceID string    `json:"deviceId,omitempty"`
	JobID    string    `json:"jobId,omitempty"`
	Wave     int       `json:"wave,omitempty"`
	Subject  string    `json:"subject"`
	// Seq is the ALERTS sequence of the raise.
	Seq uint64 `json:"seq"`
}

// recentEvent is one line of the dashboard's event list.
type recentEvent struct {
	Stream   string    `json:"stream"`
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Type     string    `json:"type"` // the type without prefix and version: "shadow.reported"
	TypeID   string    `json:"typeId,omitempty"`
	DeviceID string    `json:"deviceId,omitempty"`
	JobID    string    `json:"jobId,omitempty"`
	Wave     int       `json:"wave,omitempty"`
	Text     string    `json:"text"`
}

// shortType turns "io.otawatch.shadow.reported.v1" into "shadow.reported".
func shortType(t string) string {
	t = strings.TrimPrefix(t, "io.otawatch.")
	if i := strings.LastIndexByte(t, '.'); i > 0 && strings.HasPrefix(t[i+1:], "v") {
		t = t[:i]
	}
	return t
}

func (m *model) pushRecent(r recentEvent) { m.recent.push(r) }

// recentEvents returns the recent events, newest first. Caller holds a lock.
func (m *model) recentEvents() []recentEvent { return m.recent.list() }

// applyShadow folds one SHADOW event. An event whose data does not decode
// changes nothing and is returned as an error (the fold records it on
// REJECTED). Caller holds the write lock (apply).
func (m *model) applyShadow(seq uint64, e events.Event) error {
	d, err := m.fleet.Apply(seq, e)
	if err != nil {
		return err
	}
	if d == nil {
		return nil
	}
	r := recentEvent{Stream: events.StreamShadow, Seq: seq, Time: e.Time, Type: shortType(e.Type), TypeID: d.TypeID, DeviceID: d.DeviceID}
	switch e.Type {
	case events.TypeShadowReported:
		r.Text = d.Version + " " + d.Status
		if d.ErrorCode != "" {
			r.Text += " (" + d.ErrorCode + ")"
		}
	case events.TypeShadowDesired:
		r.JobID, r.Wave = d.JobID, d.Wave
		if d.Target != nil {
			r.Text = "desired " + d.Target.Version
		}
	case events.TypeDevicePresence:
		r.Text = "offline"
		if d.Online {
			r.Text = "online"
		}
	}
	m.pushRecent(r)
	m.version.Add(1)
	return nil
}

// applyRollout folds one ROLLOUT message into its job's view. The rollout
// service's own fold is the authority (GET /api/v1/rollouts asks it); this
// one only labels the dashboard's waves and survives that service being
// down. Caller holds the write lock (apply).
func (m *model) applyRollout(seq uint64, e events.Event) error {
	var rd events.RolloutData
	if err := e.DecodeData(&rd); err != nil {
		return err
	}
	if rd.JobID == "" {
		return fmt.Errorf("rollout event %s has no jobId", e.ID)
	}
	j := m.jobs[rd.JobID]
	if j == nil {
		j = &jobView{JobID: rd.JobID, Status: events.RolloutCreated, Created: e.Time, ledger: waves.NewLedger(rd.JobID, 0)}
		m.jobs[rd.JobID] = j
	}
	// A ledger that refuses the event (a plan twice, or none) leaves the
	// rest of the view to follow it; the error goes to REJECTED.
	lerr := j.ledger.Apply(e.Type, rd)
	j.Updated = e.Time
	name := events.RolloutEventName(e.Type)
	switch name {
	case "job_created":
		j.Status, j.Created = events.RolloutCreated, e.Time
		if rd.Target != nil {
			t := *rd.Target
			j.Target = &t
		} else if rd.Spec != nil {
			t := rd.Spec.Target
			j.Target = &t
		}
	case "job_started":
		j.Status, j.Reason = events.RolloutRunning, ""
		if rd.Plan != nil {
			j.WaveCount = len(rd.Plan.Waves)
		}
	case "job_resumed":
		j.Status, j.Reason = events.RolloutRunning, ""
	case "job_paused":
		j.Status, j.Reason = events.RolloutPaused, rd.Reason
	case "job_aborted":
		j.Status, j.Reason = events.RolloutAborted, rd.Reason
	case "job_completed":
		j.Status, j.Reason = events.RolloutCompleted, ""
	case "wave_started":
		if rd.Wave > j.Wave {
			j.Wave = rd.Wave
		}
	case "wave_gated":
		if rd.Gate != nil && rd.Gate.Reason != "" {
			j.Reason = rd.Gate.Reason
		} else if rd.Reason != "" {
			j.Reason = rd.Reason
		}
	}
	if m.timelines == nil {
		m.timelines = timelines{}
	}
	m.timelines.apply(name, rd, e.Time)
	text := strings.ReplaceAll(name, "_", " ")
	if rd.Wave > 0 {
		text += " " + strconv.Itoa(rd.Wave)
	}
	if n := len(rd.Devices); n > 0 {
		text += fmt.Sprintf(" (%d devices)", n)
	}
	if rd.Reason != "" {
		text += ": " + rd.Reason
	}
	m.pushRecent(recentEvent{Stream: events.StreamRollout, Seq: seq, Time: e.Time, Type: shortType(e.Type), JobID: rd.JobID, Wave: rd.Wave, Text: text})
	m.version.Add(1)
	return lerr
}

// applyAlert folds one ALERTS message (events.AlertData): a raised alert
// becomes active under its key, a resolved one leaves; a severity change is
// a resolve and a raise of the same key, so it needs nothing special. What
// the data lacks is taken from the type and the subject
// (alert.{state}.{severity}.{ruleId}), and a missing key is made from the
// rule and the device or job, so an older or foreign alert event still
// folds.
func (m *model) applyAlert(seq uint64, subject string, e events.Event) error {
	if e.Type == events.TypeRulesLoaded {
		return nil // the alerting service's rule set, not an alert
	}
	var d events.AlertData
	_ = e.DecodeData(&d) // a data we cannot read still has a subject
	subj, _ := events.ParseAlertSubject(subject)
	state := d.State
	switch {
	case state != "":
	case e.Type == events.TypeAlertRaised || strings.Contains(e.Type, ".raised"):
		state = events.AlertRaised
	case e.Type == events.TypeAlertResolved || strings.Contains(e.Type, ".resolved"):
		state = events.AlertResolved
	default:
		state = subj.State
	}
	rule := firstNonEmpty(d.RuleID, subj.RuleID)
	key := d.Key
	if key == "" {
		parts := []string{rule}
		if d.TypeID != "" || d.DeviceID != "" {
			parts = append(parts, d.TypeID, d.DeviceID)
		}
		if d.JobID != "" {
			parts = append(parts, d.JobID)
		}
		key = strings.Join(parts, "/")
	}
	severity := firstNonEmpty(d.Severity, subj.Severity)
	since := d.StartsAt
	if since.IsZero() {
		since = e.Time
	}
	switch state {
	case events.AlertRaised:
		m.alerts[key] = &alertView{Key: key, Rule: rule, Severity: severity, Since: since, Message: d.Message,
			TypeID: d.TypeID, DeviceID: d.DeviceID, JobID: d.JobID, Wave: d.Wave, Subject: subject, Seq: seq}
	case events.AlertResolved:
		delete(m.alerts, key)
	default:
		return fmt.Errorf("alert event %s is neither raised nor resolved (type %s, subject %s)", e.ID, e.Type, subject)
	}
	text := state + " " + severity + " " + key
	if d.Message != "" && state == events.AlertRaised {
		text += ": " + d.Message
	}
	m.pushRecent(recentEvent{Stream: events.StreamAlerts, Seq: seq, Time: e.Time, Type: shortType(e.Type),
		TypeID: d.TypeID, DeviceID: d.DeviceID, JobID: d.JobID, Wave: d.Wave, Text: text})
	m.version.Add(1)
	return nil
}

// activeAlerts returns the active alerts, newest first. Caller holds a lock.
func (m *model) activeAlerts() []alertView {
	out := make([]alertView, 0, len(m.alerts))
	for _, a := range m.alerts {
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.After(out[j].Since)
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// waveRow is one wave's progress on the dashboard and in /metrics: the
// devices of the wave in the job's plan by exclusive state, counted by
// waves.Ledger.Progress as the rollout service's show counts them.
type waveRow struct {
	JobID string `json:"jobId"`
	Wave  int    `json:"wave"`
	events.WaveProgress
	// Progress is completed / targeted; SuccessRate is completed /
	// (completed + failed), 1 when none finished.
	Progress    float64 `json:"progress"`
	SuccessRate float64 `json:"successRate"`
}

// waveRows returns every wave of every started job, by job then wave, at
// now (it is a view: the clock decides only which pending devices have
// timed out; the live views pass the wall clock, a view of the past its
// instant). Every wave of the plan is there from the start, the waves not
// started with all their devices queued. Caller holds a lock.
func (m *model) waveRows(now time.Time) []waveRow {
	jobs := make([]string, 0, len(m.jobs))
	for id, j := range m.jobs {
		if j.ledger.Plan != nil {
			jobs = append(jobs, id)
		}
	}
	sort.Strings(jobs)
	var out []waveRow
	for _, id := range jobs {
		out = append(out, m.jobWaves(m.jobs[id], now)...)
	}
	return out
}

// jobWaves returns every wave of j's plan at now (none before it starts).
// Caller holds a lock.
func (m *model) jobWaves(j *jobView, now time.Time) []waveRow {
	out := []waveRow{}
	l := &j.ledger
	for w := 1; w <= len(l.Plan); w++ {
		p := l.Progress(w, m.fleet, now)
		r := waveRow{JobID: j.JobID, Wave: w, WaveProgress: p, SuccessRate: 1}
		if p.Targeted > 0 {
			r.Progress = float64(p.Completed) / float64(p.Targeted)
		}
		if f := p.Completed + p.Failed; f > 0 {
			r.SuccessRate = float64(p.Completed) / float64(f)
		}
		out = append(out, r)
	}
	return out
}

// jobList returns the jobs, newest first. Caller holds a lock.
func (m *model) jobList() []jobView {
	out := make([]jobView, 0, len(m.jobs))
	for _, j := range m.jobs {
		out = append(out, *j)
	}
	sort.Slice(out, func(i, k int) bool {
		if !out[i].Created.Equal(out[k].Created) {
			return out[i].Created.After(out[k].Created)
		}
		return out[i].JobID < out[k].JobID
	})
	return out
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
