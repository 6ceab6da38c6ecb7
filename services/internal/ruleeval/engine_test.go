package ruleeval

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
)

var t0 = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

func mins(m float64) time.Time { return t0.Add(time.Duration(m * float64(time.Minute))) }

func ruleSet(t *testing.T, files ...string) *rules.Set {
	t.Helper()
	set := &rules.Set{}
	for i, f := range files {
		r, ps := rules.ParseRule(fmt.Sprintf("r%d.yaml", i), []byte(f))
		if len(ps) > 0 {
			t.Fatalf("rule %d: %v", i, (&rules.LoadError{Problems: ps}).Error())
		}
		set.Rules = append(set.Rules, r)
	}
	return set
}

func report(t *testing.T, dev, status, version string, dur float64, at time.Time) events.Event {
	t.Helper()
	fw := events.Firmware{Version: version, Status: status, Timestamp: at, UpdateDuration: dur}
	ev, err := events.New(events.ReportEventID("t", dev, fw), events.SourceBridge, events.TypeShadowReported,
		events.ShadowReportedSubject("t", dev), at, events.ShadowReportedData{TypeID: "t", DeviceID: dev, Firmware: fw})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func summary(trs []Transition) string {
	var parts []string
	for _, tr := range trs {
		parts = append(parts, fmt.Sprintf("%s %s %s@%s", tr.Alert.State, tr.Alert.Severity, tr.Alert.Key, tr.At.Sub(t0)))
	}
	return strings.Join(parts, "; ")
}

const failedRule = "id: failed\nseverity: critical\ncondition: device.status == \"failed\"\n"

func TestFor(t *testing.T) {
	const rule = "id: slow\nseverity: warning\nkind: tick\nfor: 5m\ncondition: device.status == \"in_progress\"\n"
	tests := []struct {
		name  string
		steps func(t *testing.T, e *Engine) []Transition
		want  string
	}{
		{
			name: "raised once it held for 5 minutes, starting when it began",
			steps: func(t *testing.T, e *Engine) []Transition {
				var out []Transition
				trs, _ := e.ApplyShadow(1, report(t, "d1", "in_progress", "2", 0, mins(0)))
				out = append(out, trs...)
				out = append(out, e.Tick(mins(4))...)
				out = append(out, e.Tick(mins(5))...)
				out = append(out, e.Tick(mins(6))...)
				return out
			},
			want: "raised warning slow/t/d1@5m0s",
		},
		{
			name: "a break restarts the wait",
			steps: func(t *testing.T, e *Engine) []Transition {
				var out []Transition
				e.ApplyShadow(1, report(t, "d1", "in_progress", "2", 0, mins(0)))
				e.ApplyShadow(2, report(t, "d1", "completed", "2", 60, mins(3)))
				e.ApplyShadow(3, report(t, "d1", "in_progress", "3", 0, mins(4)))
				out = append(out, e.Tick(mins(8))...)
				out = append(out, e.Tick(mins(9))...)
				return out
			},
			want: "raised warning slow/t/d1@9m0s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New(ruleSet(t, rule), Options{OfflineAfter: -1})
			trs := tt.steps(t, e)
			if got := summary(trs); got != tt.want {
				t.Errorf("got %s\nwant %s", got, tt.want)
			}
			if tt.want != "" && len(trs) > 0 {
				// StartsAt is when the condition began to hold.
				want := trs[0].At.Add(-5 * time.Minute)
				if !trs[0].Alert.StartsAt.Equal(want) {
					t.Errorf("startsAt %s, want %s", trs[0].Alert.StartsAt, want)
				}
			}
		})
	}
}

