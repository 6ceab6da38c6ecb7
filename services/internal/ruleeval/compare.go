package ruleeval

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
)

// RecordedAlert is an alert event as ALERTS holds it.
type RecordedAlert struct {
	Seq     uint64
	ID      string
	Subject string
	// Time is the event's time (the transition's event or tick time).
	Time  time.Time
	Alert events.AlertData
}

// RecordedRules is a rule set the alerting service recorded on ALERTS.
type RecordedRules struct {
	Seq  uint64
	Time time.Time
	Data events.RulesLoadedData
}

// AlertHistory is what ALERTS holds for a replay: the alert events and the
// rule sets, in stream order.
type AlertHistory struct {
	Alerts   []RecordedAlert
	RuleSets []RecordedRules
	// Unreadable counts messages that are neither: they do not decode,
	// or are alert events without a key or state.
	Unreadable int
}

// ReadAlertHistory reads ALERTS from its start to its last message now.
func ReadAlertHistory(ctx context.Context, js jetstream.JetStream) (AlertHistory, error) {
	var h AlertHistory
	r, err := OpenReader(ctx, js, events.StreamAlerts, 1)
	if err != nil {
		return h, err
	}
	defer r.Close()
	for {
		rec, ok, err := r.Next(ctx)
		if err != nil {
			return h, err
		}
		if !ok {
			return h, ctx.Err()
		}
		if rec.DecodeErr != nil {
			h.Unreadable++
			continue
		}
		switch rec.Event.Type {
		case events.TypeRulesLoaded:
			d, err := events.DecodeRulesLoaded(rec.Event)
			if err != nil {
				return h, fmt.Errorf("ALERTS seq %d: %w", rec.Seq, err)
			}
			h.RuleSets = append(h.RuleSets, RecordedRules{Seq: rec.Seq, Time: rec.Event.Time, Data: d})
		case events.TypeAlertRaised, events.TypeAlertResolved:
			var a events.AlertData
			if err := rec.Event.DecodeData(&a); err != nil || a.Key == "" || a.State == "" {
				h.Unreadable++
				continue
			}
			h.Alerts = append(h.Alerts, RecordedAlert{Seq: rec.Seq, ID: rec.Event.ID, Subject: rec.Subject, Time: rec.Event.Time, Alert: a})
		}
	}
}

// CompareOptions tune Compare.
type CompareOptions struct {
	// From and To bound the comparison (inclusive, by event time); the
	// whole history before From is replayed to build the state at From.
	From, To time.Time
	// TickInterval and OfflineAfter are the alerting service's.
	TickInterval, OfflineAfter time.Duration
	// Warmup: ticks start this long before From; negative ticks over the
	// whole history, as the live service did (see BacktestOptions).
	Warmup time.Duration
	// Rules, when set, replace the recorded rule sets for the whole
	// history: "what would these rules have raised".
	Rules *rules.Set
	// Ignore says which recorded alerts are not the rule engine's (the
	// alerting service's stream-full alerts).
	Ignore func(events.AlertData) bool
	// OnPoison, Progress and ProgressEvery are Backtest's.
	OnPoison      func(Record, error)
	Progress      func(BacktestProgress)
	ProgressEvery time.Duration
}

// Comparison is what Compare found.
type Comparison struct {
	// RuleSets are the recorded rule sets the replay ran, in order (none
	// when CompareOptions.Rules was given).
	RuleSets []RecordedRules
	// Replayed are the transitions the replay computed in the range;
	// Recorded the alert events ALERTS holds in it.
	Replayed []Transition
	Recorded []RecordedAlert
	Diff     AlertDiff
	// Engine is the replay's engine at the end.
	Engine *Engine
	// Unreadable counts ALERTS messages that were neither alert events
	// nor rule sets.
	Unreadable int
}

// ErrNoRecordedRules: ALERTS holds no rule set, so "the rules in force"
// is unknown; the caller must name the rules.
var ErrNoRecordedRules = errors.New("ALERTS holds no rules_loaded record (the alerting service that wrote this history did not record its rules): give the rules to replay")

// Compare replays the recorded SHADOW and ROLLOUT history, from the start
// of the log, through the rules in force at each point (the rule sets
// recorded on ALERTS, the first of them from the start), or through
// o.Rules, and compares the alert events it computes in [From, To] with
// those ALERTS holds there. It publishes nothing.
func Compare(ctx context.Context, js jetstream.JetStream, o CompareOptions) (*Comparison, error) {
	hist, err := ReadAlertHistory(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", events.StreamAlerts, err)
	}
	c := &Comparison{Unreadable: hist.Unreadable}
	set := o.Rules
	var switches []RuleSwitch
	if set == nil {
		if len(hist.RuleSets) == 0 {
			return nil, ErrNoRecordedRules
		}
		for _, rs := range hist.RuleSets {
			s, err := LoadRecordedRules(rs.Data)
			if err != nil {
				return nil, fmt.Errorf("ALERTS seq %d: %w", rs.Seq, err)
			}
			switches = append(switches, RuleSwitch{Set: s, ShadowSeq: rs.Data.ShadowSeq, RolloutSeq: rs.Data.RolloutSeq, EngineTime: rs.Data.EngineTime})
		}
		c.RuleSets = hist.RuleSets
		set = switches[0].Set
	}
	c.Replayed, c.Engine, err = Backtest(ctx, js, set, BacktestOptions{
		From: o.From, To: o.To, TickInterval: o.TickInterval, Warmup: o.Warmup, OfflineAfter: o.OfflineAfter,
		OnPoison: o.OnPoison, Switches: switches, Progress: o.Progress, ProgressEvery: o.ProgressEvery,
	})
	if err != nil {
		return nil, err
	}
	for _, a := range hist.Alerts {
		if inRange(a.Time, o.From, o.To) && (o.Ignore == nil || !o.Ignore(a.Alert)) {
			c.Recorded = append(c.Recorded, a)
		}
	}
	// Backtest stops at To; From is a bound on its output already.
	c.Diff = DiffAlerts(c.Recorded, c.Replayed)
	return c, nil
}

