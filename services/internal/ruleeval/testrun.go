package ruleeval

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
)

// CaseResult is one test case's outcome; Err is nil when it passed.
type CaseResult struct {
	File string
	Case string
	Line int
	Err  error
}

func (r CaseResult) String() string {
	if r.Err == nil {
		return fmt.Sprintf("ok   %s:%d: %s", r.File, r.Line, r.Case)
	}
	return fmt.Sprintf("FAIL %s:%d: %s\n     %s", r.File, r.Line, r.Case, strings.ReplaceAll(r.Err.Error(), "\n", "\n     "))
}

// TestReport is the outcome of the tests of a rules directory.
type TestReport struct {
	Results []CaseResult
	// Untested are rule files without a tests file.
	Untested []string
}

// Failed counts failed cases.
func (r *TestReport) Failed() int {
	n := 0
	for _, c := range r.Results {
		if c.Err != nil {
			n++
		}
	}
	return n
}

// RunTestsFS loads the rules of dir in fsys (all must load) and runs each
// rule file's tests file, each case with only that file's rule. prefix
// names the directory in messages.
func RunTestsFS(fsys fs.FS, dir, prefix string) (*TestReport, error) {
	set, err := rules.LoadFS(fsys, dir, prefix)
	if err != nil {
		return nil, err
	}
	names, err := rules.RuleFiles(fsys, dir)
	if err != nil {
		return nil, err
	}
	byFile := map[string]*rules.Rule{}
	for _, r := range set.Rules {
		byFile[r.File] = r
	}
	rep := &TestReport{}
	for _, name := range names {
		display := displayName(prefix, name)
		tname := rules.TestFileFor(name)
		data, err := fs.ReadFile(fsys, path.Join(dir, tname))
		if errors.Is(err, fs.ErrNotExist) {
			rep.Untested = append(rep.Untested, display)
			continue
		}
		tdisplay := displayName(prefix, tname)
		if err != nil {
			rep.Results = append(rep.Results, CaseResult{File: tdisplay, Err: err})
			continue
		}
		tf, err := rules.ParseTestFile(tdisplay, data)
		if err != nil {
			rep.Results = append(rep.Results, CaseResult{File: tdisplay, Err: err})
			continue
		}
		r := byFile[display]
		rep.Results = append(rep.Results, RunTestFile(&rules.Set{Rules: []*rules.Rule{r}}, tdisplay, tf)...)
	}
	return rep, nil
}

func displayName(prefix, name string) string {
	if prefix == "" || prefix == "." {
		return name
	}
	return strings.TrimSuffix(prefix, "/") + "/" + name
}

// RunTestFile runs every case of tf against set.
func RunTestFile(set *rules.Set, file string, tf *rules.TestFile) []CaseResult {
	out := make([]CaseResult, 0, len(tf.Cases))
	for _, c := range tf.Cases {
		out = append(out, CaseResult{File: file, Case: c.Name, Line: c.Line, Err: runCase(set, tf, c)})
	}
	return out
}