func TestEvalErrorKeepsTheAlert(t *testing.T) {
	// A rule that reads a key only reported events have: on a desired
	// event it is an evaluation error, which must not resolve the alert.
	const rule = "id: code\nseverity: warning\ncondition: event.errorCode == \"E1\"\n"
	var errs []string
	e := New(ruleSet(t, rule), Options{OnEvalError: func(r, k string, err error) { errs = append(errs, r+" "+k+": "+err.Error()) }})
	code := "E1"
	fw := events.Firmware{Version: "1", Status: "failed", Timestamp: mins(0), ErrorCode: &code}
	ev, _ := events.New("x1", events.SourceBridge, events.TypeShadowReported, "", mins(0), events.ShadowReportedData{TypeID: "t", DeviceID: "d1", Firmware: fw})
	trs, err := e.ApplyShadow(1, ev)
	if err != nil || summary(trs) != "raised warning code/t/d1@0s" {
		t.Fatalf("got %s, %v", summary(trs), err)
	}
	trs, err = e.ApplyShadow(2, report(t, "d1", "in_progress", "2", 0, mins(1))) // errorCode is null: no key
	if err != nil || len(trs) != 0 {
		t.Fatalf("an evaluation error changed the alert: %s, %v", summary(trs), err)
	}
	if len(errs) != 1 || !strings.Contains(errs[0], "no such key: errorCode") {
		t.Errorf("errors heard: %v", errs)
	}
	if st := e.Stats()["code"]; st.Errors != 1 || st.Evaluations != 2 {
		t.Errorf("stats %+v", st)
	}
	if len(e.Active()) != 1 {
		t.Errorf("active = %v", e.Active())
	}
}

func TestSetRulesResolvesRemovedRules(t *testing.T) {
	e := New(ruleSet(t, failedRule), Options{})
	e.ApplyShadow(1, report(t, "d1", "failed", "1", 0, mins(1)))
	// Same rule, new condition: the alert stays until re-evaluated.
	if trs := e.SetRules(ruleSet(t, strings.Replace(failedRule, "critical", "warning", 1))); len(trs) != 0 {
		t.Fatalf("changing a rule resolved: %s", summary(trs))
	}
	trs, _ := e.ApplyShadow(2, report(t, "d1", "failed", "1", 0, mins(2)))
	if summary(trs) != "resolved critical failed/t/d1@2m0s; raised warning failed/t/d1@2m0s" {
		t.Errorf("after the severity change: %s", summary(trs))
	}
	trs = e.SetRules(&rules.Set{})
	if len(trs) != 1 || trs[0].Alert.Reason != events.ResolvedRuleRemoved || !trs[0].At.Equal(mins(2)) {
		t.Errorf("removing the rule: %s", summary(trs))
	}
	if len(e.Active()) != 0 || e.ActiveCount() != 0 {
		t.Errorf("active after removal: %v (count %d)", e.Active(), e.ActiveCount())
	}
}

func TestPoison(t *testing.T) {
	e := New(ruleSet(t, failedRule), Options{})
	bad := events.Event{SpecVersion: "1.0", ID: "b", Source: "s", Type: events.TypeShadowReported, Time: mins(0), Data: []byte(`"nope"`)}
	_, err := e.ApplyShadow(7, bad)
	var pe *PoisonError
	if !errors.As(err, &pe) {
		t.Fatalf("err = %v, want a PoisonError", err)
	}
	if e.ShadowSeq != 7 || e.Fleet().Len() != 0 {
		t.Errorf("poison changed the state: seq %d, devices %d", e.ShadowSeq, e.Fleet().Len())
	}
	badJob := events.Event{SpecVersion: "1.0", ID: "b2", Source: "s", Type: events.TypeRolloutJobStarted, Time: mins(0), Data: []byte(`{"jobId":"a b"}`)}
	if _, err := e.ApplyRollout(3, badJob); !errors.As(err, &pe) {
		t.Errorf("job id with a space: err = %v", err)
	}
	// Types rules do not see are ignored, not poison.
	other := events.Event{SpecVersion: "1.0", ID: "o", Source: "s", Type: "io.example.other.v1", Time: mins(0), Data: []byte(`{}`)}
	if trs, err := e.ApplyShadow(8, other); err != nil || trs != nil {
		t.Errorf("unknown type: %v, %v", trs, err)
	}
}

