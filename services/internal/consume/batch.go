package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"
)

// Batch mode: for a consumer whose writes are cheap only in bulk (the
// projector: every ClickHouse insert makes a part). A reader goroutine
// prepares each event once, in delivery order, while the previous batch is
// written; a batch is written when it holds BatchSize events or
// BatchTimeout after its first, and on a durable consumer its messages are
// acked only after Write accepted it. The policies are the Follower's:
//
//   - Prepare refusing an event (an error, or a panic) and Write naming it
//     in its rejections make it poison: recorded on REJECTED and terminated.
//   - Write failing is transient: the same batch is written again after the
//     backoff, its messages kept in progress meanwhile (so JetStream does not
//     redeliver them) and the failure reported by Status until no batch is
//     failing. A batch written meanwhile (the server is back) cuts the
//     backoff of the others short. Write panicking is searched by halves for
//     the event it panics on, which is poison.
//   - An error marked by Fatal ends Run with nothing acked.

// Item is one event of a batch: the message and what Prepare made of it.
type Item[T any] struct {
	Msg
	Value T

	msg     jetstream.Msg
	poison  error  // set when Prepare refused the event
	pending uint64 // the stream's events after it, not yet delivered
}

// Rejection names an event of a batch Write could not apply, for good.
type Rejection struct {
	Seq    uint64
	Reason string
}

// BatchConfig is what a Batcher reads and how.
type BatchConfig[T any] struct {
	// Stream is the stream to read.
	Stream string
	// Durable names the durable pull consumer (explicit ack) that keeps the
	// position; Description, AckWait and MaxAckPending complete it. Empty:
	// an ordered consumer that acks nothing (a replay), from From or
	// FromTime.
	Durable, Description string
	AckWait              time.Duration
	MaxAckPending        int
	From                 uint64
	FromTime             time.Time
	// Until, when set, ends Run (with nil) once the event with this
	// sequence is written; with an ordered consumer only.
	Until uint64
	// BatchSize and BatchTimeout bound a batch (defaults 1000 and 200 ms).
	BatchSize    int
	BatchTimeout time.Duration
	// Parallel is how many batches are written at once (default 1); they
	// are acked in the order they were read, each once Write accepted it
	// and every batch before it is done with. MaxAckPending must leave room
	// for them.
	Parallel int
	// Source and EventSource name the consumer on REJECTED, as in Config.
	Source, EventSource string
	// NoRecord logs and counts poison without recording it on REJECTED (a
	// replay: the live consumer recorded it).
	NoRecord bool
	// Prepare makes the batch's value of one event, in delivery order, as
	// the event arrives; an error makes the event poison (its reason is
	// the error's text). m.Event is not decoded: Prepare decodes what it
	// needs.
	Prepare func(m Msg) (T, error)
	// Write applies a batch of prepared events (the poison ones left out).
	// It returns the events it refused for good, and an error for a
	// failure worth trying again (or one marked by Fatal).
	Write func(ctx context.Context, batch []Item[T]) ([]Rejection, error)
	// Written, when set, is told about every batch done with (written and
	// acked): its events, and how many of them were poison.
	Written func(batch []Item[T], poison int)
	// Log receives warnings; nil discards them.
	Log *slog.Logger
	// NewBackOff is the pause between attempts (nil: DefaultBackOff).
	NewBackOff func() backoff.BackOff
}

// Batcher follows a stream in batches (Run) and says how far it is.
type Batcher[T any] struct {
	progress
	js  jetstream.JetStream
	cfg BatchConfig[T]
	log *slog.Logger
	rej rejecter
	rt  retries
}

// retries is what the batches being written again share: how many are
// failing, and a channel closed when one of the batches goes in, so the
// others try again at once rather than wait out their backoff.
type retries struct {
	mu      sync.Mutex
	failing int
	wake    chan struct{}
}

// waiter is closed when a batch is next written.
func (r *retries) waiter() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.wake == nil {
		r.wake = make(chan struct{})
	}
	return r.wake
}

func (r *retries) any() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failing > 0
}

// failed counts a batch that failed (once, on its first failure).
func (r *retries) failed() {
	r.mu.Lock()
	r.failing++
	r.mu.Unlock()
}

// written wakes the batches waiting to try again; failed says this batch
// had failed before. It returns how many batches are still failing.
func (r *retries) written(failed bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if failed {
		r.failing--
	}
	if r.wake != nil {
		close(r.wake)
		r.wake = nil
	}
	return r.failing
}

// gaveUp uncounts a failed batch that stops trying (ctx ended, Fatal).
func (r *retries) gaveUp() {
	r.mu.Lock()
	r.failing--
	r.mu.Unlock()
}

