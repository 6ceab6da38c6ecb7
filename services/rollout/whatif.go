package rollout

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// What-if: a recorded job under other settings
//
// WhatIf runs a job again in a discrete-event simulation on a virtual
// clock, with the live code at every step: Apply folds the job, a
// fleet.State folds the devices, and each tick calls Decide (Gate,
// Progress, the failure policy, the CEL gate) and then sends the next
// batch under the job's rate limit (sendBudget, Job.Due), in the order the
// driver's tick does (drive.go). What it does not know it takes from the
// recording:
//
//   - The devices. A device's events after its desired state was
//     recorded (its reports, its presence) come in the what-if at the same
//     offset from the what-if's send: a report that came 40 s after the
//     desired state comes 40 s after the what-if sends it. A device the
//     what-if never sends to never reports on the update. Events up to the
//     recorded send, and other devices' events, come at their recorded
//     times. A device's events end at its next desired state (a retry, a
//     later job).
//   - When an event reached the orchestrator: when the stream stored it
//     (the fold follows the stream), that is its time plus the latency
//     the recording shows between the two (stored minus event time, taken
//     as zero when it is not between 0 and a tick: clocks that disagree,
//     a recording made on a fake clock).
//   - The ticks. The driver's ticks are known where it did something
//     (every decision and every send carries its tick's time). Its ticker
//     fires on a fixed grid (every Tick) and a tick's time is a little
//     after its firing, so the earliest phase of the recorded ticks is
//     the grid's. The what-if ticks at the recorded ticks and, where the
//     driver did nothing, on that grid.
//   - Operator commands (pause, resume, abort, retry-failed) are left
//     out: an operator answered the recorded run, not this one. The
//     what-if shows what the gates and the failure policy alone decide,
//     and stops where the job would pause or abort, or where a wave would
//     start whose devices the recording never sent to (their behaviour is
//     not in the log).
//
// With the job's own settings and no operator command, the what-if makes
// the recorded decisions, at the recorded times, with the recorded counts,
// provided the orchestrator's fold was caught up at each tick. It is not
// always in a live run: a report stored a millisecond before a tick may be
// folded after it. The what-if counts each report from its event time, so
// such a decision can come one tick earlier in the what-if, with one more
// report counted ("rollout replay" checks the recording itself, allowing
// for that lag).

// WhatIfOptions are the settings a what-if changes; nil keeps the job's.
type WhatIfOptions struct {
	Gate, MaxFailure, Rate *float64
	MinFinished, WaveSize  *int
	OnFailure, CELGate     *string
	Soak, DeviceTimeout    *time.Duration
	// Tick and MaxBatch are the orchestrator's (rollout.tick and
	// rollout.max_batch; defaults DefaultTick and DefaultMaxBatch).
	Tick     time.Duration
	MaxBatch int
	// record, when set (tests), hears every event the what-if folds, with
	// when it would have been stored: its run as a recording.
	record func(stream string, stored time.Time, e events.Event)
}

// WaveOutcome is what became of one wave.
type WaveOutcome struct {
	Wave    int `json:"wave"`
	Devices int `json:"devices"`
	// Zero times: it did not happen.
	Started   time.Time            `json:"started,omitzero"`
	Gated     time.Time            `json:"gated,omitzero"`
	Completed time.Time            `json:"completed,omitzero"`
	Gate      *events.GateDecision `json:"gate,omitempty"`
}

// Outcome is how a run of the job ends (the what-if's) or first stopped
// (the recorded one's).
type Outcome struct {
	// Status is completed, paused or aborted; for the what-if also
	// waiting (a gate that the recorded reports never pass) or unknown (a
	// wave would start whose devices the recording never sent to); for
	// the recording also running or created.
	Status string    `json:"status"`
	At     time.Time `json:"at,omitzero"`
	Wave   int       `json:"wave,omitempty"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"`
	// Sent is how many of the job's devices had been sent their desired
	// state by then.
	Sent int `json:"sent"`
}

