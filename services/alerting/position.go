package alerting

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
)

// An alert is computed from the fleet and rollout state at one point of
// SHADOW and ROLLOUT, and a restart must put the two back together at the
// same point. The snapshot holds both at its point; the alert events
// published after it reflect later points, so folding them onto the
// snapshot's older fleet and then replaying the log made the replay
// contradict them: a device's in_progress report, replayed under its
// device-failed alert raised from the later failed report, resolved the
// alert of a device that was still failed.
//
// So every alert event the rules cause carries, in headers, the engine's
// SHADOW and ROLLOUT sequences when its turn computed it and what the turn
// was (a SHADOW or ROLLOUT event, a tick, a rule set swapped in). A
// restart folds the alert events after the snapshot up to the last turn
// on ALERTS, replays SHADOW and ROLLOUT up to that turn publishing
// nothing, sets the alert state to the fold there, runs the last turn's
// event again publishing only what is not on ALERTS (a crash can store
// some of a turn's alert events and lose the rest), restores that turn's
// alerts, and follows the log from there: every later event's alerts were
// never stored, so they are published. Alert events without the headers
// (stored before they existed) are folded like the others; when the last
// turn is theirs there is no point to replay to, and they are restored at
// the snapshot's point, as they were before.

// Headers of the alert events the rules cause.
const (
	headerShadowSeq  = "Otawatch-Shadow-Seq"
	headerRolloutSeq = "Otawatch-Rollout-Seq"
	headerCause      = "Otawatch-Alert-Cause"
	// HeaderHolder names the alerting instance (its lease holder name)
	// that published an event: with one active instance at a time, ALERTS
	// holds one holder's run of events after another, never interleaved.
	HeaderHolder = "Otawatch-Holder"
)

// What a turn that computed alerts was (headerCause).
const (
	causeShadow  = "shadow"  // the SHADOW event at the turn's SHADOW sequence
	causeRollout = "rollout" // the ROLLOUT event at its ROLLOUT sequence
	causeTick    = "tick"
	causeRules   = "rules" // a rule set swapped in (start or reload)
)

// position is a turn: the engine's SHADOW and ROLLOUT sequences after it
// applied what the turn applied, and what the turn was. The zero position
// is an alert event stored without one.
type position struct {
	shadow, rollout uint64
	cause           string
}

// header is the position as the headers of an alert event.
func (p position) header() nats.Header {
	return nats.Header{
		headerShadowSeq:  []string{strconv.FormatUint(p.shadow, 10)},
		headerRolloutSeq: []string{strconv.FormatUint(p.rollout, 10)},
		headerCause:      []string{p.cause},
	}
}

// positionOf reads the position of an alert event from its headers: the
// zero position when it has none, or (with an error saying which) when
// one is malformed.
func positionOf(h nats.Header) (position, error) {
	p := position{cause: h.Get(headerCause)}
	switch p.cause {
	case "":
		return position{}, nil
	case causeShadow, causeRollout, causeTick, causeRules:
	default:
		return position{}, fmt.Errorf("header %s: unknown cause %q", headerCause, p.cause)
	}
	var err error
	if p.shadow, err = strconv.ParseUint(h.Get(headerShadowSeq), 10, 64); err != nil {
		return position{}, fmt.Errorf("header %s: %w", headerShadowSeq, err)
	}
	if p.rollout, err = strconv.ParseUint(h.Get(headerRolloutSeq), 10, 64); err != nil {
		return position{}, fmt.Errorf("header %s: %w", headerRolloutSeq, err)
	}
	return p, nil
}

// positionNow is where the engine is, for alerts a turn of cause computes.
func (r *run) positionNow(cause string) position {
	return position{shadow: r.eng.ShadowSeq, rollout: r.eng.RolloutSeq, cause: cause}
}

// recorded is the alert state ALERTS records after the snapshot: the
// snapshot's alerts with the alert events after it folded in, but for the
// events of the last turn, held apart in last.
type recorded struct {
	// fold is an engine without rules: only its alert state is used.
	fold *ruleeval.Engine
	last *recordedTurn
	// unplaced counts alert events without a position.
	unplaced int
}

// recordedTurn is the alert events of one turn.
type recordedTurn struct {
	at     position
	alerts []events.AlertData
}

func newRecorded(active []events.AlertData) *recorded {
	fold := ruleeval.New(nil, ruleeval.Options{})
	fold.SetActive(active)
	return &recorded{fold: fold}
}

// add takes the next alert event on ALERTS, computed at position at.
// Consecutive events of one position are one turn's.
func (rc *recorded) add(at position, a events.AlertData) {
	if at == (position{}) {
		rc.unplaced++
	}
	if rc.last != nil && rc.last.at == at {
		rc.last.alerts = append(rc.last.alerts, a)
		return
	}
	if rc.last != nil {
		for _, a := range rc.last.alerts {
			rc.fold.Restore(a)
		}
	}
	rc.last = &recordedTurn{at: at, alerts: []events.AlertData{a}}
}