// NewBatcher returns a batch follower of cfg.Stream; Run follows it.
func NewBatcher[T any](js jetstream.JetStream, cfg BatchConfig[T]) *Batcher[T] {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.NewBackOff == nil {
		cfg.NewBackOff = DefaultBackOff
	}
	if cfg.BatchSize < 1 {
		cfg.BatchSize = 1000
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = 200 * time.Millisecond
	}
	if cfg.Parallel < 1 {
		cfg.Parallel = 1
	}
	log := cfg.Log.With("stream", cfg.Stream)
	b := &Batcher[T]{js: js, cfg: cfg, log: log}
	b.init(cfg.Stream, cfg.From)
	b.rej = rejecter{js: js, source: cfg.Source, eventSource: cfg.EventSource, log: log, count: &b.rejected, noRecord: cfg.NoRecord}
	return b
}

// Run reads and writes batches until ctx ends or, with Until, the last
// event is written (it returns nil then), or Write fails with an error
// marked by Fatal (returned). A consumer that cannot be created or fails is
// created again after the backoff.
func (b *Batcher[T]) Run(ctx context.Context) error {
	return restart(ctx, b.log, &b.progress, b.cfg.NewBackOff, b.follow)
}

// pullExpiry is how long one pull request of a Batcher waits on the server.
const pullExpiry = 5 * time.Second

// PullBuffer is how many messages a batch follower asks JetStream for at
// once: a batch's worth, within bounds.
func PullBuffer(batchSize int) int { return min(max(batchSize, 100), 50_000) }

// consumer creates the durable or ordered consumer to read from, and says
// whether there is nothing left to read (ordered, with Until).
func (b *Batcher[T]) consumer(ctx context.Context) (jetstream.Consumer, bool, error) {
	if b.cfg.Durable != "" {
		cons, err := b.js.CreateOrUpdateConsumer(ctx, b.cfg.Stream, jetstream.ConsumerConfig{
			Durable:       b.cfg.Durable,
			Description:   b.cfg.Description,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       b.cfg.AckWait,
			// Poison is terminated here, after it is recorded on
			// REJECTED, so deliveries are not capped.
			MaxDeliver:    -1,
			MaxAckPending: b.cfg.MaxAckPending,
		})
		if err != nil {
			return nil, false, fmt.Errorf("create consumer %s on %s: %w", b.cfg.Durable, b.cfg.Stream, err)
		}
		info := cons.CachedInfo()
		if floor := info.AckFloor.Stream; floor > b.applied.Load() {
			b.applied.Store(floor)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			b.markCaughtUp()
		}
		return cons, false, nil
	}
	if b.cfg.Until > 0 && b.applied.Load() >= b.cfg.Until {
		return nil, true, nil
	}
	cc := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	switch next := b.applied.Load() + 1; {
	case next > 1:
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, next
	case !b.cfg.FromTime.IsZero():
		t := b.cfg.FromTime
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	cons, err := b.js.OrderedConsumer(ctx, b.cfg.Stream, cc)
	if err != nil {
		return nil, false, fmt.Errorf("ordered consumer on %s: %w", b.cfg.Stream, err)
	}
	return cons, b.cfg.Until > 0 && cons.CachedInfo().NumPending == 0, nil
}

// follow is one consumer's life: a reader goroutine prepares messages into
// items while this one batches and writes them.
func (b *Batcher[T]) follow(ctx context.Context) (bool, error) {
	if !b.caught.Load() {
		info, err := StreamInfo(ctx, b.js, b.cfg.Stream)
		if err != nil {
			return false, err
		}
		b.target.Store(info.State.LastSeq)
		if b.applied.Load() >= info.State.LastSeq {
			b.markCaughtUp()
		}
	}
	cons, done, err := b.consumer(ctx)
	if err != nil || done {
		return done, err
	}
	// A pull request can be lost (sent to a consumer on a fresh cluster
	// before it has a leader); the client sees it by the missing heartbeat,
	// half the expiry, and pulls again: 5 s, not nats.go's 30.
	it, err := cons.Messages(jetstream.PullMaxMessages(PullBuffer(b.cfg.BatchSize)), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		return false, fmt.Errorf("read %s: %w", b.cfg.Stream, err)
	}
	defer it.Stop()
	b.setErr(nil)

	items := make(chan Item[T], b.cfg.BatchSize)
	readErr := make(chan error, 1)
	rctx, cancelRead := context.WithCancel(ctx)
	defer cancelRead()
	stop := context.AfterFunc(rctx, it.Stop)
	defer stop()
	go func() {
		defer close(items)
		readErr <- b.read(rctx, it, items)
	}()

	w := &inFlight[T]{b: b, sem: make(chan struct{}, b.cfg.Parallel), prev: closed(), fail: make(chan struct{})}
	defer w.wg.Wait()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var timerC <-chan time.Time
	var batch []Item[T]
	flush := func() error {
		timer.Stop()
		timerC = nil
		if len(batch) == 0 {
			return nil
		}
		err := w.dispatch(ctx, batch)
		batch = make([]Item[T], 0, len(batch))
		return err
	}
	for {
		select {
		case item, ok := <-items:
			if !ok {
				err := <-readErr
				if ferr := flush(); ferr != nil {
					return false, ferr
				}
				if ferr := w.wait(); ferr != nil {
					return false, ferr
				}
				if err == nil && ctx.Err() == nil {
					return true, nil // Until reached
				}
				return false, err
			}
			batch = append(batch, item)
			if len(batch) == 1 {
				timer.Reset(b.cfg.BatchTimeout)
				timerC = timer.C
			}
			if len(batch) >= b.cfg.BatchSize {
				if err := flush(); err != nil {
					return false, err
				}
			}
		case <-timerC:
			if err := flush(); err != nil {
				return false, err
			}
		case <-w.fail:
			cancelRead()
			return false, w.wait()
		case <-ctx.Done():
			// A clean stop hands back what was read, so another
			// instance (or this one restarted) gets it at once.
			cancelRead()
			b.release(batch)
			for item := range items {
				b.release([]Item[T]{item})
			}
			return false, nil
		}
	}
}

func closed() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// inFlight writes up to Parallel batches at once and commits them (acks,
// REJECTED records, progress) in the order they were read, so nothing read
// after a batch that failed for good is acked.
type inFlight[T any] struct {
	b    *Batcher[T]
	sem  chan struct{}
	prev chan struct{} // closed once the last batch dispatched is done with
	wg   sync.WaitGroup

	once sync.Once
	fail chan struct{} // closed on the first Fatal error (err)
	err  error
}

// dispatch starts writing batch once fewer than Parallel batches are in
// flight; it returns the Fatal error of an earlier batch, if any.
func (w *inFlight[T]) dispatch(ctx context.Context, batch []Item[T]) error {
	select {
	case w.sem <- struct{}{}:
	case <-w.fail:
		return w.wait()
	}
	prev, done := w.prev, make(chan struct{})
	w.prev = done
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() { <-w.sem }()
		defer close(done)
		if err := w.b.flush(ctx, batch, prev, w.fail); err != nil {
			w.once.Do(func() {
				w.err = err
				close(w.fail)
			})
		}
	}()
	return nil
}