// WhatIfResult is a what-if beside what happened.
type WhatIfResult struct {
	JobID string `json:"jobId"`
	// Recorded is the job's spec; Spec the what-if's; Changed says what
	// differs ("gate 0.9 -> 0.95").
	Recorded events.RolloutSpec `json:"recorded"`
	Spec     events.RolloutSpec `json:"spec"`
	Changed  []string           `json:"changed"`
	// StartedAt is when the job started (the times below are absolute).
	StartedAt time.Time `json:"startedAt"`
	Devices   int       `json:"devices"`
	// Waves are the what-if's, ActualWaves the recording's.
	Waves       []WaveOutcome `json:"waves"`
	ActualWaves []WaveOutcome `json:"actualWaves"`
	// Decisions are the what-if's, in order; Actual the recorded ones.
	Decisions []Decision `json:"decisions"`
	Actual    []Decision `json:"actual"`
	// Operator lists the recording's operator commands, which the what-if
	// leaves out.
	Operator []Decision `json:"operator,omitempty"`
	// End is how the what-if ends; ActualEnd where the recorded job first
	// paused or aborted, or how it ended; ActualStatus its status at the
	// end of the recording.
	End          Outcome `json:"end"`
	ActualEnd    Outcome `json:"actualEnd"`
	ActualStatus string  `json:"actualStatus"`
	// Reproduces: the what-if's decisions are the recorded ones, the same
	// in every field and at the same times; Difference names the first
	// that is not.
	Reproduces bool   `json:"reproduces"`
	Difference string `json:"difference,omitempty"`
}

// arrival is an event the what-if folds at at (when the orchestrator
// would have had it).
type arrival struct {
	at      time.Time
	ord     uint64 // the recorded SHADOW sequence: ties keep the log's order
	subject string // the recorded SHADOW subject
	e       events.Event
}

type arrivals []arrival

func (a arrivals) Len() int { return len(a) }
func (a arrivals) Less(i, j int) bool {
	if !a[i].at.Equal(a[j].at) {
		return a[i].at.Before(a[j].at)
	}
	return a[i].ord < a[j].ord
}
func (a arrivals) Swap(i, j int) { a[i], a[j] = a[j], a[i] }
func (a *arrivals) Push(x any)   { *a = append(*a, x.(arrival)) }
func (a *arrivals) Pop() any {
	old := *a
	x := old[len(old)-1]
	*a = old[:len(old)-1]
	return x
}

// device is what the recording says one device of the job did after it
// was sent the job's desired state.
type device struct {
	sentAt time.Time
	after  []Recorded
}

