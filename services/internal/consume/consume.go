// Package consume is the one loop that follows a stream of the log for a
// consumer that folds it: an ordered consumer from a sequence on, recreated
// after a failure with one backoff policy, one rule for "caught up", and
// one policy for an event that cannot be handled.
//
// Every event is decoded once (events.Decode) and handed to the handler in
// stream order. What the handler's answer means:
//
//   - nil: applied; the follower moves on.
//   - an error wrapped by Poison, an envelope that does not decode, or a
//     panic in the handler: the event can never be applied. It is recorded
//     on the REJECTED stream (rejected.{source}, events.NewRejected, with
//     the stream, sequence, raw bytes and reason) and the follower moves on,
//     so one bad event does not stop a consumer for everyone.
//   - any other error: transient. The same event is handed over again after
//     a backoff (exponential with jitter, 100 ms up to 5 s).
//
// Caught up means: the follower applied every event that was in the stream
// when it started following (its last sequence then). Until then Status
// says how far it is, for /readyz; Applied and Lag are its metrics.
//
// A Batcher (NewBatcher) is the same loop for a consumer that writes in
// bulk: a durable pull consumer (or an ordered one, for a replay), events
// prepared one by one as they arrive and written in batches bounded by size
// and time, acked only after the write, with the same poison, panic,
// backoff and caught-up rules (see batch.go).
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// Msg is one event of the stream, decoded.
type Msg struct {
	Stream  string
	Seq     uint64
	Subject string
	// Stored is when the stream stored it.
	Stored time.Time
	// Data is the message as stored; Event its envelope.
	Data  []byte
	Event events.Event
	// Header is the message's headers (nil when it has none).
	Header nats.Header
}

// Poison marks err as permanent for the event at hand: the event is
// recorded on REJECTED and the follower moves on.
func Poison(err error) error { return &poisonError{err} }

type poisonError struct{ err error }

func (e *poisonError) Error() string { return e.err.Error() }
func (e *poisonError) Unwrap() error { return e.err }

// IsPoison reports whether err was marked by Poison.
func IsPoison(err error) bool {
	var p *poisonError
	return errors.As(err, &p)
}

// Config is what to follow and how.
type Config struct {
	// Stream is the stream to follow.
	Stream string
	// From is the first sequence to hand over (0 or 1: the start).
	From uint64
	// Source names the consumer on REJECTED: rejected.{Source}, with
	// EventSource as the envelope's source (events.SourceAlerting, ...).
	Source, EventSource string
	// Handle applies one event (see the package doc for its errors).
	Handle func(ctx context.Context, m Msg) error
	// Log receives the follower's warnings; nil discards them.
	Log *slog.Logger
	// Subjects, when set, hands over only the messages on these subjects
	// (wildcards allowed): the ordered consumer's filter.
	Subjects []string
	// Raw hands every message over undecoded (Msg.Event is zero), one
	// that is not an envelope included: for a consumer of the stored bytes
	// themselves (the audit chain), for which no message is poison.
	Raw bool
	// NewBackOff makes the backoff between attempts; nil is exponential
	// with jitter from 100 ms to 5 s.
	NewBackOff func() backoff.BackOff
}

// Follower follows one stream (Run) and says how far it is.
type Follower struct {
	progress
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger
	rej rejecter
}

// progress is how far a follower is (Follower and Batcher share it): what
// Applied, Lag, Rejected, CaughtUp and Status report.
type progress struct {
	stream   string
	applied  atomic.Uint64 // the last sequence handed over and done with
	target   atomic.Uint64 // the stream's last sequence when following began
	pending  atomic.Uint64 // events behind the last one handled
	caught   atomic.Bool
	caughtUp chan struct{}
	once     sync.Once
	rejected atomic.Uint64

	mu      sync.Mutex
	lastErr error // the last failure to follow; nil while following
}

// init sets up p for stream, with from the first sequence to hand over.
func (p *progress) init(stream string, from uint64) {
	p.stream, p.caughtUp = stream, make(chan struct{})
	if from > 1 {
		p.applied.Store(from - 1)
	}
}

