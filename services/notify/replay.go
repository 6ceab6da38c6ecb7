package notify

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// Replay runs the recorded ALERTS through the configured routes, grouping,
// inhibition and the silences recorded on NOTIFY, with the service's own
// code (dispatcher, flush, decide) on a clock that follows the log: each
// ALERTS or silence event is handled at the time its stream stored it (when
// the live service, following the log, got it), and the timers in between
// (group_wait, group_interval, repeat_interval, digests) fire at their
// times. Nothing is delivered and nothing is published: where the live
// service would call a receiver, the replay notes the notification and the
// receiver's rendering of it (Previewer), and takes the outcome NOTIFY
// records for it (a notification NOTIFY does not have counts as sent). It
// then compares the notifications and suppressions decided in the range
// with those NOTIFY records there.
//
// Deliveries take no time in a replay, and live retries are folded into
// their recorded outcome, so a group whose next flush fell inside a live
// delivery may differ; the comparison names it.

// Previewer is a receiver that renders what it would send for n without
// sending it (otawatch replay notify prints it). digest and since are as
// for DigestNotifier: a digest route's notification of the period from
// since.
type Previewer interface {
	Preview(n *Notification, digest bool, since time.Time) (string, error)
}

// ReplayOptions tune Replay.
type ReplayOptions struct {
	// From and To bound the comparison by decision time (inclusive). The
	// replay reads both streams from their start, so the groups and what
	// each told its receiver at From are as they were live; the timers
	// run up to To.
	From, To time.Time
	// EventTime takes each event's own time (an alert's event or tick
	// time, a silence's creation) as the time the service handled it,
	// instead of when its stream stored it: for a history whose notify
	// ran on such a clock (a test's fake clock, a log imported from
	// elsewhere). The clock never goes back: an event older than the
	// last is handled at the last one's time.
	EventTime bool
	// Progress, if set, hears how far the streams have been read, about
	// once a second: a line for people.
	Progress func(string)
}

// Outcomes of a recorded notification (RecordedNotification.Outcome and
// Replayed.Outcome).
const (
	OutcomeSent = "sent"
	// OutcomeFailed: the last attempt failed for good.
	OutcomeFailed = "failed"
	// OutcomeAttempted: attempted without a recorded answer (an instance
	// that stopped), or failed and not yet final.
	OutcomeAttempted = "attempted"
)

// Replayed is a notification the replay decided: what would be sent.
type Replayed struct {
	// Data is the notification as the live service would record its
	// attempt (DecidedAt is the replay's decision time).
	Data events.NotificationData
	// Notification is what the receiver would be given.
	Notification *Notification
	// Digest: a digest route's notification, of the period from Since.
	Digest bool
	Since  time.Time
	// Text is what the receiver would send, as it renders it (Previewer),
	// or a summary of the notification when it cannot render it.
	Text string
	// Outcome is what NOTIFY records of this notification, "" when it
	// has no record of it.
	Outcome string
}

// Kind is "firing", "resolved", or either with " digest".
func (r Replayed) Kind() string {
	if r.Digest {
		return r.Data.Status + " digest"
	}
	return r.Data.Status
}

// RecordedNotification is a notification as NOTIFY records it.
type RecordedNotification struct {
	// Data is its first attempt's (DecidedAt is when it was decided).
	Data events.NotificationData
	// Seq is the NOTIFY sequence of the first attempt.
	Seq      uint64
	Attempts int
	Outcome  string
	// lastFailed is the last failed attempt (an Outcome failed is
	// replayed with it).
	lastFailed *events.NotificationData
}

// Suppression is an alert kept from a receiver by a silence or an
// inhibition, recorded or replayed.
type Suppression struct {
	// Seq is the NOTIFY sequence (recorded only).
	Seq  uint64                `json:"seq,omitempty"`
	ID   string                `json:"id"`
	At   time.Time             `json:"at"`
	Data events.SuppressedData `json:"data"`
}

