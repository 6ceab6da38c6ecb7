package rollout

import (
	"context"
	"fmt"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// RejectedSource names the rollout service on REJECTED (rejected.rollout):
// an event of SHADOW or ROLLOUT its fold can never apply is recorded there
// with the reason.
const RejectedSource = "rollout"

// newFold follows stream into apply with the shared consume loop: an
// ordered (ephemeral) consumer from the start of the stream, one backoff,
// one caught-up rule. An event that does not decode, that apply refuses,
// or whose fold panics goes to REJECTED with the reason and the fold goes
// on: a fold error is never transient (the event is what it is).
func (s *Service) newFold(stream string, apply func(seq uint64, subject string, e events.Event) error) *consume.Follower {
	return consume.New(s.deps.JS, consume.Config{
		Stream:      stream,
		Source:      RejectedSource,
		EventSource: events.SourceRollout,
		Log:         s.log,
		Handle: func(_ context.Context, m consume.Msg) error {
			if err := apply(m.Seq, m.Subject, m.Event); err != nil {
				return consume.Poison(err)
			}
			return nil
		},
	})
}

// onShadow folds one SHADOW event into the fleet state.
func (s *Service) onShadow(seq uint64, _ string, e events.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dev, err := s.fleet.Apply(seq, e)
	if err != nil {
		return err
	}
	if e.Type == events.TypeShadowDesired {
		var d events.ShadowDesiredData
		if e.DecodeData(&d) == nil && d.JobID != "" {
			s.noteDesired(d.JobID, events.DeviceRef{TypeID: d.TypeID, DeviceID: d.DeviceID}, d.Attempt, e.Time)
		}
	}
	if dev != nil && dev.JobID != "" {
		// The device's state changed: its job, if aborted, may have a
		// clear to do again (a late desired event, a failed device that
		// started over).
		delete(s.settled, dev.JobID)
	}
	return nil
}

func (s *Service) noteDesired(job string, ref events.DeviceRef, attempt int, at time.Time) {
	m := s.desired[job]
	if m == nil {
		m = map[events.DeviceRef]desiredRec{}
		s.desired[job] = m
	}
	if old, ok := m[ref]; !ok || attempt >= old.attempt {
		m[ref] = desiredRec{attempt: attempt, at: at}
	}
}

// onRollout folds one ROLLOUT event into its job (rollout.{jobId}.{event}).
func (s *Service) onRollout(seq uint64, subject string, e events.Event) error {
	id, _, ok := events.ParseRolloutSubject(subject)
	if !ok {
		return fmt.Errorf("fold rollout event %s: %q is not a rollout subject (%s.{jobId}.{event})", e.ID, subject, events.SubjectRollout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	j, err := Apply(s.jobs[id], seq, e)
	if err != nil {
		return err
	}
	if j != nil {
		s.jobs[id] = j
	}
	return nil
}

// trackReadiness reports the folds' readiness to the health registry
// until ctx ends (not ready while either replays its stream or cannot
// follow it), and marks the service ready the moment both have caught up
// with where their streams were when they started.
func (s *Service) trackReadiness(ctx context.Context) {
	folds := []*consume.Follower{s.shadowFold, s.rolloutFold}
	caught := make(chan struct{})
	go func() {
		for _, f := range folds {
			select {
			case <-f.CaughtUp():
			case <-ctx.Done():
				return
			}
		}
		s.markReady()
		close(caught)
	}()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		var notReady error
		for _, f := range folds {
			if notReady = f.Status(); notReady != nil {
				break
			}
		}
		s.deps.Health.Set(HealthComponent, notReady)
		select {
		case <-ctx.Done():
			return
		case <-caught:
			caught = nil // report it now, over a status read before it
		case <-t.C:
		}
	}
}

// markReady lets commands and the driver work on the folded state.
func (s *Service) markReady() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready = true
	close(s.readyCh)
	s.deps.Health.Set(HealthComponent, nil)
	s.log.Info("rollout state caught up", "jobs", len(s.jobs), "devices", s.fleet.Len(),
		"shadow_seq", s.shadowFold.Applied(), "rollout_seq", s.rolloutFold.Applied())
}

// waitReady waits until the streams are folded up to where they were at
// start, so no command and no decision works on a partial state.
func (s *Service) waitReady(ctx context.Context) error {
	select {
	case <-s.readyCh:
		return nil
	case <-ctx.Done():
		return &CommandError{Code: events.RolloutErrUnavailable, Msg: "the rollout service is still reading its streams; try again"}
	}
}