// catchUp puts the engine, restored from the snapshot, at the last turn
// recorded on ALERTS (see the top of this file). Without alert events
// after the snapshot there is nothing to do: the snapshot's fleet and
// alerts agree.
func (s *Service) catchUp(ctx context.Context, r *run, rc *recorded) error {
	last := rc.last
	if last == nil {
		return nil
	}
	if rc.unplaced > 0 {
		s.log.Warn("alert events without a log position (stored by an older version): the last of them are restored at the snapshot's point",
			"events", rc.unplaced)
	}
	cause, err := s.replayTo(ctx, r, last.at)
	if err != nil {
		return err
	}
	r.eng.SetActive(rc.fold.Active())
	if cause != nil {
		var trs []ruleeval.Transition
		if cause.Stream == events.StreamRollout {
			trs, err = r.eng.ApplyRollout(cause.Seq, cause.Event)
		} else {
			trs, err = r.eng.ApplyShadow(cause.Seq, cause.Event)
		}
		if err != nil {
			// Not reachable for an event that caused alerts; the state
			// goes on from the recorded alerts all the same.
			s.log.Warn("the event of the last recorded alerts does not apply", "stream", cause.Stream, "stream_seq", cause.Seq, "err", err)
		}
		s.queue(r, last.at.cause, trs)
		if err := r.pub.flush(ctx); err != nil {
			return err
		}
	}
	for _, a := range last.alerts {
		r.eng.Restore(a)
	}
	return nil
}

// replayTo applies SHADOW and ROLLOUT from the engine's sequences up to
// at through the engine, publishing nothing (ruleeval.Replay: the two
// streams merged by event time, no ticks). The event of an event turn is
// not applied but returned, for the caller to run with its publishes.
func (s *Service) replayTo(ctx context.Context, r *run, at position) (*ruleeval.Record, error) {
	var cause *ruleeval.Record
	var read int
	began, logged := time.Now(), time.Now()
	source := func(stream string, from, to uint64, isCause bool) (ruleeval.Source, func(), error) {
		if from > to {
			return nil, func() {}, nil
		}
		rd, err := ruleeval.OpenReader(ctx, s.deps.JS, stream, from)
		if err != nil {
			return nil, nil, err
		}
		rd.StopAfter(to)
		return func(ctx context.Context) (ruleeval.Record, bool, error) {
			rec, ok, err := rd.Next(ctx)
			if !ok || err != nil {
				return rec, ok, err
			}
			if isCause && rec.Seq == to {
				cause = &rec
				return ruleeval.Record{}, false, nil
			}
			if read++; time.Since(logged) >= 5*time.Second {
				logged = time.Now()
				s.log.Info("replaying the log up to the last recorded alerts", "stream", stream, "stream_seq", rec.Seq, "to", to, "events", read)
			}
			return rec, true, nil
		}, rd.Close, nil
	}
	// The event of an event turn the snapshot already holds is not run
	// again (a snapshot is taken after its turn's alerts are stored, so
	// this is a record without one).
	shadowCause := at.cause == causeShadow && at.shadow > r.eng.ShadowSeq
	rolloutCause := at.cause == causeRollout && at.rollout > r.eng.RolloutSeq
	shadow, closeShadow, err := source(events.StreamShadow, r.eng.ShadowSeq+1, at.shadow, shadowCause)
	if err != nil {
		return nil, err
	}
	defer closeShadow()
	rollout, closeRollout, err := source(events.StreamRollout, r.eng.RolloutSeq+1, at.rollout, rolloutCause)
	if err != nil {
		return nil, err
	}
	defer closeRollout()
	if shadow == nil && rollout == nil {
		return nil, nil
	}
	if err := ruleeval.Replay(ctx, r.eng, shadow, rollout, ruleeval.ReplayOptions{}, func(ruleeval.Transition) {}); err != nil {
		return nil, fmt.Errorf("replay up to the last recorded alerts: %w", err)
	}
	want := at
	switch {
	case shadowCause:
		want.shadow--
	case rolloutCause:
		want.rollout--
	}
	if (shadowCause || rolloutCause) && cause == nil || r.eng.ShadowSeq < want.shadow || r.eng.RolloutSeq < want.rollout {
		return nil, fmt.Errorf("replay up to the last recorded alerts (SHADOW %d, ROLLOUT %d, %s): stopped at SHADOW %d, ROLLOUT %d",
			at.shadow, at.rollout, at.cause, r.eng.ShadowSeq, r.eng.RolloutSeq)
	}
	s.log.Info("replayed the log up to the last recorded alerts", "shadow_seq", r.eng.ShadowSeq, "rollout_seq", r.eng.RolloutSeq,
		"events", read, "took", time.Since(began).Round(time.Millisecond))
	return cause, nil
}
