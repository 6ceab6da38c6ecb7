package ruleeval

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
)

// Record is one message of a stream: its sequence, raw bytes and, if they
// decode, the envelope (DecodeErr otherwise).
type Record struct {
	Stream    string
	Seq       uint64
	Subject   string
	Raw       []byte
	Stored    time.Time // when the stream stored it
	Event     events.Event
	DecodeErr error
}

// Reader reads a stream once through, in order, with an ordered consumer
// (no durable state on the server): from a sequence up to the message that
// was last when it opened. It is for history read to an end (a backtest,
// the ALERTS fold of a restart); a consumer that follows the live log uses
// services/internal/consume.
type Reader struct {
	stream string
	iter   jetstream.MessagesContext
	// Last is the stream's last sequence when the reader was opened.
	Last uint64
	done bool
}

// OpenReader starts reading stream at sequence from (1 or 0: the start);
// Next reports the end after the message that was last when it opened.
func OpenReader(ctx context.Context, js jetstream.JetStream, stream string, from uint64) (*Reader, error) {
	var info *jetstream.StreamInfo
	err := events.Retry(ctx, 5, func(ctx context.Context) error {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		info, err = s.Info(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", stream, err)
	}
	r := &Reader{stream: stream, Last: info.State.LastSeq}
	if info.State.Msgs == 0 || from > r.Last {
		r.done = true
		return r, nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	var cons jetstream.Consumer
	err = events.Retry(ctx, 5, func(ctx context.Context) error {
		var err error
		cons, err = js.OrderedConsumer(ctx, stream, cfg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer on %s: %w", stream, err)
	}
	r.iter, err = cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	return r, nil
}

// Next returns the next record; ok is false at the end or when ctx ends.
func (r *Reader) Next(ctx context.Context) (Record, bool, error) {
	if r.done {
		return Record{}, false, nil
	}
	msg, err := r.iter.Next(jetstream.NextContext(ctx))
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return Record{}, false, ctx.Err()
		}
		return Record{}, false, fmt.Errorf("read %s: %w", r.stream, err)
	}
	meta, err := msg.Metadata()
	if err != nil {
		return Record{}, false, fmt.Errorf("read %s: metadata: %w", r.stream, err)
	}
	rec := Record{Stream: r.stream, Seq: meta.Sequence.Stream, Subject: msg.Subject(), Raw: msg.Data(), Stored: meta.Timestamp}
	if rec.Seq > r.Last {
		r.done = true // past a bound set by StopAfter
		return Record{}, false, nil
	}
	rec.Event, rec.DecodeErr = events.Decode(rec.Raw)
	if rec.Seq >= r.Last {
		r.done = true
	}
	return rec, true, nil
}

// StopAfter makes Next report the end after the message at seq, if that
// is before the stream's last when the reader opened.
func (r *Reader) StopAfter(seq uint64) {
	if seq < r.Last {
		r.Last = seq
	}
}

// Close stops the consumer.
func (r *Reader) Close() {
	if r.iter != nil {
		r.iter.Stop()
	}
}

// Source yields records in stream order; ok false is the end.
type Source func(ctx context.Context) (rec Record, ok bool, err error)

// ReplayOptions tune Replay.
type ReplayOptions struct {
	// TickInterval is the tick period; ticks happen at its multiples, as
	// in the service. 0 means no ticks.
	TickInterval time.Duration
	// TicksFrom: no tick before it (the warm-up folds events only).
	TicksFrom time.Time
	// To: events after it are not read, and ticks go on up to it. Zero
	// means up to the last event.
	To time.Time
	// OnPoison hears records the engine refused.
	OnPoison func(Record, error)
	// Switches are rule sets that took over during the history, in the
	// order they did: each is swapped in (Engine.SetRules, its
	// transitions emitted) where the live service swapped it in.
	Switches []RuleSwitch
}

// RuleSwitch is a rule set taking over from the one before it, where the
// alerting service's record of it (events.RulesLoadedData) says: the
// SHADOW and ROLLOUT events after ShadowSeq and RolloutSeq, and the ticks
// after EngineTime, ran Set.
type RuleSwitch struct {
	Set                   *rules.Set
	ShadowSeq, RolloutSeq uint64
	EngineTime            time.Time
}

// due says whether the switch took over before the next step of a replay:
// the event at seq of stream, or (stream "") the tick at tick.
func (s RuleSwitch) due(stream string, seq uint64, tick time.Time) bool {
	switch stream {
	case events.StreamShadow:
		return seq > s.ShadowSeq
	case events.StreamRollout:
		return seq > s.RolloutSeq
	}
	return tick.After(s.EngineTime)
}

// Replay runs recorded SHADOW and ROLLOUT history through the engine the
// way the service ran it live: both streams merged by event time (ROLLOUT
// first on a tie: a job starts before its desired states), and a tick at
// every multiple of TickInterval before the first event at or after it.
// Rule sets of o.Switches are swapped in before the first step they
// ran. Transitions go to emit in order.
func Replay(ctx context.Context, eng *Engine, shadow, rollout Source, o ReplayOptions, emit func(Transition)) error {
	r := &replayer{eng: eng, o: o, switches: o.Switches, emit: emit}
	heads := []*replayHead{{src: rollout, stream: events.StreamRollout}, {src: shadow, stream: events.StreamShadow}}
	for _, h := range heads {
		if err := h.next(ctx); err != nil {
			return err
		}
	}
	for {
		h := earliest(heads)
		if h == nil {
			break
		}
		t := replayTime(h.rec)
		if !o.To.IsZero() && t.After(o.To) {
			h.ok = false // the rest of this stream is later still
			continue
		}
		if !r.nextTick.IsZero() || !t.Before(o.TicksFrom) {
			r.tickUpTo(t)
		}
		r.apply(h.stream, h.rec)
		if err := h.next(ctx); err != nil {
			return err
		}
	}
	if !o.To.IsZero() {
		r.tickUpTo(o.To)
	}
	return nil
}

// replayHead is the next record of one stream of a replay.
type replayHead struct {
	src    Source // nil: the stream is not replayed
	stream string
	rec    Record
	ok     bool // rec is a record; false once src is done
}

func (h *replayHead) next(ctx context.Context) error {
	if h.src == nil {
		return nil
	}
	var err error
	h.rec, h.ok, err = h.src(ctx)
	return err
}

// earliest is the head whose record comes first (the first of heads on a
// tie), nil when every stream is done.
func earliest(heads []*replayHead) *replayHead {
	var pick *replayHead
	for _, h := range heads {
		if h.ok && (pick == nil || replayTime(h.rec).Before(replayTime(pick.rec))) {
			pick = h
		}
	}
	return pick
}

// replayTime is when a record took effect live: its event time, or when
// it was stored for one that does not decode.
func replayTime(r Record) time.Time {
	if r.DecodeErr != nil {
		return r.Stored
	}
	return r.Event.Time
}

// replayer is the engine's side of a replay: the rule switches still to
// come and the next tick.
type replayer struct {
	eng      *Engine
	o        ReplayOptions
	switches []RuleSwitch
	nextTick time.Time // zero until the first tick is placed
	emit     func(Transition)
}

// switchBefore swaps in every rule set that took over before the event at
// seq of stream, or (stream "") the tick at tick.
func (r *replayer) switchBefore(stream string, seq uint64, tick time.Time) {
	for len(r.switches) > 0 && r.switches[0].due(stream, seq, tick) {
		r.emitAll(r.eng.SetRules(r.switches[0].Set))
		r.switches = r.switches[1:]
	}
}

// tickUpTo runs every tick due at or before t (none before TicksFrom).
func (r *replayer) tickUpTo(t time.Time) {
	interval := r.o.TickInterval
	if interval <= 0 {
		return
	}
	if r.nextTick.IsZero() {
		start := t
		if start.Before(r.o.TicksFrom) {
			start = r.o.TicksFrom
		}
		r.nextTick = start.Truncate(interval)
		if r.nextTick.Before(start) {
			r.nextTick = r.nextTick.Add(interval)
		}
	}
	for ; !r.nextTick.After(t); r.nextTick = r.nextTick.Add(interval) {
		if r.nextTick.Before(r.o.TicksFrom) {
			continue
		}
		r.switchBefore("", 0, r.nextTick)
		_, trs, _ := r.eng.RunTick(r.nextTick, nil)
		r.emitAll(trs)
	}
}

// apply runs one record of stream through the engine; one it cannot apply
// goes to OnPoison.
func (r *replayer) apply(stream string, rec Record) {
	r.switchBefore(stream, rec.Seq, time.Time{})
	var trs []Transition
	var err error
	switch {
	case rec.DecodeErr != nil:
		r.eng.Skip(rec.Stream, rec.Seq)
		err = &PoisonError{Err: rec.DecodeErr}
	case stream == events.StreamRollout:
		trs, err = r.eng.ApplyRollout(rec.Seq, rec.Event)
	default:
		trs, err = r.eng.ApplyShadow(rec.Seq, rec.Event)
	}
	if err != nil && r.o.OnPoison != nil {
		r.o.OnPoison(rec, err)
	}
	r.emitAll(trs)
}

func (r *replayer) emitAll(trs []Transition) {
	for _, tr := range trs {
		r.emit(tr)
	}
}

// BacktestOptions tune Backtest.
type BacktestOptions struct {
	// From and To bound the transitions reported (zero: unbounded); the
	// history before From is replayed too, to build the state at From.
	From, To time.Time
	// TickInterval is the service's tick_interval; 0 means no ticks.
	TickInterval time.Duration
	// Warmup is how long before From ticks start (ticks over years of
	// history cost time; before this only events are replayed). Negative:
	// ticks over the whole history, as the live service ran them.
	Warmup time.Duration
	// OfflineAfter is the service's offline_after.
	OfflineAfter time.Duration
	// OnPoison hears records the engine refused.
	OnPoison func(Record, error)
	// Switches are rule sets that took over during the history (the
	// first set is the one passed to Backtest).
	Switches []RuleSwitch
	// Progress, if set, hears how far the replay has read about every
	// ProgressEvery (default a second), and once at the end.
	Progress      func(BacktestProgress)
	ProgressEvery time.Duration
}

// BacktestProgress is how far a backtest has read.
type BacktestProgress struct {
	// ShadowSeq and RolloutSeq are the last sequences read; ShadowLast
	// and RolloutLast the streams' last when the backtest began.
	ShadowSeq, ShadowLast, RolloutSeq, RolloutLast uint64
	Elapsed                                        time.Duration
	Done                                           bool
}

// Backtest replays the recorded SHADOW and ROLLOUT history, as it is when
// called, through a fresh engine running set, and returns the transitions
// at or after From. It publishes nothing.
func Backtest(ctx context.Context, js jetstream.JetStream, set *rules.Set, o BacktestOptions) ([]Transition, *Engine, error) {
	eng := New(set, Options{OfflineAfter: o.OfflineAfter})
	shadow, err := OpenReader(ctx, js, events.StreamShadow, 1)
	if err != nil {
		return nil, nil, err
	}
	defer shadow.Close()
	rollout, err := OpenReader(ctx, js, events.StreamRollout, 1)
	if err != nil {
		return nil, nil, err
	}
	defer rollout.Close()
	var ticksFrom time.Time
	if !o.From.IsZero() && o.Warmup >= 0 {
		ticksFrom = o.From.Add(-o.Warmup)
	}
	p := BacktestProgress{ShadowLast: shadow.Last, RolloutLast: rollout.Last}
	began, last := time.Now(), time.Now()
	every := o.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	counted := func(next Source, seq *uint64) Source {
		if o.Progress == nil {
			return next
		}
		return func(ctx context.Context) (Record, bool, error) {
			rec, ok, err := next(ctx)
			if ok {
				*seq = rec.Seq
				if now := time.Now(); now.Sub(last) >= every {
					last, p.Elapsed = now, now.Sub(began)
					o.Progress(p)
				}
			}
			return rec, ok, err
		}
	}
	var out []Transition
	err = Replay(ctx, eng, counted(shadow.Next, &p.ShadowSeq), counted(rollout.Next, &p.RolloutSeq), ReplayOptions{
		TickInterval: o.TickInterval, TicksFrom: ticksFrom, To: o.To, OnPoison: o.OnPoison, Switches: o.Switches,
	}, func(t Transition) {
		if !t.At.Before(o.From) {
			out = append(out, t)
		}
	})
	if o.Progress != nil && err == nil {
		p.Elapsed, p.Done = time.Since(began), true
		o.Progress(p)
	}
	return out, eng, err
}
