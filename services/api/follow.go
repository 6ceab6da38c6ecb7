package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// follower keeps one stream's fold up to date: an ordered consumer from the
// start of the stream (the read model is rebuilt from the log on every
// start; it is in memory and nobody else depends on it), refreshed on every
// event. After a failure it starts again after the last applied sequence.
type follower struct {
	stream string
	apply  func(seq uint64, subject string, data []byte) error
	// target is the stream's last sequence when following began; the fold
	// has caught up once it applied that far.
	target  atomic.Uint64
	applied atomic.Uint64
	caught  atomic.Bool
	// caughtUp is closed once, when the fold first catches up.
	caughtUp chan struct{}
	once     sync.Once
	onErr    func(seq uint64, err error)
}

func newFollower(stream string, apply func(seq uint64, subject string, data []byte) error, onErr func(uint64, error)) *follower {
	return &follower{stream: stream, apply: apply, caughtUp: make(chan struct{}), onErr: onErr}
}

// status says how far the fold is, for /readyz.
func (f *follower) status() error {
	if f.caught.Load() {
		return nil
	}
	return fmt.Errorf("replaying %s: at sequence %d of %d", f.stream, f.applied.Load(), f.target.Load())
}

func (f *follower) markCaughtUp() {
	f.once.Do(func() {
		f.caught.Store(true)
		close(f.caughtUp)
	})
}

// run follows the stream until ctx ends. A consumer that cannot be created
// (the stream is missing, JetStream is not ready) is tried again with a
// growing pause; the error is reported through report meanwhile.
func (f *follower) run(ctx context.Context, js jetstream.JetStream, report func(error)) {
	pause := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := f.once1(ctx, js)
		if ctx.Err() != nil {
			return
		}
		report(fmt.Errorf("follow %s: %w", f.stream, err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		if pause < 5*time.Second {
			pause *= 2
		}
	}
}

// once1 is one attempt: read the target, create the ordered consumer from
// the next unapplied sequence, apply until ctx ends or the consumer fails.
func (f *follower) once1(ctx context.Context, js jetstream.JetStream) error {
	var last uint64
	err := events.Retry(ctx, 3, func(ctx context.Context) error {
		s, err := js.Stream(ctx, f.stream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		last = info.State.LastSeq
		return nil
	})
	if err != nil {
		return fmt.Errorf("stream info: %w", err)
	}
	if !f.caught.Load() {
		f.target.Store(last)
		if f.applied.Load() >= last {
			f.markCaughtUp()
		}
	}
	cfg := jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   f.applied.Load() + 1,
		// No NamePrefix: ordered consumers' names must be unique, and
		// several api instances may follow the same stream.
	}
	cons, err := js.OrderedConsumer(ctx, f.stream, cfg)
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	failed := make(chan error, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			return
		}
		seq := meta.Sequence.Stream
		if seq <= f.applied.Load() {
			return // already applied before a restart of the consumer
		}
		if err := f.apply(seq, m.Subject(), m.Data()); err != nil && f.onErr != nil {
			f.onErr(seq, err)
		}
		f.applied.Store(seq)
		if !f.caught.Load() && (meta.NumPending == 0 || seq >= f.target.Load()) {
			f.markCaughtUp()
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		// The ordered consumer recreates itself after most errors; a
		// closed connection or a deleted stream ends it.
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrStreamNotFound) {
			select {
			case failed <- err:
			default:
			}
		}
	}))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()
	select {
	case <-ctx.Done():
		return nil
	case err := <-failed:
		return err
	case <-cc.Closed():
		return fmt.Errorf("consumer closed")
	}
}