// wait waits for the batches in flight and returns the Fatal error of one
// of them, if any.
func (w *inFlight[T]) wait() error {
	w.wg.Wait()
	select {
	case <-w.fail:
		return w.err
	default:
		return nil
	}
}

// read is the reader goroutine: it prepares each message and hands it on.
// It returns nil when ctx ends or the Until event was read.
func (b *Batcher[T]) read(ctx context.Context, it jetstream.MessagesContext, out chan<- Item[T]) error {
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read %s: %w", b.cfg.Stream, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("message metadata: %w", err)
		}
		seq := md.Sequence.Stream
		item := Item[T]{Msg: Msg{Stream: b.cfg.Stream, Seq: seq, Subject: m.Subject(), Stored: md.Timestamp, Data: m.Data()}}
		if b.cfg.Durable != "" {
			item.msg = m
		} else if seq <= b.applied.Load() {
			continue // written before the consumer was recreated
		}
		item.pending = md.NumPending
		item.Value, item.poison = b.prepare(item.Msg)
		select {
		case out <- item:
		case <-ctx.Done():
			b.release([]Item[T]{item})
			return nil
		}
		if b.cfg.Until > 0 && seq >= b.cfg.Until {
			return nil
		}
	}
}

// prepare runs Prepare, turning a panic into poison.
func (b *Batcher[T]) prepare(m Msg) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			b.log.Error("prepare panicked", "stream_seq", m.Seq, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("prepare panicked: %v", p)
		}
	}()
	return b.cfg.Prepare(m)
}

