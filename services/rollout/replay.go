package rollout

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// Replaying a job's decisions
//
// Replay re-derives every decision of a job from the log with the live
// code (Apply for the job, fleet.State for the devices, Decide with its
// Gate, Progress and the CEL gate) and checks it against the ROLLOUT
// events the orchestrator recorded. Two things of the live run are not in
// the log, and the replay bounds them instead of guessing:
//
//   - When the tick ran: each recorded decision carries its tick's time
//     (the event's time), so the replay decides at exactly that time.
//   - How far the orchestrator's fleet fold had read SHADOW: it follows the
//     stream a few milliseconds behind. A recorded decision must be
//     exactly what Decide gives, at its time, on the job as its events
//     before it say, and on the fleet folded from SHADOW up to some event
//     stored before the decision and no earlier than Lag before it. The
//     replay tries those prefixes in order and takes the first that gives
//     the recorded events, every field (counts, reasons) equal.
//
// Between decisions the replay also asks Decide, as the ticks did, after
// the SHADOW events of the job (at most once per Tick of log time) and at
// the instants where time alone changes the answer (a device's timeout, a
// soak's end). A decision the code gives there that the recording holds
// only more than Lag later, or never, is a difference too: a decision
// that came late or is missing.

// DefaultReplayLag is how far behind the stream the orchestrator's fleet
// view may be, and how late a due decision may be recorded, in a replay.
const DefaultReplayLag = 2 * time.Second

// ReplayOptions tune a replay to the orchestrator's timing.
type ReplayOptions struct {
	// Lag bounds how far the fleet view a decision was made on may lag
	// the stream, and how long after it is due a decision may be recorded
	// (default DefaultReplayLag).
	Lag time.Duration
	// Tick is the orchestrator's tick (rollout.tick; default DefaultTick):
	// between decisions the replay asks Decide at most once per tick of
	// log time.
	Tick time.Duration
}

// Decision is one decision of the decision code: a recorded one, or one
// a replay or a what-if derived.
type Decision struct {
	// At is the tick's time; Seq the ROLLOUT sequence when recorded.
	At  time.Time `json:"at"`
	Seq uint64    `json:"seq,omitempty"`
	// Event is the event's name: wave_started, wave_gated,
	// wave_completed, job_completed, job_paused or job_aborted.
	Event    string               `json:"event"`
	Wave     int                  `json:"wave,omitempty"`
	Reason   string               `json:"reason,omitempty"`
	By       string               `json:"by,omitempty"`
	Gate     *events.GateDecision `json:"gate,omitempty"`
	Progress *events.WaveProgress `json:"progress,omitempty"`
	// Sent is how many of the job's devices had been sent their desired
	// state when it was taken (what-if only).
	Sent int `json:"sent,omitempty"`
}

// String is the decision in one line: "wave_gated wave 2: 9 of 10 online
// devices completed; gate 90% needs 9".
func (d Decision) String() string {
	var b strings.Builder
	b.WriteString(d.Event)
	if d.Wave > 0 {
		fmt.Fprintf(&b, " wave %d", d.Wave)
	}
	if d.Reason != "" {
		b.WriteString(": " + d.Reason)
	}
	if d.Progress != nil {
		p := d.Progress
		fmt.Fprintf(&b, " [%d completed, %d failed, %d timed out, %d offline of %d]", p.Completed, p.Failed, p.TimedOut, p.Offline, p.Targeted)
	}
	return b.String()
}

func describe(ds []Decision) string {
	if len(ds) == 0 {
		return "nothing"
	}
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.String()
	}
	return strings.Join(parts, ", then ")
}

// isDecision reports whether a recorded event is one Decide makes (and so
// one a replay checks); the rest (create, start, operator commands, sends,
// retries, clears) are facts the replay applies as they are.
func isDecision(e events.Event) bool {
	switch e.Type {
	case events.TypeRolloutWaveStarted, events.TypeRolloutWaveGated, events.TypeRolloutWaveCompleted, events.TypeRolloutJobCompleted:
		return true
	case events.TypeRolloutJobPaused, events.TypeRolloutJobAborted:
		var d events.RolloutData
		return e.DecodeData(&d) == nil && d.By == events.ByFailurePolicy
	}
	return false
}