// TestSnapshotResumes checks that an engine restored from a snapshot taken
// halfway computes what an engine that never stopped computes.
func TestSnapshotResumes(t *testing.T) {
	set, err := rules.LoadDefaults()
	if err != nil {
		t.Fatal(err)
	}
	var evs []events.Event
	for i := 0; i < 40; i++ {
		dev := fmt.Sprintf("d%d", i%12)
		status := []string{"in_progress", "completed", "failed", "completed"}[i%4]
		evs = append(evs, report(t, dev, status, "2", float64(30+i*7%90), mins(float64(i))))
	}
	run := func(e *Engine, from, to int) []Transition {
		var out []Transition
		for i := from; i < to; i++ {
			trs, err := e.ApplyShadow(uint64(i+1), evs[i])
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, trs...)
			if i%10 == 9 {
				_, trs, _ := e.RunTick(mins(float64(i)+0.5), nil)
				out = append(out, trs...)
			}
		}
		return out
	}
	whole := New(set, Options{})
	want := summary(run(whole, 0, len(evs)))

	first := New(set, Options{})
	got := run(first, 0, 20)
	b, err := first.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	second := New(set, Options{})
	if err := second.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	if second.ShadowSeq != 20 || second.Fleet().Len() != first.Fleet().Len() || len(second.Active()) != len(first.Active()) ||
		second.ActiveCount() != first.ActiveCount() || first.ActiveCount() != len(first.Active()) ||
		second.Fleet().Metrics() != first.Fleet().Metrics() || second.Jobs().Current() != first.Jobs().Current() {
		t.Fatalf("restored seq %d devices %d active %d", second.ShadowSeq, second.Fleet().Len(), len(second.Active()))
	}
	got = append(got, run(second, 20, len(evs))...)
	if summary(got) != want {
		t.Errorf("with a snapshot at 20:\n got %s\nwant %s", summary(got), want)
	}
	if want == "" {
		t.Error("the history raised nothing: a weak test")
	}
}

func TestRestoreFromAlerts(t *testing.T) {
	e := New(ruleSet(t, failedRule), Options{})
	raised := events.AlertData{Key: "failed/t/d1", RuleID: "failed", Severity: "critical", State: events.AlertRaised, TypeID: "t", DeviceID: "d1", StartsAt: mins(1)}
	e.Restore(raised)
	// The device is still failed: no second raise.
	trs, _ := e.ApplyShadow(1, report(t, "d1", "failed", "1", 0, mins(1)))
	if len(trs) != 0 {
		t.Fatalf("raised again: %s", summary(trs))
	}
	trs, _ = e.ApplyShadow(2, report(t, "d1", "completed", "2", 10, mins(2)))
	if summary(trs) != "resolved critical failed/t/d1@2m0s" || !trs[0].Alert.StartsAt.Equal(mins(1)) {
		t.Fatalf("got %s", summary(trs))
	}
	// A resolve read back clears an active alert of the same start only.
	e.Restore(raised)
	other := raised
	other.State, other.StartsAt = events.AlertResolved, mins(9)
	e.Restore(other)
	if len(e.Active()) != 1 {
		t.Fatalf("a resolve of another start cleared the alert")
	}
	other.StartsAt = mins(1)
	e.Restore(other)
	if len(e.Active()) != 0 || e.ActiveCount() != 0 {
		t.Fatalf("the resolve did not clear the alert")
	}
}