// ReplayResult is what Replay found.
type ReplayResult struct {
	// Notifications and Suppressed are the replay's decisions in the
	// range; Recorded and RecordedSuppressed NOTIFY's.
	Notifications      []Replayed
	Suppressed         []Suppression
	Recorded           []RecordedNotification
	RecordedSuppressed []Suppression
	Diff               NotifyDiff
	// Alerts and Silences count the events replayed; AlertsSeq and
	// NotifySeq are the streams' last sequences read; Unreadable counts
	// messages that did not decode or that the service refuses.
	Alerts, Silences     int
	AlertsSeq, NotifySeq uint64
	Unreadable           int
}

// NotifyDiff compares the notifications decided with those recorded.
type NotifyDiff struct {
	// Matched counts recorded notifications the replay decided too (the
	// same id: receiver, group, status, alerts and count).
	Matched int
	// Missing were recorded and not decided; Extra decided and never
	// recorded.
	Missing []RecordedNotification
	Extra   []Replayed
	// Different pair a missing and an extra notification of the same
	// receiver, group and count: that notification's content differs.
	Different []NotificationDifference
	// The same for suppressions, by their id (receiver, alert, cause).
	SuppressedMatched int
	SuppressedMissing []Suppression
	SuppressedExtra   []Suppression
}

// Same reports whether the replay decided exactly what was recorded.
func (d NotifyDiff) Same() bool {
	return len(d.Missing)+len(d.Extra)+len(d.Different)+len(d.SuppressedMissing)+len(d.SuppressedExtra) == 0
}

// NotificationDifference is one notification recorded with one content
// and decided with another.
type NotificationDifference struct {
	Recorded RecordedNotification
	Replayed Replayed
	// Fields name what differs, each as "field: recorded -> replayed".
	Fields []string
}

// dryRun is a replay's outbox: flush hands it what it decided.
type dryRun struct {
	recorded map[string]*RecordedNotification
	// decided are the notifications decided, once each, in order.
	decided []Replayed
	seen    map[string]bool
	// suppressed are the suppression decisions.
	suppressed []Suppression
	// recordedSup are the ids of every suppression NOTIFY records.
	recordedSup map[string]bool
	// keys are the alerts' keys by NotifyAlertID, for people.
	keys map[string]string
}

// suppress notes suppression decisions made at now.
func (r *dryRun) suppress(now time.Time, list []events.SuppressedData) {
	for _, sd := range list {
		id := events.SuppressedEventID(sd.Receiver, sd.AlertID, sd.Reason, sd.SilenceID+sd.InhibitedBy)
		r.suppressed = append(r.suppressed, Suppression{ID: id, At: now, Data: sd})
	}
}

// deliver notes what flush decided for g and ends the delivery with the
// outcome NOTIFY records (sent when it records none) once flush has let
// go of the service's lock: on the replay's clock, at once.
func (r *dryRun) deliver(s *Service, d *dispatcher, g *group, notifier Notifier, n *Notification, dec decision) {
	rec := r.recorded[dec.nd.ID]
	nd := dec.nd
	nd.Attempt++
	sent, failed := &nd, (*events.NotificationData)(nil)
	outcome := ""
	if rec != nil {
		outcome = rec.Outcome
		if rec.Outcome == OutcomeFailed {
			sent, failed = nil, rec.lastFailed
		}
	}
	if !r.seen[nd.ID] {
		r.seen[nd.ID] = true
		r.decided = append(r.decided, Replayed{Data: dec.nd, Notification: n, Digest: dec.digest, Since: dec.since,
			Text: preview(notifier, n, dec), Outcome: outcome})
	}
	now := s.clock.Now()
	done := dec.done
	s.clock.AfterFunc(0, func() { s.finish(d, g, sent, failed, done, now) })
}

// preview is what notifier would send for n.
func preview(notifier Notifier, n *Notification, dec decision) string {
	if p, ok := notifier.(Previewer); ok {
		text, err := p.Preview(n, dec.digest, dec.since)
		if err == nil {
			return strings.TrimSpace(text)
		}
		return fmt.Sprintf("(the receiver cannot render it: %v) %s", err, summary(n))
	}
	return summary(n)
}

