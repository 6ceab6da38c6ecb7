package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// errConflict is an append refused because the job has events this
// instance has not folded yet.
var errConflict = errors.New("the job changed concurrently")

// appendLocked appends a job's pending events, each expecting the job's
// last event to be the one before it (so two instances cannot interleave
// decisions), and folds each into the job at once. The caller holds s.mu.
func (s *Service) appendLocked(ctx context.Context, id string, pend []Pending, now time.Time) (*Job, error) {
	j := s.jobs[id]
	filter := events.SubjectRollout + "." + id + ".>"
	for _, p := range pend {
		var expect uint64
		if j != nil {
			expect = j.LastSeq
		}
		e, err := events.New(events.IdentityID("ro", id, fmt.Sprint(expect), p.Type), events.SourceRollout, p.Type, id, now, p.Data)
		if err != nil {
			return j, err
		}
		body, err := e.Marshal()
		if err != nil {
			return j, fmt.Errorf("encode %s: %w", p.Type, err)
		}
		var ack *jetstream.PubAck
		err = events.Retry(ctx, 3, func(ctx context.Context) error {
			var err error
			ack, err = s.deps.JS.Publish(ctx, events.RolloutSubject(id, events.RolloutEventName(p.Type)), body,
				jetstream.WithMsgID(e.ID), jetstream.WithExpectLastSequenceForSubject(expect, filter))
			return err
		})
		if err != nil {
			if events.IsWrongLastSequence(err) {
				return j, errConflict
			}
			if errors.Is(err, nats.ErrMaxPayload) {
				return j, invalid("event %s of job %s is too large for the server: %v", events.RolloutEventName(p.Type), id, err)
			}
			return j, fmt.Errorf("append %s to job %s: %w", events.RolloutEventName(p.Type), id, err)
		}
		if ack.Duplicate {
			// Stored by an earlier try whose ack was lost: fold what is
			// stored, not this copy.
			if e, err = s.storedEvent(ctx, events.StreamRollout, ack.Sequence); err != nil {
				return j, err
			}
		}
		if j, err = Apply(j, ack.Sequence, e); err != nil {
			return j, err
		}
		s.jobs[id] = j
		s.stats.EventsAppended++
	}
	return j, nil
}

func (s *Service) storedEvent(ctx context.Context, stream string, seq uint64) (events.Event, error) {
	var e events.Event
	err := events.Retry(ctx, 3, func(ctx context.Context) error {
		st, err := s.deps.JS.Stream(ctx, stream)
		if err != nil {
			return err
		}
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			return err
		}
		e, err = events.Decode(m.Data)
		return err
	})
	if err != nil {
		return e, fmt.Errorf("read %s seq %d: %w", stream, seq, err)
	}
	return e, nil
}

// waitFolded waits (briefly) until the job has an event past seq, after a
// conflict says the stream has one this instance has not folded yet.
func (s *Service) waitFolded(ctx context.Context, id string, seq uint64) {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		s.mu.Lock()
		j := s.jobs[id]
		moved := j != nil && j.LastSeq > seq
		s.mu.Unlock()
		if moved {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lastSeq(j *Job) uint64 {
	if j == nil {
		return 0
	}
	return j.LastSeq
}