func TestSetActive(t *testing.T) {
	const slow = "id: slow\nseverity: warning\nkind: tick\nfor: 5m\ncondition: device.status == \"in_progress\"\n"
	e := New(ruleSet(t, failedRule, slow), Options{OfflineAfter: -1})
	e.ApplyShadow(1, report(t, "d1", "failed", "2", 0, mins(0)))
	e.ApplyShadow(2, report(t, "d2", "failed", "2", 0, mins(1)))
	e.ApplyShadow(3, report(t, "d3", "in_progress", "2", 0, mins(2))) // slow waits for its 5m
	recorded := func(dev string, start float64) events.AlertData {
		return events.AlertData{Key: "failed/t/" + dev, RuleID: "failed", Severity: "critical", State: events.AlertRaised,
			TypeID: "t", DeviceID: dev, StartsAt: mins(start)}
	}
	e.SetActive([]events.AlertData{recorded("d2", 1), recorded("d4", 3)})
	var keys []string
	for _, a := range e.Active() {
		keys = append(keys, fmt.Sprintf("%s@%s", a.Key, a.StartsAt.Sub(t0)))
	}
	if got, want := strings.Join(keys, " "), "failed/t/d2@1m0s failed/t/d4@3m0s"; got != want || e.ActiveCount() != 2 {
		t.Fatalf("active %q (count %d), want %q", got, e.ActiveCount(), want)
	}
	var out []Transition
	out = append(out, e.Tick(mins(7))...) // slow's wait was kept
	trs, _ := e.ApplyShadow(4, report(t, "d1", "failed", "3", 0, mins(8)))
	out = append(out, trs...) // d1's alert is no longer active: a new one
	trs, _ = e.ApplyShadow(5, report(t, "d4", "completed", "2", 60, mins(9)))
	out = append(out, trs...) // d4's recorded alert resolves
	if got, want := summary(out), "raised warning slow/t/d3@7m0s; raised critical failed/t/d1@8m0s; resolved critical failed/t/d4@9m0s"; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if !out[0].Alert.StartsAt.Equal(mins(2)) || !out[2].Alert.StartsAt.Equal(mins(3)) {
		t.Errorf("starts %s and %s, want 2m and 3m", out[0].Alert.StartsAt.Sub(t0), out[2].Alert.StartsAt.Sub(t0))
	}
}

func TestStaleAndEcho(t *testing.T) {
	e := New(&rules.Set{}, Options{OfflineAfter: 10 * time.Minute})
	// In progress, each owes its final report; idle finished its update
	// and is silent, which is no reason to call it offline.
	e.ApplyShadow(1, report(t, "d1", "in_progress", "2", 0, mins(0)))
	e.ApplyShadow(2, report(t, "d2", "in_progress", "2", 0, mins(5)))
	e.ApplyShadow(3, report(t, "idle", "completed", "2", 10, mins(0)))
	var published []events.Event
	stale, _, err := e.RunTick(mins(11), func(evs []events.Event) error { published = evs; return nil })
	if err != nil || len(stale) != 1 || len(published) != 1 {
		t.Fatalf("stale %d published %d err %v", len(stale), len(published), err)
	}
	ev := stale[0]
	if m := e.Fleet().Metrics(); m.PotentiallyOffline != 1 || m.Online != 2 {
		t.Errorf("metrics after the tick %+v", m)
	}
	if ev.ID != events.PresenceEventID("t", "d1", events.PresencePotentiallyOffline, mins(0)) || ev.Subject != "device.presence.t.d1" {
		t.Errorf("presence event %+v", ev)
	}
	// The next tick does not publish it again; the copy from the log is
	// skipped.
	if stale, _, _ := e.RunTick(mins(12), nil); len(stale) != 0 {
		t.Errorf("published again: %v", stale)
	}
	if trs, err := e.ApplyShadow(4, ev); err != nil || trs != nil || e.ShadowSeq != 4 {
		t.Errorf("echo: %v %v seq %d", trs, err, e.ShadowSeq)
	}
	// A failed publish applies nothing.
	e.ApplyShadow(5, report(t, "d3", "in_progress", "2", 0, mins(12)))
	_, _, err = e.RunTick(mins(30), func([]events.Event) error { return errors.New("down") })
	if err == nil || e.Fleet().Metrics().PotentiallyOffline != 1 {
		t.Errorf("failed publish: err %v, metrics %+v", err, e.Fleet().Metrics())
	}
}