// summary is n in one line, for a receiver that cannot render it.
func summary(n *Notification) string {
	keys := make([]string, 0, len(n.Alerts))
	for _, a := range n.Alerts {
		keys = append(keys, a.State+" "+a.Key)
	}
	return fmt.Sprintf("[%s] %d alert(s): %s", strings.ToUpper(n.Status), len(n.Alerts), strings.Join(keys, ", "))
}

// input is an ALERTS or silence event the replay hands to the service.
type input struct {
	msg   consume.Msg
	alert bool
}

// Replay replays notify over the log as it is now (see the comment at the
// top of this file). cfg is the notify section; its receivers are built
// (their secret files read) to render, never called.
func Replay[R ReceiverConfig](ctx context.Context, js jetstream.JetStream, cfg Config[R], log *slog.Logger, o ReplayOptions) (*ReplayResult, error) {
	r := newRecording(o)
	if err := r.readNotify(ctx, js); err != nil {
		return nil, err
	}
	if err := r.readAlerts(ctx, js); err != nil {
		return nil, err
	}
	// Each stream in its order, the two merged by time: the live service
	// followed both.
	inputs := mergeByTime(r.alerts, r.silences, o.timeOf)
	clock := svc.NewManualClock(o.start(inputs))
	s, err := New(cfg, svc.Deps{JS: js, Log: log, Clock: clock})
	if err != nil {
		return nil, err
	}
	if err := r.dryDispatch(ctx, s, clock, inputs); err != nil {
		return nil, err
	}
	return r.collect(), nil
}

// timeOf is when the live service handled in: when its stream stored it,
// or its own time (EventTime).
func (o ReplayOptions) timeOf(in input) time.Time {
	if o.EventTime {
		return in.msg.Event.Time
	}
	return in.msg.Stored
}

// start is where the replay's clock starts: at From, or at the first
// input when that is earlier or there is no From.
func (o ReplayOptions) start(inputs []input) time.Time {
	start := o.From
	if len(inputs) > 0 && (start.IsZero() || o.timeOf(inputs[0]).Before(start)) {
		start = o.timeOf(inputs[0])
	}
	return start
}

// mergeByTime merges alerts and silences, each in its order, by timeOf;
// an alert goes first only when it is strictly earlier.
func mergeByTime(alerts, silences []input, timeOf func(input) time.Time) []input {
	inputs := make([]input, 0, len(alerts)+len(silences))
	for len(alerts)+len(silences) > 0 {
		if len(silences) == 0 || len(alerts) > 0 && timeOf(alerts[0]).Before(timeOf(silences[0])) {
			inputs, alerts = append(inputs, alerts[0]), alerts[1:]
		} else {
			inputs, silences = append(inputs, silences[0]), silences[1:]
		}
	}
	return inputs
}

// dryDispatch runs s's dispatcher on clock over inputs, each handled at
// its time, its decisions going to r.dry, and lets the timers run up to
// To (or what is due at the last input).
func (r *recording) dryDispatch(ctx context.Context, s *Service, clock *svc.ManualClock, inputs []input) error {
	s.dry = r.dry
	d := newDispatcher(s.root, s.inhibit)
	d.live = true
	s.mu.Lock()
	s.d, s.runCtx = d, ctx
	s.mu.Unlock()
	handleAlert, handleNotify := s.handleAlert(d), s.handleNotify(d)
	advanceTo := func(t time.Time) {
		clock.Advance(max(t.Sub(clock.Now()), 0))
	}
	for _, in := range inputs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !r.o.To.IsZero() && r.o.timeOf(in).After(r.o.To) {
			break
		}
		advanceTo(r.o.timeOf(in))
		h := handleNotify
		if in.alert {
			h, r.res.Alerts = handleAlert, r.res.Alerts+1
		}
		if err := h(ctx, in.msg); err != nil {
			r.res.Unreadable++
		}
	}
	if !r.o.To.IsZero() {
		advanceTo(r.o.To)
	} else {
		advanceTo(clock.Now()) // what is due now (a delivery's end)
	}
	return nil
}