func decisionOf(typ string, d events.RolloutData, at time.Time, seq uint64) Decision {
	return Decision{At: at, Seq: seq, Event: events.RolloutEventName(typ), Wave: d.Wave, Reason: d.Reason, By: d.By,
		Gate: d.Gate, Progress: d.Progress}
}

func pendingDecisions(pend []Pending, at time.Time) []Decision {
	out := make([]Decision, len(pend))
	for i, p := range pend {
		out[i] = decisionOf(p.Type, p.Data, at, 0)
	}
	return out
}

// sameEvent reports whether a recorded event is the pending one: same
// type, and data equal in every field (as encoded).
func sameEvent(rec Recorded, p Pending) bool {
	if rec.Event.Type != p.Type {
		return false
	}
	var d events.RolloutData
	if rec.Event.DecodeData(&d) != nil {
		return false
	}
	a, err1 := json.Marshal(d)
	b, err2 := json.Marshal(p.Data)
	return err1 == nil && err2 == nil && string(a) == string(b)
}

// ReplayResult is what a replay found.
type ReplayResult struct {
	JobID string `json:"jobId"`
	// Status is the job's status after its last recorded event.
	Status string `json:"status"`
	// Decisions are the recorded decisions, each tick's events together,
	// checked.
	Decisions []CheckedDecision `json:"decisions"`
	// Facts counts the events applied as they are: the job's creation and
	// start, operator commands, sends, retries, clears.
	Facts int `json:"facts"`
	// ShadowEvents counts the SHADOW events folded since the job's
	// creation.
	ShadowEvents int `json:"shadowEvents"`
	// Differences are in log order; the first is the first differing
	// decision.
	Differences []Difference `json:"differences"`
}

// CheckedDecision is one tick's recorded decision events and what the
// decision code gives there.
type CheckedDecision struct {
	Recorded []Decision `json:"recorded"`
	// Derived is Decide's answer on the latest fleet view allowed, when it
	// differs from Recorded.
	Derived []Decision `json:"derived,omitempty"`
	Same    bool       `json:"same"`
	// ShadowSeq is the last SHADOW sequence of the fleet view the
	// decision was found on (0: the fleet as it was at the job's creation).
	ShadowSeq uint64 `json:"shadowSeq"`
	// Partial: the recording holds the first events of the decision and
	// the rest at a later tick (an append that failed midway).
	Partial bool `json:"partial,omitempty"`
}

// Difference is one place where the recording and the decision code part.
type Difference struct {
	// Seq is the recorded event's ROLLOUT sequence; 0 for a decision the
	// recording lacks.
	Seq  uint64    `json:"seq,omitempty"`
	At   time.Time `json:"at"`
	What string    `json:"what"`
}

// replayer is one replay's state: the job and the fleet as the log says
// at the point it has reached.
type replayer struct {
	rec   *Recording
	o     ReplayOptions
	fleet *fleet.State
	job   *Job
	extra ExtraGate
	res   *ReplayResult

	si    int       // the next SHADOW event to fold
	clock time.Time // the log's time: the latest event time folded
	// dirty: something was folded since Decide was last asked;
	// lastAsked is when; nextAt is the next instant time alone changes
	// Decide's answer (zero: none known).
	dirty     bool
	lastAsked time.Time
	nextAt    time.Time
	// lateNamed: a late decision was named since the last recorded one.
	lateNamed bool
}