func TestJobs(t *testing.T) {
	j := NewJobs()
	apply := func(typ, job string, wave int, at time.Time) {
		t.Helper()
		ev, _ := events.New(job+typ, events.SourceRollout, typ, "", at, events.RolloutData{JobID: job, Wave: wave, Target: &events.DesiredFirmware{Version: "9"}})
		if _, err := j.Apply(uint64(j.LastSeq+1), ev); err != nil {
			t.Fatal(err)
		}
	}
	if c := j.Current(); c.ID != "" || c.Active() {
		t.Fatalf("empty: %+v", c)
	}
	apply(events.TypeRolloutJobCreated, "a", 0, mins(0))
	apply(events.TypeRolloutJobStarted, "a", 0, mins(1))
	apply(events.TypeRolloutWaveStarted, "a", 1, mins(1))
	apply(events.TypeRolloutJobCreated, "b", 0, mins(2))
	apply(events.TypeRolloutJobStarted, "b", 0, mins(3))
	if c := j.Current(); c.ID != "b" || !c.Active() {
		t.Errorf("current %+v, want b", c)
	}
	apply(events.TypeRolloutJobPaused, "b", 0, mins(4))
	if c := j.Current(); c.ID != "a" || c.Wave != 1 || c.TargetVersion != "9" || !c.StartedAt.Equal(mins(1)) {
		t.Errorf("after b paused: %+v, want a", c)
	}
	apply(events.TypeRolloutJobCompleted, "a", 0, mins(5))
	if c := j.Current(); c.ID != "b" || c.Active() || c.Status != events.RolloutPaused {
		t.Errorf("nothing active: %+v, want paused b", c)
	}
	b, _ := j.MarshalJSON()
	k := NewJobs()
	if err := k.UnmarshalJSON(b); err != nil || k.Current() != j.Current() || k.Job("a") != j.Job("a") || k.LastSeq != j.LastSeq {
		t.Errorf("snapshot round trip: %+v vs %+v (%v)", k.Current(), j.Current(), err)
	}
}

// TestVarsMatchFields checks the maps have exactly the documented keys.
func TestVarsMatchFields(t *testing.T) {
	keys := func(m map[string]any) string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	doc := func(v string) string { return strings.Join(rules.FieldNames(v), ",") }
	e := New(&rules.Set{}, Options{})
	e.ApplyShadow(1, report(t, "d1", "completed", "2", 10, mins(0)))
	d, _ := e.Fleet().Device("t", "d1")
	if got := keys(DeviceVars(d)); got != doc("device") {
		t.Errorf("device keys %s\n  documented %s", got, doc("device"))
	}
	if got := keys(FleetVars(e.Fleet().Metrics())); got != doc("fleet") {
		t.Errorf("fleet keys %s\n  documented %s", got, doc("fleet"))
	}
	if got := keys(RolloutVars(Job{}, e.Fleet().Wave("", 0))); got != doc("rollout") {
		t.Errorf("rollout keys %s\n  documented %s", got, doc("rollout"))
	}
	documented := map[string]bool{}
	for _, f := range rules.FieldNames("event") {
		documented[f] = true
	}
	code := "E"
	fw := events.Firmware{Version: "1", Status: "failed", Timestamp: mins(0), ErrorCode: &code}
	ev, _ := events.New("x", events.SourceBridge, events.TypeShadowReported, "", mins(0), events.ShadowReportedData{TypeID: "t", DeviceID: "d", Firmware: fw})
	m, _ := EventVars(ev)
	for k := range m {
		if !documented[k] {
			t.Errorf("event key %q is not documented", k)
		}
	}
}

// TestMessageReadsTheWholeEvent: a rule whose condition reads no event
// data still renders event data in its message.
func TestMessageReadsTheWholeEvent(t *testing.T) {
	const rule = "id: failed\nseverity: critical\ncondition: device.status == \"failed\"\nmessage: '{{.event.kind}} {{.event.errorCode}} {{.event.version}}'\n"
	e := New(ruleSet(t, rule), Options{})
	if e.eventData {
		t.Fatal("the rule reads no event data, but the engine decodes it")
	}
	code := "E_DISK"
	fw := events.Firmware{Version: "7", Status: "failed", Timestamp: mins(0), ErrorCode: &code}
	ev, _ := events.New("x", events.SourceBridge, events.TypeShadowReported, "", mins(0), events.ShadowReportedData{TypeID: "t", DeviceID: "d", Firmware: fw})
	trs, err := e.ApplyShadow(1, ev)
	if err != nil || len(trs) != 1 || trs[0].Alert.Message != "reported E_DISK 7" {
		t.Fatalf("got %+v, %v", trs, err)
	}
}