// New returns a follower of cfg.Stream; Run follows it.
func New(js jetstream.JetStream, cfg Config) *Follower {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.NewBackOff == nil {
		cfg.NewBackOff = DefaultBackOff
	}
	log := cfg.Log.With("stream", cfg.Stream)
	f := &Follower{js: js, cfg: cfg, log: log}
	f.init(cfg.Stream, cfg.From)
	f.rej = rejecter{js: js, source: cfg.Source, eventSource: cfg.EventSource, log: log, count: &f.rejected}
	return f
}

// DefaultBackOff is the backoff of every follower: exponential with jitter
// from 100 ms to 5 s, never giving up.
func DefaultBackOff() backoff.BackOff { return ExponentialBackOff(100*time.Millisecond, 5*time.Second) }

// ExponentialBackOff is the followers' policy with other bounds (tests
// shorten them): exponential with jitter from initial to max, never giving
// up.
func ExponentialBackOff(initial, max time.Duration) backoff.BackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = initial
	b.MaxInterval = max
	return b
}

// Applied is the last sequence handled (applied or rejected).
func (f *progress) Applied() uint64 { return f.applied.Load() }

// Lag is how many events of the stream wait behind the last one handled.
func (f *progress) Lag() uint64 { return f.pending.Load() }

// Rejected counts the events recorded on REJECTED.
func (f *progress) Rejected() uint64 { return f.rejected.Load() }

// CaughtUp is closed once the follower has handled every event that was
// in the stream when it began.
func (f *progress) CaughtUp() <-chan struct{} { return f.caughtUp }

// Status is nil once caught up and following; otherwise it says why not.
func (f *progress) Status() error {
	f.mu.Lock()
	err := f.lastErr
	f.mu.Unlock()
	if err != nil {
		return fmt.Errorf("follow %s: %w", f.stream, err)
	}
	if !f.caught.Load() {
		return fmt.Errorf("replaying %s: at sequence %d of %d", f.stream, f.applied.Load(), f.target.Load())
	}
	return nil
}

func (f *progress) setErr(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
}

func (f *progress) markCaughtUp() {
	f.once.Do(func() {
		f.caught.Store(true)
		close(f.caughtUp)
	})
}

// Run follows the stream until ctx ends (it returns nil then). A consumer
// that cannot be created or fails is created again after the backoff, from
// the next sequence not yet handled.
func (f *Follower) Run(ctx context.Context) error {
	return restart(ctx, f.log, &f.progress, f.cfg.NewBackOff, func(ctx context.Context) (bool, error) {
		return false, f.follow(ctx)
	})
}

// restart is the one restart loop of every follower: it runs follow until
// ctx ends, follow says it is done, or it fails with an error marked by
// Fatal (returned as it is); any other failure is reported by Status and
// follow runs again after the backoff.
func restart(ctx context.Context, log *slog.Logger, p *progress, newBackOff func() backoff.BackOff, follow func(context.Context) (done bool, err error)) error {
	bo := newBackOff()
	for ctx.Err() == nil {
		began := time.Now()
		done, err := follow(ctx)
		if fe := (*fatalError)(nil); errors.As(err, &fe) {
			return fe.err
		}
		if done || ctx.Err() != nil {
			return nil
		}
		p.setErr(err)
		log.Warn("following failed; trying again", "err", err)
		if time.Since(began) > time.Minute {
			bo.Reset() // it followed for a while: start the backoff afresh
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(bo.NextBackOff()):
		}
	}
	return nil
}

// Fatal marks err as ending the follower: Run returns it at once, and
// nothing of the batch at hand is acked or handed back, as if the process
// had stopped there (tests use it to crash between a write and its acks).
func Fatal(err error) error { return &fatalError{err} }

type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// Retry calls op until it succeeds, pausing as newBackOff says (nil: the
// default) and logging the first failure and every tenth under what; it
// returns ctx's error when ctx ends first. It is the one retry loop for
// what a consumer needs before it can follow (a connection, a schema).
func Retry(ctx context.Context, log *slog.Logger, newBackOff func() backoff.BackOff, what string, op func(context.Context) error) error {
	if newBackOff == nil {
		newBackOff = DefaultBackOff
	}
	attempt := 0
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		attempt++
		err := op(ctx)
		if err != nil && ctx.Err() != nil {
			return struct{}{}, backoff.Permanent(ctx.Err())
		}
		return struct{}{}, err
	}, backoff.WithBackOff(newBackOff()), backoff.WithMaxElapsedTime(0), backoff.WithNotify(func(err error, _ time.Duration) {
		if log != nil && (attempt == 1 || attempt%10 == 0) {
			log.Warn(what+" failed; retrying", "attempt", attempt, "err", err)
		}
	}))
	return err
}