// Replay checks every recorded decision of a job against the decision
// code (see the comment at the top of this file).
func Replay(rec *Recording, o ReplayOptions) (*ReplayResult, error) {
	if o.Lag <= 0 {
		o.Lag = DefaultReplayLag
	}
	if o.Tick <= 0 {
		o.Tick = DefaultTick
	}
	base, err := rec.Base()
	if err != nil {
		return nil, err
	}
	if len(rec.Job) == 0 || rec.Job[0].Event.Type != events.TypeRolloutJobCreated {
		return nil, fmt.Errorf("job %s: the recording does not start with job_created", rec.JobID)
	}
	r := &replayer{rec: rec, o: o, fleet: base, res: &ReplayResult{JobID: rec.JobID}}
	// The ticks of the last Lag before the recording was read may not have
	// recorded what they decided yet: those are not checked.
	end := rec.ReadAt.Add(-o.Lag)
	jobs := rec.Job
	for i := 0; i < len(jobs); {
		g := i
		for g < len(jobs) && !isDecision(jobs[g].Event) {
			g++
		}
		if g == len(jobs) {
			n := r.walk(jobs[i:], end, nil)
			for _, f := range jobs[i+n:] {
				r.applyFact(f)
			}
			break
		}
		k := g + 1
		for k < len(jobs) && isDecision(jobs[k].Event) && jobs[k].Event.Time.Equal(jobs[g].Event.Time) {
			k++
		}
		group := jobs[g:k]
		// Before the window: facts and SHADOW in the order they were
		// stored, asking Decide as the ticks did.
		n := r.walk(jobs[i:g], group[0].Stored.Add(-o.Lag), group)
		// In the window: the job as the driver had it (every event before
		// the decision), and the fleet views it may have had.
		for _, f := range jobs[i+n : g] {
			r.applyFact(f)
		}
		r.match(group)
		i = k
	}
	// After the last event: what the ticks would still have decided.
	r.walk(nil, end, nil)
	if r.dirty && !r.clock.After(end) {
		r.ask(r.clock, nil)
	}
	r.passTime(end, nil)
	if r.job != nil {
		r.res.Status = r.job.Status
	}
	return r.res, nil
}

// walk folds the facts and the SHADOW events stored before until, in the
// order they were stored, asking Decide along the way with next the next
// recorded decision (nil: none); it returns how many facts it applied.
// Time passes with the events' times: the log's clock never runs ahead
// of what is folded.
func (r *replayer) walk(facts []Recorded, until time.Time, next []Recorded) int {
	n := 0
	for {
		var fact, shadow *Recorded
		if n < len(facts) && facts[n].Stored.Before(until) {
			fact = &facts[n]
		}
		if r.si < len(r.rec.Shadow) && r.rec.Shadow[r.si].Stored.Before(until) {
			shadow = &r.rec.Shadow[r.si]
		}
		switch {
		case fact == nil && shadow == nil:
			return n
		case fact != nil && (shadow == nil || fact.Stored.Before(shadow.Stored)):
			r.passTime(fact.Event.Time, next)
			r.applyFact(*fact)
			n++
		default:
			r.passTime(shadow.Event.Time, next)
			r.foldShadow()
		}
		if r.dirty && r.clock.Sub(r.lastAsked) >= r.o.Tick {
			r.ask(r.clock, next)
		}
	}
}

// passTime moves the log's clock to t, asking Decide at each instant on
// the way where time alone changes its answer.
func (r *replayer) passTime(t time.Time, next []Recorded) {
	for !r.nextAt.IsZero() && !r.nextAt.After(t) {
		at := r.nextAt
		r.nextAt = time.Time{}
		if at.After(r.clock) {
			r.clock = at
		}
		r.ask(at, next)
	}
	if t.After(r.clock) {
		r.clock = t
	}
}

// foldShadow folds the next SHADOW event and reports whether it may
// change what Decide says (see moves).
func (r *replayer) foldShadow() bool {
	e := r.rec.Shadow[r.si]
	r.si++
	r.res.ShadowEvents++
	// The live fold records what it cannot apply on REJECTED and goes
	// on; so does this one, without recording.
	if _, err := r.fleet.Apply(e.Seq, e.Event); err != nil || !moves(r.job, r.extra, e.Subject) {
		return false
	}
	r.dirty = true
	return true
}

// moves reports whether a SHADOW event on subject may change what Decide
// says of job j: Decide reads the open wave's devices, and the whole
// fleet only through a CEL gate. Asking again after any other event is
// asking the same question.
func moves(j *Job, extra ExtraGate, subject string) bool {
	if j == nil || extra != nil {
		return true
	}
	t, d, ok := events.DeviceFromSubject(subject)
	return !ok || j.Wave == 0 || j.WaveOf(events.DeviceRef{TypeID: t, DeviceID: d}) == j.Wave
}

func (r *replayer) applyFact(e Recorded) {
	r.res.Facts++
	r.apply(e)
}