// WhatIf runs a recorded job again under other settings (see the comment
// at the top of this file).
func WhatIf(rec *Recording, o WhatIfOptions) (*WhatIfResult, error) {
	if o.Tick <= 0 {
		o.Tick = DefaultTick
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	recorded, err := rec.Spec()
	if err != nil {
		return nil, err
	}
	plan, startedAt, err := rec.plan()
	if err != nil {
		return nil, err
	}
	spec, changed, err := whatIfSpec(recorded, o)
	if err != nil {
		return nil, err
	}
	if spec.CELGate != "" && !rec.AllDevices {
		return nil, fmt.Errorf("job %s: a CEL gate reads the whole fleet: read the recording with every device's events (ReadOptions.AllDevices)", rec.JobID)
	}
	var devices []events.DeviceRef
	for _, w := range plan {
		devices = append(devices, w...)
	}
	if o.WaveSize != nil {
		plan = SplitWaves(devices, 0, *o.WaveSize)
	}
	res := &WhatIfResult{JobID: rec.JobID, Recorded: recorded, Spec: spec, Changed: changed, StartedAt: startedAt, Devices: len(devices)}
	if err := res.actual(rec); err != nil {
		return nil, err
	}
	w, err := newWhatIf(rec, spec, plan, startedAt, o)
	if err != nil {
		return nil, err
	}
	if err := w.run(res); err != nil {
		return nil, err
	}
	if o.record != nil {
		// The devices already sent go on reporting after the job stops.
		for w.queue.Len() > 0 {
			a := heap.Pop(&w.queue).(arrival)
			o.record(events.StreamShadow, a.at, a.e)
		}
	}
	res.Waves = waveOutcomes(w.job)
	res.compare()
	return res, nil
}

// whatIfSpec is the recorded spec with the options' changes, checked as
// create checks a spec, and the changes in words.
func whatIfSpec(s events.RolloutSpec, o WhatIfOptions) (events.RolloutSpec, []string, error) {
	var changed []string
	dur := func(d *time.Duration) *events.Duration {
		if d == nil {
			return nil
		}
		v := events.Duration(*d)
		return &v
	}
	if o.WaveSize != nil {
		if *o.WaveSize < 1 {
			return s, nil, fmt.Errorf("wave size %d must be at least 1", *o.WaveSize)
		}
		s.Waves = 0 // the waves are the wave size's, uncapped
	}
	override(&changed, "gate", &s.Gate, o.Gate, plain)
	override(&changed, "max failure", &s.MaxFailure, o.MaxFailure, plain)
	override(&changed, "min finished", &s.MinFinished, o.MinFinished, plain)
	override(&changed, "on failure", &s.OnFailure, o.OnFailure, plain)
	override(&changed, "wave size", &s.WaveSize, o.WaveSize, plain)
	override(&changed, "soak", &s.Soak, dur(o.Soak), showDuration)
	override(&changed, "device timeout", &s.DeviceTimeout, dur(o.DeviceTimeout), showDuration)
	override(&changed, "rate", &s.Rate, o.Rate, plain)
	override(&changed, "cel gate", &s.CELGate, o.CELGate, func(e string) string {
		if e == "" {
			return "none"
		}
		return fmt.Sprintf("%q", e)
	})
	// The settings as create checks them; no defaults fill in (every
	// recorded field is set), and the URL was checked when the job was
	// created.
	out, err := NormalizeSpec(s, Config{AllowInsecureURLs: true}, checkCEL)
	if err != nil {
		return s, nil, err
	}
	return out, changed, nil
}

// override sets *dst to *v when v is set, noting the change as "name
// from -> to".
func override[T comparable](changed *[]string, name string, dst, v *T, show func(T) string) {
	if v == nil {
		return
	}
	if *dst != *v {
		*changed = append(*changed, fmt.Sprintf("%s %s -> %s", name, show(*dst), show(*v)))
	}
	*dst = *v
}

func plain[T any](v T) string { return fmt.Sprint(v) }

func showDuration(d events.Duration) string { return time.Duration(d).String() }

// whatIf is one what-if run: the simulated job and fleet, and what the
// recording says the devices did.
type whatIf struct {
	rec      *Recording
	o        WhatIfOptions
	job      *Job
	fleet    *fleet.State
	extra    ExtraGate
	devices  map[events.DeviceRef]*device
	queue    arrivals
	last     time.Time // the latest arrival queued
	instants []time.Time
	phase    time.Time // a firing of the driver's ticker
	seq      uint64    // the simulated ROLLOUT and SHADOW sequence
	sent     int
}

func newWhatIf(rec *Recording, spec events.RolloutSpec, plan [][]events.DeviceRef, startedAt time.Time, o WhatIfOptions) (*whatIf, error) {
	f, err := rec.Base()
	if err != nil {
		return nil, err
	}
	w := &whatIf{rec: rec, o: o, fleet: f, devices: map[events.DeviceRef]*device{}}
	inPlan := map[events.DeviceRef]bool{}
	for _, wave := range plan {
		for _, ref := range wave {
			inPlan[ref] = true
		}
	}
	// Each device's recorded send of this job (its first desired event,
	// attempt 0), and what it did after, up to its next desired state.
	ended := map[events.DeviceRef]bool{}
	for _, e := range rec.Shadow {
		typ, id, ok := events.DeviceFromSubject(e.Subject)
		ref := events.DeviceRef{TypeID: typ, DeviceID: id}
		if !ok || !inPlan[ref] {
			w.push(w.arrival(e, e.Event.Time), e, e.Event)
			continue
		}
		d := w.devices[ref]
		if e.Event.Type == events.TypeShadowDesired {
			var dd events.ShadowDesiredData
			mine := e.Event.DecodeData(&dd) == nil && dd.JobID == rec.JobID && dd.Attempt == 0
			switch {
			case d == nil && mine:
				w.devices[ref] = &device{sentAt: e.Event.Time}
				continue
			case d != nil:
				ended[ref] = true
			}
		}
		switch {
		case d == nil:
			w.push(w.arrival(e, e.Event.Time), e, e.Event) // before the job reached it
		case !ended[ref]:
			d.after = append(d.after, e)
		}
	}
	for _, e := range rec.Job {
		if isDecision(e.Event) {
			w.instants = append(w.instants, e.Event.Time)
		}
	}
	for _, d := range w.devices {
		w.instants = append(w.instants, d.sentAt)
	}
	sort.Slice(w.instants, func(a, b int) bool { return w.instants[a].Before(w.instants[b]) })
	w.phase = tickPhase(w.instants, o.Tick, startedAt)

	created := rec.Job[0].Event.Time
	w.job, err = w.apply(events.TypeRolloutJobCreated, events.RolloutData{JobID: rec.JobID, Target: &spec.Target, Spec: &spec}, created)
	if err != nil {
		return nil, err
	}
	if _, err = w.apply(events.TypeRolloutJobStarted, events.RolloutData{JobID: rec.JobID, Plan: &events.RolloutPlan{Waves: plan}}, startedAt); err != nil {
		return nil, err
	}
	if spec.CELGate != "" {
		cond, cerr := compileCELGate(rec.JobID, spec.CELGate)
		w.extra = CELGate(cond, cerr, w.fleet)
	}
	return w, nil
}

// arrival is when the orchestrator would have had a recorded event the
// what-if folds with time at: at plus the latency the recording shows
// between its time and its storing (zero unless between 0 and a tick).
func (w *whatIf) arrival(e Recorded, at time.Time) time.Time {
	if lat := e.Stored.Sub(e.Event.Time); lat > 0 && lat < w.o.Tick {
		return at.Add(lat)
	}
	return at
}

// push queues e, recorded as r, to be folded at at.
func (w *whatIf) push(at time.Time, r Recorded, e events.Event) {
	heap.Push(&w.queue, arrival{at: at, ord: r.Seq, subject: r.Subject, e: e})
	if at.After(w.last) {
		w.last = at
	}
}

// apply folds one event of the simulated job.
func (w *whatIf) apply(typ string, d events.RolloutData, at time.Time) (*Job, error) {
	w.seq++
	e, err := events.New(fmt.Sprintf("whatif-%d", w.seq), events.SourceRollout, typ, w.rec.JobID, at, d)
	if err != nil {
		return nil, err
	}
	j, err := Apply(w.job, w.seq, e)
	if err != nil {
		return nil, fmt.Errorf("what-if of job %s: %w", w.rec.JobID, err)
	}
	w.job = j
	if w.o.record != nil {
		w.o.record(events.StreamRollout, at, e)
	}
	return j, nil
}

// nextTick is the driver's next tick after t: the next firing of its
// ticker, or the recorded tick that came of that firing (or of an earlier
// one): a recorded tick before the firing after next.
func (w *whatIf) nextTick(t time.Time) time.Time {
	k := t.Sub(w.phase) / w.o.Tick
	g := w.phase.Add(k * w.o.Tick)
	for !g.After(t) {
		g = g.Add(w.o.Tick)
	}
	i := sort.Search(len(w.instants), func(i int) bool { return w.instants[i].After(t) })
	if i < len(w.instants) && w.instants[i].Before(g.Add(w.o.Tick)) {
		return w.instants[i]
	}
	return g
}

// tickPhase is a firing of the driver's ticker, from its recorded ticks:
// the ticker fires every tick on a fixed grid, and a tick's time is a
// little after the firing, so the recorded ticks' offsets on the grid
// (modulo tick) cluster just after the grid's phase. The cluster starts
// after the largest gap between the offsets, taken round the circle.
// Without recorded ticks the grid starts at from.
func tickPhase(instants []time.Time, tick time.Duration, from time.Time) time.Time {
	if len(instants) == 0 {
		return from
	}
	ref := instants[0]
	offs := make([]time.Duration, len(instants))
	for i, t := range instants {
		offs[i] = ((t.Sub(ref) % tick) + tick) % tick
	}
	sort.Slice(offs, func(a, b int) bool { return offs[a] < offs[b] })
	start, gap := offs[0], tick-offs[len(offs)-1]+offs[0]
	for i := 1; i < len(offs); i++ {
		if g := offs[i] - offs[i-1]; g > gap {
			start, gap = offs[i], g
		}
	}
	return ref.Add(start)
}

// maxTicks bounds a what-if that would never end (it cannot: the horizon
// stops it; this is a guard against a bug).
const maxTicks = 100_000_000

// run ticks until the job completes, pauses or aborts, a wave of unknown
// devices would start, or nothing can change any more.
func (w *whatIf) run(res *WhatIfResult) error {
	j := w.job
	var b bucket
	dirty := true
	var nextAt time.Time
	t := w.nextTick(j.StartedAt)
	for n := 0; ; n++ {
		if n == maxTicks {
			return fmt.Errorf("what-if of job %s: no end after %d ticks", w.rec.JobID, n)
		}
		for w.queue.Len() > 0 && !w.queue[0].at.After(t) {
			a := heap.Pop(&w.queue).(arrival)
			if _, err := w.fleet.Apply(a.ord, a.e); err == nil && moves(j, w.extra, a.subject) {
				dirty = true
			}
			if w.o.record != nil {
				w.o.record(events.StreamShadow, a.at, a.e)
			}
		}
		// The driver's tick: decide, then send (drive.go).
		if dirty || w.extra != nil || (!nextAt.IsZero() && !t.Before(nextAt)) {
			dirty = false
			for _, p := range Decide(j, w.fleet, t, w.extra) {
				if p.Type == events.TypeRolloutWaveStarted {
					if unknown := w.unknown(p.Data.Wave); unknown > 0 {
						res.End = Outcome{Status: "unknown", At: t, Wave: p.Data.Wave, Sent: w.sent,
							Reason: fmt.Sprintf("wave %d would start here, but the recording never sent %d of its %d devices their desired state: what they would have done is not in the log",
								p.Data.Wave, unknown, len(j.Plan[p.Data.Wave-1]))}
						return nil
					}
				}
				if _, err := w.apply(p.Type, p.Data, t); err != nil {
					return err
				}
				d := decisionOf(p.Type, p.Data, t, 0)
				d.Sent = w.sent
				res.Decisions = append(res.Decisions, d)
				dirty = true
			}
			nextAt = nextInstant(j, w.fleet, t)
		}
		if j.Status != events.RolloutRunning {
			res.End = Outcome{Status: j.Status, At: t, Wave: j.Wave, Reason: j.Reason, By: j.By, Sent: w.sent}
			return nil
		}
		if len(j.Due(1)) > 0 {
			if k := sendBudget(&b, j, t, w.o.Tick, w.o.MaxBatch); k >= 1 {
				due := j.Due(k)
				if err := w.send(due, t); err != nil {
					return err
				}
				b.tokens -= float64(len(due))
				dirty = true
			}
		} else if w.settled(dirty, nextAt, t) {
			p := Progress(j, j.Wave, w.fleet, t)
			g := Gate(j, j.Wave, p, t, w.extra)
			res.End = Outcome{Status: "waiting", At: t, Wave: j.Wave, Sent: w.sent,
				Reason: fmt.Sprintf("wave %d's gate does not pass on the recorded reports: %s", j.Wave, g.Reason)}
			return nil
		}
		t = w.nextTick(t)
	}
}

// settled reports whether nothing can change the job any more: no event
// to come, nothing asked of Decide, no instant where time changes its
// answer; with a CEL gate (it may read now) once an hour has passed
// beyond the last event and every timeout and soak.
func (w *whatIf) settled(dirty bool, nextAt, t time.Time) bool {
	if dirty || w.queue.Len() > 0 || !nextAt.IsZero() {
		return false
	}
	if w.extra == nil {
		return true
	}
	horizon := w.last.Add(time.Duration(w.job.Spec.DeviceTimeout) + time.Duration(w.job.Spec.Soak) + time.Hour)
	return t.After(horizon)
}

// unknown counts the devices of a wave the recording never sent to.
func (w *whatIf) unknown(wave int) int {
	n := 0
	for _, ref := range w.job.Plan[wave-1] {
		if w.devices[ref] == nil {
			n++
		}
	}
	return n
}

// send sends the due devices their desired state at t: the desired event
// into the fleet, the device's recorded events at their offsets from t,
// and devices_sent into the job.
func (w *whatIf) send(due []Send, t time.Time) error {
	refs := make([]events.DeviceRef, len(due))
	for i, s := range due {
		refs[i] = s.Ref
		e, err := desiredEvent(w.rec.JobID, s, w.job.Spec.Target, t)
		if err != nil {
			return err
		}
		w.seq++
		if _, err := w.fleet.Apply(w.seq, e); err != nil {
			return fmt.Errorf("what-if of job %s: desired state of %s: %w", w.rec.JobID, s.Ref, err)
		}
		if w.o.record != nil {
			w.o.record(events.StreamShadow, t, e)
		}
		d := w.devices[s.Ref]
		if d == nil {
			continue // never reached: run stops before a wave of unknown devices
		}
		for _, r := range d.after {
			e, err := shifted(r.Event, t.Sub(d.sentAt))
			if err != nil {
				return err
			}
			w.push(w.arrival(r, e.Time), r, e)
		}
	}
	w.sent += len(due)
	_, err := w.apply(events.TypeRolloutDevicesSent, events.RolloutData{JobID: w.rec.JobID, Devices: refs, Attempt: due[0].Attempt}, t)
	return err
}

// shifted is e moved by d: its time, and the time a presence guess refers
// to (the device's last report, which moved with it).
func shifted(e events.Event, d time.Duration) (events.Event, error) {
	e.Time = e.Time.Add(d)
	if e.Type != events.TypeDevicePresence {
		return e, nil
	}
	var p events.DevicePresenceData
	if err := e.DecodeData(&p); err != nil {
		return e, nil // the fold refuses it as it refused the original
	}
	if !p.LastSeen.IsZero() {
		p.LastSeen = p.LastSeen.Add(d)
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return e, fmt.Errorf("shift presence event %s: %w", e.ID, err)
	}
	e.Data = raw
	return e, nil
}

func waveOutcomes(j *Job) []WaveOutcome {
	out := make([]WaveOutcome, len(j.Plan))
	for i, ws := range j.Waves {
		out[i] = WaveOutcome{Wave: i + 1, Devices: len(j.Plan[i]), Started: ws.StartedAt, Gated: ws.GatedAt, Completed: ws.CompletedAt, Gate: ws.Gate}
	}
	return out
}

// actual fills in what the recording says happened: its decisions, its
// operator commands, its waves, and where it first paused or aborted.
func (res *WhatIfResult) actual(rec *Recording) error {
	var j *Job
	sent := map[events.DeviceRef]bool{}
	for _, e := range rec.Job {
		var d events.RolloutData
		if err := e.Event.DecodeData(&d); err != nil {
			return fmt.Errorf("job %s: %s seq %d: %w", rec.JobID, events.RolloutEventName(e.Event.Type), e.Seq, err)
		}
		var err error
		if j, err = Apply(j, e.Seq, e.Event); err != nil {
			return fmt.Errorf("job %s: the recording does not fold: %w", rec.JobID, err)
		}
		switch {
		case isDecision(e.Event):
			res.Actual = append(res.Actual, decisionOf(e.Event.Type, d, e.Event.Time, e.Seq))
		case e.Event.Type == events.TypeRolloutJobPaused, e.Event.Type == events.TypeRolloutJobResumed,
			e.Event.Type == events.TypeRolloutJobAborted, e.Event.Type == events.TypeRolloutDevicesRetried:
			res.Operator = append(res.Operator, decisionOf(e.Event.Type, d, e.Event.Time, e.Seq))
		case e.Event.Type == events.TypeRolloutDevicesSent:
			for _, ref := range d.Devices {
				sent[ref] = true
			}
		}
		if res.ActualEnd.Status == "" && (j.Status == events.RolloutPaused || j.Status == events.RolloutAborted) {
			res.ActualEnd = Outcome{Status: j.Status, At: e.Event.Time, Wave: d.Wave, Reason: d.Reason, By: d.By, Sent: len(sent)}
		}
	}
	res.ActualStatus = j.Status
	if res.ActualEnd.Status == "" {
		res.ActualEnd = Outcome{Status: j.Status, Wave: j.Wave, Sent: len(sent)}
		if !j.FinishedAt.IsZero() {
			res.ActualEnd.At = j.FinishedAt
		}
	}
	res.ActualWaves = waveOutcomes(j)
	return nil
}

// compare sets Reproduces and Difference: the what-if's decisions against
// the recorded ones, one by one, every field and the time.
func (res *WhatIfResult) compare() {
	rel := func(t time.Time) string { return "+" + t.Sub(res.StartedAt).Round(time.Millisecond).String() }
	for i := 0; i < max(len(res.Decisions), len(res.Actual)); i++ {
		switch {
		case i >= len(res.Decisions):
			res.Difference = fmt.Sprintf("decision %d: the what-if ends (%s) where the recording has %s at %s", i+1, res.End.Status, res.Actual[i], rel(res.Actual[i].At))
			return
		case i >= len(res.Actual):
			res.Difference = fmt.Sprintf("decision %d: the what-if decides %s at %s; the recording has no more decisions", i+1, res.Decisions[i], rel(res.Decisions[i].At))
			return
		}
		a, b := res.Decisions[i], res.Actual[i]
		a.Sent, a.Seq, b.Sent, b.Seq = 0, 0, 0, 0
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			res.Difference = fmt.Sprintf("decision %d: the what-if decides %s at %s; the recording has %s at %s", i+1, a, rel(a.At), b, rel(b.At))
			return
		}
	}
	res.Reproduces = true
}

// Summary is the what-if's outcome beside the recording's, in a line each.
func (res *WhatIfResult) Summary() []string {
	rel := func(t time.Time) string { return "+" + t.Sub(res.StartedAt).Round(time.Millisecond).String() }
	line := func(who string, o Outcome) string {
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %s", who, o.Status)
		if o.Wave > 0 && o.Status != events.RolloutCompleted {
			fmt.Fprintf(&b, " in wave %d", o.Wave)
		}
		if !o.At.IsZero() {
			fmt.Fprintf(&b, " at %s", rel(o.At))
		}
		fmt.Fprintf(&b, "; %d of %d devices had been sent the update", o.Sent, res.Devices)
		if o.Reason != "" {
			fmt.Fprintf(&b, " (%s)", o.Reason)
		}
		return b.String()
	}
	out := []string{line("what-if", res.End), line("actual ", res.ActualEnd)}
	if res.ActualStatus != res.ActualEnd.Status {
		out[1] += fmt.Sprintf("; at the end of the recording it is %s", res.ActualStatus)
	}
	return out
}