func runCase(set *rules.Set, tf *rules.TestFile, c rules.TestCase) error {
	var evalErrs []string
	eng := New(set, Options{
		OfflineAfter: time.Duration(tf.OfflineAfter),
		OnEvalError: func(rule, key string, err error) {
			evalErrs = append(evalErrs, fmt.Sprintf("%s (%s): %v", rule, key, err))
		},
	})
	var trs []Transition
	var seq uint64
	for i, s := range c.Steps {
		at := tf.Start.Add(time.Duration(s.At))
		evs, err := stepEvents(eng, s, at)
		if err != nil {
			return fmt.Errorf("step %d: %w", i+1, err)
		}
		if s.Tick {
			_, t, err := eng.RunTick(at, nil)
			if err != nil {
				return fmt.Errorf("step %d: %w", i+1, err)
			}
			trs = append(trs, t...)
			continue
		}
		for _, ev := range evs {
			seq++
			var t []Transition
			if s.Rollout != nil {
				t, err = eng.ApplyRollout(seq, ev)
			} else {
				t, err = eng.ApplyShadow(seq, ev)
			}
			if err != nil {
				return fmt.Errorf("step %d: %w", i+1, err)
			}
			trs = append(trs, t...)
		}
	}
	var problems []string
	if len(evalErrs) > 0 {
		problems = append(problems, "evaluation errors:\n  "+strings.Join(evalErrs, "\n  "))
	}
	var raised, resolved []events.AlertData
	var raisedAt, resolvedAt []time.Time
	for _, t := range trs {
		if t.Alert.State == events.AlertRaised {
			raised, raisedAt = append(raised, t.Alert), append(raisedAt, t.At)
		} else {
			resolved, resolvedAt = append(resolved, t.Alert), append(resolvedAt, t.At)
		}
	}
	x := c.Expect
	if x.Fires != nil && *x.Fires != (len(raised) > 0) {
		problems = append(problems, fmt.Sprintf("fires: got %v, want %v (raised: %s)", len(raised) > 0, *x.Fires, describe(raised, raisedAt, tf.Start)))
	}
	if x.Raised != nil {
		if p := matchList("raised", *x.Raised, raised, raisedAt, tf.Start); p != "" {
			problems = append(problems, p)
		}
	}
	if x.Resolved != nil {
		if p := matchList("resolved", *x.Resolved, resolved, resolvedAt, tf.Start); p != "" {
			problems = append(problems, p)
		}
	}
	if x.Active != nil {
		if p := matchList("active", *x.Active, eng.Active(), nil, tf.Start); p != "" {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

func matchList(what string, want []rules.TestMatch, got []events.AlertData, at []time.Time, start time.Time) string {
	ok := len(want) == len(got)
	for i := 0; ok && i < len(want); i++ {
		var t time.Time
		if at != nil {
			t = at[i]
		}
		ok = matches(want[i], got[i], t, start)
	}
	if ok {
		return ""
	}
	ws := make([]string, len(want))
	for i, m := range want {
		ws[i] = describeMatch(m)
	}
	return fmt.Sprintf("%s: got %s\n  want [%s]", what, describe(got, at, start), strings.Join(ws, ", "))
}

func matches(m rules.TestMatch, a events.AlertData, at, start time.Time) bool {
	return (m.Rule == "" || m.Rule == a.RuleID) &&
		(m.Key == "" || m.Key == a.Key) &&
		(m.Device == "" || m.Device == a.DeviceID) &&
		(m.Severity == "" || m.Severity == a.Severity) &&
		(m.Reason == "" || m.Reason == a.Reason) &&
		(m.Message == "" || strings.Contains(a.Message, m.Message)) &&
		(m.At == nil || at.IsZero() || at.Equal(start.Add(time.Duration(*m.At))))
}

func describe(as []events.AlertData, at []time.Time, start time.Time) string {
	parts := make([]string, len(as))
	for i, a := range as {
		s := fmt.Sprintf("{key: %s, severity: %s", a.Key, a.Severity)
		if at != nil {
			s += fmt.Sprintf(", at: %s", at[i].Sub(start))
		}
		if a.Reason != "" {
			s += ", reason: " + a.Reason
		}
		parts[i] = s + fmt.Sprintf(", message: %q}", a.Message)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func describeMatch(m rules.TestMatch) string {
	var f []string
	add := func(k, v string) {
		if v != "" {
			f = append(f, k+": "+v)
		}
	}
	add("rule", m.Rule)
	add("key", m.Key)
	add("device", m.Device)
	add("severity", m.Severity)
	add("reason", m.Reason)
	add("message", m.Message)
	if m.At != nil {
		add("at", time.Duration(*m.At).String())
	}
	return "{" + strings.Join(f, ", ") + "}"
}

// stepEvents builds a step's events (none for a tick).
func stepEvents(eng *Engine, s rules.TestStep, at time.Time) ([]events.Event, error) {
	devices := func(typ, dev string, count int) ([][2]string, error) {
		if typ == "" {
			typ = "t"
		}
		if dev == "" {
			return nil, errors.New("no device")
		}
		if count <= 0 {
			return [][2]string{{typ, dev}}, nil
		}
		out := make([][2]string, count)
		for i := range out {
			out[i] = [2]string{typ, fmt.Sprintf("%s-%d", dev, i+1)}
		}
		return out, nil
	}
	var out []events.Event
	switch {
	case s.Reported != nil:
		r := s.Reported
		ds, err := devices(r.Type, r.Device, r.Count)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			fw := events.Firmware{Version: r.Version, Timestamp: at, Status: r.Status, PreviousVersion: r.PreviousVersion, UpdateDuration: r.Duration}
			if r.ErrorCode != "" {
				code := r.ErrorCode
				fw.ErrorCode = &code
			}
			ev, err := events.New(events.ReportEventID(d[0], d[1], fw), events.SourceBridge, events.TypeShadowReported,
				events.ShadowReportedSubject(d[0], d[1]), at,
				events.ShadowReportedData{TypeID: d[0], DeviceID: d[1], Topic: events.ReportTopic(d[0], d[1]), Firmware: fw})
			if err != nil {
				return nil, err
			}
			out = append(out, ev)
		}
	case s.Desired != nil:
		r := s.Desired
		ds, err := devices(r.Type, r.Device, r.Count)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			ev, err := events.New(events.IdentityID("sd", d[0], d[1], r.Job, at.String()), events.SourceRollout, events.TypeShadowDesired,
				events.ShadowDesiredSubject(d[0], d[1]), at,
				events.ShadowDesiredData{TypeID: d[0], DeviceID: d[1], JobID: r.Job, Wave: r.Wave, Firmware: events.DesiredFirmware{Version: r.Version}})
			if err != nil {
				return nil, err
			}
			out = append(out, ev)
		}
	case s.Presence != nil:
		r := s.Presence
		ds, err := devices(r.Type, r.Device, 0)
		if err != nil {
			return nil, err
		}
		d := ds[0]
		dev, _ := eng.Fleet().Device(d[0], d[1])
		ev, err := events.New(events.PresenceEventID(d[0], d[1], r.State, dev.LastSeen), events.SourceAlerting, events.TypeDevicePresence,
			events.DevicePresenceSubject(d[0], d[1]), at,
			events.DevicePresenceData{TypeID: d[0], DeviceID: d[1], State: r.State, LastSeen: dev.LastSeen})
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	case s.Rollout != nil:
		r := s.Rollout
		typ := "io.otawatch.rollout." + r.Event + ".v1"
		if events.RolloutEventName(typ) == "" || r.Job == "" {
			return nil, fmt.Errorf("rollout step needs job and event (got %q, %q)", r.Job, r.Event)
		}
		data := events.RolloutData{JobID: r.Job, Wave: r.Wave, Reason: r.Reason}
		if r.Target != "" {
			data.Target = &events.DesiredFirmware{Version: r.Target}
		}
		ev, err := events.New(events.IdentityID("ro", r.Job, r.Event, at.String()), events.SourceRollout, typ,
			events.RolloutSubject(r.Job, r.Event), at, data)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}