// follow is one consumer's life: it reads the target, then hands over
// events until ctx ends or the consumer fails.
func (f *Follower) follow(ctx context.Context) error {
	info, err := StreamInfo(ctx, f.js, f.cfg.Stream)
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	if !f.caught.Load() {
		f.target.Store(last)
		if f.applied.Load() >= last {
			f.markCaughtUp()
		}
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, FilterSubjects: f.cfg.Subjects}
	if next := f.applied.Load() + 1; next > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, next
	}
	cons, err := f.js.OrderedConsumer(ctx, f.cfg.Stream, cfg)
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	f.setErr(nil)
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("message metadata: %w", err)
		}
		seq := meta.Sequence.Stream
		if seq <= f.applied.Load() {
			continue // handled before the consumer was recreated
		}
		if err := f.handle(ctx, Msg{Stream: f.cfg.Stream, Seq: seq, Subject: m.Subject(), Stored: meta.Timestamp, Data: m.Data(), Header: m.Headers()}); err != nil {
			return err // only ctx ending stops handle
		}
		f.applied.Store(seq)
		f.pending.Store(meta.NumPending)
		if !f.caught.Load() && (meta.NumPending == 0 || seq >= f.target.Load()) {
			f.markCaughtUp()
		}
	}
}

// handle hands one event over until it is applied or rejected; it returns
// an error only when ctx ends.
func (f *Follower) handle(ctx context.Context, m Msg) error {
	if !f.cfg.Raw {
		ev, err := events.Decode(m.Data)
		if err != nil {
			_ = f.rej.reject(ctx, m, fmt.Errorf("decode event: %w", err))
			return nil
		}
		m.Event = ev
	}
	bo := f.cfg.NewBackOff()
	for {
		err := f.call(ctx, m)
		switch {
		case err == nil:
			return nil
		case IsPoison(err):
			_ = f.rej.reject(ctx, m, err)
			return nil
		}
		f.log.Warn("event not applied; trying again", "stream_seq", m.Seq, "event_id", m.Event.ID, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(bo.NextBackOff()):
		}
	}
}

// call runs the handler, turning a panic into poison.
func (f *Follower) call(ctx context.Context, m Msg) (err error) {
	defer func() {
		if p := recover(); p != nil {
			f.log.Error("handler panicked", "stream_seq", m.Seq, "panic", p, "stack", string(debug.Stack()))
			err = Poison(fmt.Errorf("handler panicked: %v", p))
		}
	}()
	return f.cfg.Handle(ctx, m)
}

// rejecter records events that can never be handled on REJECTED: the one
// place a consumer's REJECTED record is published.
type rejecter struct {
	js                  jetstream.JetStream
	source, eventSource string
	log                 *slog.Logger
	count               *atomic.Uint64
	// noRecord only logs and counts (a replay: the live consumer recorded
	// the event already).
	noRecord bool
}

// reject records the event on REJECTED. A failure to record is logged and
// returned: a Follower goes on either way (the event stays in its stream),
// a Batcher hands the message back to be rejected again.
func (r *rejecter) reject(ctx context.Context, m Msg, cause error) error {
	r.count.Add(1)
	r.log.Warn("event rejected", "stream_seq", m.Seq, "subject", m.Subject, "reason", cause)
	if r.noRecord {
		return nil
	}
	ev, err := events.NewRejectedEvent(r.source, r.eventSource, m.Stream, m.Seq, m.Stored, cause.Error(), m.Data)
	var b []byte
	if err == nil {
		b, err = ev.Marshal()
	}
	if err == nil {
		// Nats-Msg-Id makes a second record of the same event (after a
		// crash before the ack) a duplicate the stream drops.
		err = events.Retry(ctx, 3, func(ctx context.Context) error {
			_, err := r.js.Publish(ctx, ev.Subject, b, jetstream.WithMsgID(ev.ID))
			return err
		})
	}
	if err != nil {
		r.log.Error("record a rejected event", "stream_seq", m.Seq, "err", err)
		return fmt.Errorf("record rejected event %s seq %d: %w", m.Stream, m.Seq, err)
	}
	return nil
}