// flush writes one batch until Write accepts it, waits for the batch
// before it (prev) to be done with, then acks it and records its poison. It
// returns an error only for a Fatal one; when ctx ends it hands the batch
// back, and after an earlier batch's Fatal error (fail) it does nothing.
func (b *Batcher[T]) flush(ctx context.Context, batch []Item[T], prev, fail <-chan struct{}) error {
	good := make([]Item[T], 0, len(batch))
	poison := map[uint64]string{}
	for _, it := range batch {
		if it.poison != nil {
			poison[it.Seq] = it.poison.Error()
		} else {
			good = append(good, it)
		}
	}
	refused, err := b.write(ctx, good, batch)
	<-prev
	select {
	case <-fail:
		return nil // as if the process had stopped at the failed batch
	default:
	}
	if err != nil {
		if fe := (*fatalError)(nil); errors.As(err, &fe) {
			return err
		}
		b.release(batch) // only ctx's end stops write
		return nil
	}
	for _, r := range refused {
		if _, ok := poison[r.Seq]; !ok {
			poison[r.Seq] = r.Reason
		}
	}
	for _, it := range batch {
		if reason, ok := poison[it.Seq]; ok {
			if err := b.rej.reject(ctx, it.Msg, errors.New(reason)); err != nil {
				b.release([]Item[T]{it}) // it comes again and is rejected again
				continue
			}
			if it.msg != nil {
				if err := it.msg.TermWithReason(truncate(b.cfg.Source+": "+reason, 200)); err != nil {
					b.log.Debug("term failed", "stream_seq", it.Seq, "err", err)
				}
			}
			continue
		}
		if it.msg != nil {
			// A lost ack only means a redelivery, which Write absorbs.
			if err := it.msg.Ack(); err != nil {
				b.log.Debug("ack failed", "stream_seq", it.Seq, "err", err)
			}
		}
	}
	last := batch[len(batch)-1]
	if last.Seq > b.applied.Load() {
		b.applied.Store(last.Seq)
	}
	b.pending.Store(last.pending)
	if !b.caught.Load() && (b.pending.Load() == 0 || b.applied.Load() >= b.target.Load()) {
		b.markCaughtUp()
	}
	if b.cfg.Written != nil {
		b.cfg.Written(batch, len(poison))
	}
	return nil
}

// write calls Write until it accepts the batch, with the backoff between
// attempts; it returns an error only when ctx ends or for a Fatal one.
func (b *Batcher[T]) write(ctx context.Context, items, held []Item[T]) ([]Rejection, error) {
	if len(items) == 0 {
		return nil, nil
	}
	bo := b.cfg.NewBackOff()
	keptAlive := time.Now()
	failed := false
	defer func() {
		if failed {
			b.rt.gaveUp() // written() uncounted it otherwise
		}
	}()
	for attempt := 1; ; attempt++ {
		// Taken before the attempt, so a batch written while this one
		// fails still wakes it.
		var wake <-chan struct{}
		if failed || b.rt.any() {
			wake = b.rt.waiter()
		}
		refused, err := b.call(ctx, items)
		if err == nil {
			if failed || wake != nil {
				stillFailing := b.rt.written(failed)
				failed = false
				if attempt > 1 {
					b.log.Info("batch written after failures", "attempts", attempt)
				}
				if stillFailing == 0 {
					b.setErr(nil)
				}
			}
			return refused, nil
		}
		if fe := (*fatalError)(nil); errors.As(err, &fe) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !failed {
			failed = true
			b.rt.failed()
		}
		b.setErr(fmt.Errorf("write: %w", err))
		if attempt == 1 || attempt%10 == 0 {
			b.log.Warn("batch not written; trying again", "events", len(items), "attempt", attempt, "err", err)
		}
		b.keepalive(held, &keptAlive)
		if wake == nil {
			wake = b.rt.waiter()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(bo.NextBackOff()):
		case <-wake:
			b.log.Debug("another batch went in; trying again now")
		}
	}
}

// call runs Write. A panic is searched for by halves: the event Write
// panics on alone is refused, the rest is written.
func (b *Batcher[T]) call(ctx context.Context, items []Item[T]) (refused []Rejection, err error) {
	panicked := func() (p any) {
		defer func() { p = recover() }()
		refused, err = b.cfg.Write(ctx, items)
		return nil
	}()
	if panicked == nil {
		return refused, err
	}
	if len(items) == 1 {
		b.log.Error("write panicked", "stream_seq", items[0].Seq, "panic", panicked, "stack", string(debug.Stack()))
		return []Rejection{{Seq: items[0].Seq, Reason: fmt.Sprintf("write panicked: %v", panicked)}}, nil
	}
	mid := len(items) / 2
	left, err := b.call(ctx, items[:mid])
	if err != nil {
		return nil, err
	}
	right, err := b.call(ctx, items[mid:])
	return append(left, right...), err
}

// keepalive marks the messages of a batch in progress, at most every
// third of AckWait, while Write is retried.
func (b *Batcher[T]) keepalive(held []Item[T], keptAlive *time.Time) {
	if b.cfg.Durable == "" || b.cfg.AckWait <= 0 || time.Since(*keptAlive) < b.cfg.AckWait/3 {
		return
	}
	*keptAlive = time.Now()
	for _, it := range held {
		_ = it.msg.InProgress()
	}
}

// release hands messages back (a clean stop, or poison not recorded), so
// they come again without waiting for AckWait.
func (b *Batcher[T]) release(items []Item[T]) {
	for _, it := range items {
		if it.msg != nil {
			_ = it.msg.Nak()
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