func inRange(t, from, to time.Time) bool {
	return (from.IsZero() || !t.Before(from)) && (to.IsZero() || !t.After(to))
}

// AlertDiff is a comparison of recorded alert events with replayed ones.
type AlertDiff struct {
	// Matched counts events replayed exactly as recorded.
	Matched int
	// Missing were recorded and not replayed; Extra replayed and not
	// recorded.
	Missing []RecordedAlert
	Extra   []Transition
	// Different are one alert's event (the same key and state) recorded
	// and replayed with different fields.
	Different []AlertDifference
}

// Same reports whether the replay gave exactly what was recorded.
func (d AlertDiff) Same() bool {
	return len(d.Missing) == 0 && len(d.Extra) == 0 && len(d.Different) == 0
}

// AlertDifference is one alert event recorded one way and replayed
// another.
type AlertDifference struct {
	Recorded RecordedAlert
	Replayed Transition
	// Fields name what differs, each as "field: recorded -> replayed".
	Fields []string
}

// DiffAlerts pairs recorded alert events with replayed ones: first by
// event id (the alert's key, severity, start and state: the same alert
// event), then what is left by key and state, in order (the alert raised
// at another time or severity). A pair is matched when every field is
// equal, different otherwise; what has no pair is missing or extra.
func DiffAlerts(recorded []RecordedAlert, replayed []Transition) AlertDiff {
	var d AlertDiff
	byID := map[string][]int{}
	for i, t := range replayed {
		byID[t.ID()] = append(byID[t.ID()], i)
	}
	used := make([]bool, len(replayed))
	var left []RecordedAlert
	for _, r := range recorded {
		idx := byID[r.ID]
		if len(idx) == 0 {
			left = append(left, r)
			continue
		}
		i := idx[0]
		byID[r.ID] = idx[1:]
		used[i] = true
		if fields := alertFields(r, replayed[i]); len(fields) > 0 {
			d.Different = append(d.Different, AlertDifference{Recorded: r, Replayed: replayed[i], Fields: fields})
		} else {
			d.Matched++
		}
	}
	byKey := map[string][]int{}
	for i, t := range replayed {
		if !used[i] {
			k := t.Alert.Key + "\x00" + t.Alert.State
			byKey[k] = append(byKey[k], i)
		}
	}
	for _, r := range left {
		k := r.Alert.Key + "\x00" + r.Alert.State
		idx := byKey[k]
		if len(idx) == 0 {
			d.Missing = append(d.Missing, r)
			continue
		}
		i := idx[0]
		byKey[k] = idx[1:]
		used[i] = true
		d.Different = append(d.Different, AlertDifference{Recorded: r, Replayed: replayed[i], Fields: alertFields(r, replayed[i])})
	}
	for i, t := range replayed {
		if !used[i] {
			d.Extra = append(d.Extra, t)
		}
	}
	sort.SliceStable(d.Different, func(i, j int) bool { return d.Different[i].Recorded.Time.Before(d.Different[j].Recorded.Time) })
	return d
}

// alertFields names the fields in which a recorded alert event and a
// replayed transition differ.
func alertFields(r RecordedAlert, t Transition) []string {
	var out []string
	add := func(name string, rec, rep any) {
		out = append(out, fmt.Sprintf("%s: %v -> %v", name, rec, rep))
	}
	a, b := r.Alert, t.Alert
	if !r.Time.Equal(t.At) {
		add("time", r.Time.UTC().Format(time.RFC3339Nano), t.At.UTC().Format(time.RFC3339Nano))
	}
	if a.Severity != b.Severity {
		add("severity", a.Severity, b.Severity)
	}
	if !a.StartsAt.Equal(b.StartsAt) {
		add("startsAt", a.StartsAt.UTC().Format(time.RFC3339Nano), b.StartsAt.UTC().Format(time.RFC3339Nano))
	}
	if !endsEqual(a.EndsAt, b.EndsAt) {
		add("endsAt", fmtEnds(a.EndsAt), fmtEnds(b.EndsAt))
	}
	if a.Reason != b.Reason {
		add("reason", q(a.Reason), q(b.Reason))
	}
	if a.Message != b.Message {
		add("message", q(a.Message), q(b.Message))
	}
	if !valueEqual(a.Value, b.Value) {
		add("value", fmtValue(a.Value), fmtValue(b.Value))
	}
	if a.RuleID != b.RuleID || a.TypeID != b.TypeID || a.DeviceID != b.DeviceID {
		add("about", a.RuleID+" "+a.TypeID+"/"+a.DeviceID, b.RuleID+" "+b.TypeID+"/"+b.DeviceID)
	}
	if a.JobID != b.JobID || a.Wave != b.Wave {
		add("job", fmt.Sprintf("%s wave %d", a.JobID, a.Wave), fmt.Sprintf("%s wave %d", b.JobID, b.Wave))
	}
	if !maps.Equal(a.Labels, b.Labels) {
		add("labels", a.Labels, b.Labels)
	}
	if r.Subject != t.Subject() {
		add("subject", r.Subject, t.Subject())
	}
	return out
}

func q(s string) string { return fmt.Sprintf("%q", s) }

func endsEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

func fmtEnds(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func valueEqual(a, b *float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func fmtValue(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%g", *v)
}