// apply folds one recorded event of the job; one Apply refuses is a
// difference.
func (r *replayer) apply(e Recorded) {
	j, err := Apply(r.job, e.Seq, e.Event)
	if err != nil {
		r.diff(e.Seq, e.Event.Time, fmt.Sprintf("%s (seq %d) cannot be applied to the job: %v", events.RolloutEventName(e.Event.Type), e.Seq, err))
		return
	}
	if r.job == nil && j != nil && j.Spec.CELGate != "" {
		cond, cerr := compileCELGate(j.ID, j.Spec.CELGate)
		r.extra = CELGate(cond, cerr, r.fleet)
	}
	r.job = j
	r.dirty = true
}

// ask asks Decide at at, as a tick would have, and names a decision it
// gives that the recording holds only more than Lag later, or never.
func (r *replayer) ask(at time.Time, next []Recorded) {
	r.dirty, r.lastAsked = false, at
	if r.job == nil || r.job.Status != events.RolloutRunning {
		return
	}
	pend := Decide(r.job, r.fleet, at, r.extra)
	r.nextAt = r.instant(at)
	if len(pend) == 0 || r.lateNamed {
		return
	}
	if len(next) > 0 && !next[0].Event.Time.After(at.Add(r.o.Lag)) {
		return
	}
	r.lateNamed = true
	if len(next) == 0 {
		r.diff(0, at, fmt.Sprintf("at %s the decision code gives %s; the recording never has it",
			at.UTC().Format(time.RFC3339Nano), describe(pendingDecisions(pend, at))))
		return
	}
	r.diff(next[0].Seq, at, fmt.Sprintf("at %s the decision code gives %s; the recording has it only %s later (seq %d), more than the allowed lag of %s",
		at.UTC().Format(time.RFC3339Nano), describe(pendingDecisions(pend, at)), next[0].Event.Time.Sub(at).Round(time.Millisecond), next[0].Seq, r.o.Lag))
}

// instant is the first instant after at where time alone changes what
// Decide says of the open wave: a device's timeout, or the soak's end.
func (r *replayer) instant(at time.Time) time.Time {
	return nextInstant(r.job, r.fleet, at)
}

// nextInstant is the first instant after at where time alone changes what
// Decide says of the job's open wave: a sent device's timeout (DeviceState
// counts it timed out once now - DesiredAt exceeds the timeout), or the
// gated wave's soak ending. Zero when there is none.
func nextInstant(j *Job, fv FleetView, at time.Time) time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if t.After(at) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if j == nil || j.Wave < 1 || j.Wave > len(j.Waves) {
		return next
	}
	ws := j.Waves[j.Wave-1]
	if !ws.GatedAt.IsZero() && ws.CompletedAt.IsZero() && j.Spec.Soak > 0 {
		consider(ws.GatedAt.Add(time.Duration(j.Spec.Soak)))
	}
	if j.DeviceTimeout > 0 {
		for _, ref := range j.Plan[j.Wave-1] {
			if d, ok := fv.Device(ref.TypeID, ref.DeviceID); ok && d.JobID == j.ID && !d.DesiredAt.IsZero() &&
				(d.JobStatus == fleet.JobPending || d.JobStatus == fleet.JobInProgress) {
				consider(d.DesiredAt.Add(j.DeviceTimeout + time.Nanosecond))
			}
		}
	}
	return next
}