// collect takes the decisions and records in the range into the result,
// and compares them.
func (r *recording) collect() *ReplayResult {
	res, o := r.res, r.o
	for _, n := range r.dry.decided {
		if inRange(n.Data.DecidedAt, o.From, o.To) {
			res.Notifications = append(res.Notifications, n)
		}
	}
	for _, sp := range r.dry.suppressed {
		if inRange(sp.At, o.From, o.To) {
			res.Suppressed = append(res.Suppressed, sp)
		}
	}
	for _, rn := range r.recorded {
		if inRange(rn.Data.DecidedAt, o.From, o.To) {
			res.Recorded = append(res.Recorded, *rn)
		}
	}
	res.Diff = diffNotifications(res, r.dry)
	return res
}

func inRange(t, from, to time.Time) bool {
	return (from.IsZero() || !t.Before(from)) && (to.IsZero() || !t.After(to))
}

// diffNotifications compares the decisions in the range with the records
// in it. A recorded notification is matched when the replay decided the
// same one at any time (a decision a few milliseconds across a bound of
// the range is not a difference); a decision is extra only when NOTIFY
// has no record of it at all.
func diffNotifications(res *ReplayResult, dry *dryRun) NotifyDiff {
	var d NotifyDiff
	var missing []RecordedNotification
	for _, r := range res.Recorded {
		if dry.seen[r.Data.ID] {
			d.Matched++
		} else {
			missing = append(missing, r)
		}
	}
	var extra []Replayed
	for _, p := range res.Notifications {
		if dry.recorded[p.Data.ID] == nil {
			extra = append(extra, p)
		}
	}
	slot := func(nd events.NotificationData) string {
		return fmt.Sprintf("%s\x00%s\x00%d", nd.Receiver, nd.GroupKey, nd.Count)
	}
	bySlot := map[string][]int{}
	for i, p := range extra {
		bySlot[slot(p.Data)] = append(bySlot[slot(p.Data)], i)
	}
	paired := make([]bool, len(extra))
	for _, r := range missing {
		idx := bySlot[slot(r.Data)]
		if len(idx) == 0 {
			d.Missing = append(d.Missing, r)
			continue
		}
		bySlot[slot(r.Data)] = idx[1:]
		paired[idx[0]] = true
		p := extra[idx[0]]
		d.Different = append(d.Different, NotificationDifference{Recorded: r, Replayed: p, Fields: notificationFields(r.Data, p.Data, dry.keys)})
	}
	for i, p := range extra {
		if !paired[i] {
			d.Extra = append(d.Extra, p)
		}
	}

	replayedSup := map[string]bool{}
	for _, sp := range dry.suppressed {
		replayedSup[sp.ID] = true
	}
	for _, sp := range res.RecordedSuppressed {
		if replayedSup[sp.ID] {
			d.SuppressedMatched++
		} else {
			d.SuppressedMissing = append(d.SuppressedMissing, sp)
		}
	}
	for _, sp := range res.Suppressed {
		if !dry.recordedSup[sp.ID] {
			d.SuppressedExtra = append(d.SuppressedExtra, sp)
		}
	}
	return d
}

// notificationFields names what differs between two notifications of the
// same group and count; alerts are named by their keys.
func notificationFields(rec, rep events.NotificationData, keys map[string]string) []string {
	var out []string
	if rec.Status != rep.Status {
		out = append(out, fmt.Sprintf("status: %s -> %s", rec.Status, rep.Status))
	}
	for _, f := range []struct {
		name     string
		rec, rep []string
	}{{"firing", rec.Firing, rep.Firing}, {"resolved", rec.Resolved, rep.Resolved}} {
		if only, also := setDiff(f.rec, f.rep), setDiff(f.rep, f.rec); len(only)+len(also) > 0 {
			out = append(out, fmt.Sprintf("%s: %d -> %d alerts (only recorded: %s; only replayed: %s)",
				f.name, len(f.rec), len(f.rep), names(only, keys), names(also, keys)))
		}
	}
	return out
}

// names are alert ids as their keys (the id when the key is unknown).
func names(ids []string, keys map[string]string) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id
		if k := keys[id]; k != "" {
			out[i] = k
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// setDiff is what a has and b does not.
func setDiff(a, b []string) []string {
	in := set(b)
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}