// match checks one tick's recorded decision events: Decide at their time,
// on the job as it was before them, must give exactly them on a fleet
// view folded up to some SHADOW event stored before them (and no earlier
// than Lag before: walk folded those already). The earliest such view
// is taken, which leaves the later decisions every view they may need.
func (r *replayer) match(group []Recorded) {
	at := group[0].Event.Time
	recorded := make([]Decision, len(group))
	for i, e := range group {
		var d events.RolloutData
		_ = e.Event.DecodeData(&d) // isDecision decoded it
		recorded[i] = decisionOf(e.Event.Type, d, e.Event.Time, e.Seq)
	}
	check := CheckedDecision{Recorded: recorded}
	var pend []Pending
	for ask := true; ; {
		if ask && r.job != nil && r.job.Status == events.RolloutRunning {
			pend = Decide(r.job, r.fleet, at, r.extra)
		} else if ask {
			pend = nil
		}
		if same, partial := matches(group, pend); ask && same {
			check.Same, check.Partial = true, partial
			break
		}
		if r.si >= len(r.rec.Shadow) || r.rec.Shadow[r.si].Stored.After(group[0].Stored) {
			break
		}
		ask = r.foldShadow()
		if t := r.rec.Shadow[r.si-1].Event.Time; t.After(r.clock) {
			r.clock = t
		}
	}
	if r.si > 0 {
		check.ShadowSeq = r.rec.Shadow[r.si-1].Seq
	}
	if !check.Same {
		check.Derived = pendingDecisions(pend, at)
		why := ""
		if r.job != nil && r.job.Status != events.RolloutRunning {
			why = fmt.Sprintf(" (the job is %s)", r.job.Status)
		}
		r.diff(group[0].Seq, at, fmt.Sprintf("recorded %s (seq %d); the decision code gives %s%s%s",
			describe(recorded), group[0].Seq, describe(check.Derived), why, firstField(group, pend)))
	}
	r.res.Decisions = append(r.res.Decisions, check)
	for _, e := range group {
		r.apply(e)
	}
	r.lateNamed = false
	if at.After(r.clock) {
		r.clock = at
	}
	r.lastAsked = at
}

// firstField names the first field in which the recorded events and the
// pending ones differ ("; first differing field: gate.completed,
// recorded 11, derived 12"), or "" when it cannot pair them up.
func firstField(group []Recorded, pend []Pending) string {
	for i := 0; i < min(len(group), len(pend)); i++ {
		if group[i].Event.Type != pend[i].Type {
			return fmt.Sprintf("; event %d: recorded %s, derived %s", i+1,
				events.RolloutEventName(group[i].Event.Type), events.RolloutEventName(pend[i].Type))
		}
		var d events.RolloutData
		if group[i].Event.DecodeData(&d) != nil {
			return ""
		}
		a, b := flatten(d), flatten(pend[i].Data)
		keys := make([]string, 0, len(a)+len(b))
		for k := range a {
			keys = append(keys, k)
		}
		for k := range b {
			if _, ok := a[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			if a[k] != b[k] {
				return fmt.Sprintf("; first differing field of %s: %s, recorded %s, derived %s",
					events.RolloutEventName(pend[i].Type), k, orNone(a[k]), orNone(b[k]))
			}
		}
	}
	return ""
}

func orNone(v string) string {
	if v == "" {
		return "none"
	}
	return v
}

// flatten is v's JSON as dotted paths to leaf values ("gate.completed":
// "11").
func flatten(v any) map[string]string {
	out := map[string]string{}
	b, err := json.Marshal(v)
	if err != nil {
		return out
	}
	var tree any
	if json.Unmarshal(b, &tree) != nil {
		return out
	}
	var walk func(prefix string, x any)
	walk = func(prefix string, x any) {
		switch x := x.(type) {
		case map[string]any:
			for k, c := range x {
				if prefix != "" {
					k = prefix + "." + k
				}
				walk(k, c)
			}
		case []any:
			for i, c := range x {
				walk(fmt.Sprintf("%s[%d]", prefix, i), c)
			}
		default:
			j, _ := json.Marshal(x)
			out[prefix] = string(j)
		}
	}
	walk("", tree)
	return out
}

// matches reports whether the recorded events are the pending ones, or
// their first events (partial: the rest at a later tick, after an append
// failed midway; the next decision then checks the rest).
func matches(group []Recorded, pend []Pending) (same, partial bool) {
	if len(group) == 0 || len(group) > len(pend) {
		return false, false
	}
	for i := range group {
		if !sameEvent(group[i], pend[i]) {
			return false, false
		}
	}
	return true, len(group) < len(pend)
}

func (r *replayer) diff(seq uint64, at time.Time, what string) {
	r.res.Differences = append(r.res.Differences, Difference{Seq: seq, At: at, What: what})
	sort.SliceStable(r.res.Differences, func(a, b int) bool {
		da, db := r.res.Differences[a], r.res.Differences[b]
		return da.At.Before(db.At)
	})
}
