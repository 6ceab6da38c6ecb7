package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// ReplayOptions choose what Replay re-projects.
type ReplayOptions struct {
	// Database receives the rows: the live database (rows collapse with
	// the ones already there) or a fresh one (created with the schema).
	Database string
	// Streams are the streams to replay (default: all the projector reads).
	Streams []string
	// FromSeq starts each stream at this stream sequence (sequences are per
	// stream, so it is most useful with one stream); 0 is the start.
	FromSeq uint64
	// FromTime starts each stream at the first event stored at or after it.
	FromTime time.Time
	// Progress, when set, is called about every ProgressEvery (default 1 s)
	// and once at the end.
	Progress      func(ReplayProgress)
	ProgressEvery time.Duration
}

// ReplayProgress is where a replay is.
type ReplayProgress struct {
	Elapsed time.Duration
	Streams []StreamProgress
	// Done is set on the last report.
	Done bool
}

// Events is the number of events replayed so far, over all streams.
func (p ReplayProgress) Events() uint64 {
	var n uint64
	for _, s := range p.Streams {
		n += s.Events
	}
	return n
}

// StreamProgress is where one stream's replay is.
type StreamProgress struct {
	Stream string
	// Events have been written (or found poison) so far.
	Events uint64
	// Seq is the last stream sequence written; LastSeq is where the
	// replay stops (the stream's last sequence when it started).
	Seq, LastSeq uint64
	// Poison counts events that could not be projected (logged, not
	// recorded again on REJECTED: the live projector did that).
	Poison uint64
	Done   bool
}

type streamCounters struct {
	events, seq, poison atomic.Uint64
	lastSeq             uint64
	done                atomic.Bool
}

// Replay re-projects the log into ClickHouse with ordered consumers, which
// leave the live durable consumers untouched, from the chosen start to where
// each stream was when the replay started. Rows land as the live projector
// writes them (same tables, same keys), so replaying into the live database
// changes no documented query's answer and replaying into a fresh one
// rebuilds it; Verify compares the two.
func Replay(ctx context.Context, cfg Config, js jetstream.JetStream, log *slog.Logger, opts ReplayOptions) (ReplayProgress, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "projector-replay")
	if opts.Database == "" {
		opts.Database = cfg.Database
	}
	if err := events.ValidateID("database", opts.Database); err != nil {
		return ReplayProgress{}, err
	}
	streams := opts.Streams
	if len(streams) == 0 {
		for _, s := range projected {
			streams = append(streams, s.Stream)
		}
	}
	for _, s := range streams {
		if !slices.ContainsFunc(projected, func(x struct{ Stream, Durable string }) bool { return x.Stream == s }) {
			return ReplayProgress{}, fmt.Errorf("stream %q is not projected (streams: SHADOW, ROLLOUT, ALERTS, NOTIFY)", s)
		}
	}
	conn, err := Open(ctx, cfg, opts.Database)
	if err != nil {
		return ReplayProgress{}, err
	}
	defer conn.Close()
	if _, err := Migrate(ctx, conn); err != nil {
		return ReplayProgress{}, err
	}

	start := time.Now()
	counters := make([]*streamCounters, len(streams))
	consumers := make([]jetstream.Consumer, len(streams))
	for i, s := range streams {
		counters[i] = &streamCounters{}
		info, err := streamInfo(ctx, js, s)
		if err != nil {
			return ReplayProgress{}, err
		}
		counters[i].lastSeq = info.State.LastSeq
		cc := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
		switch {
		case opts.FromSeq > 0:
			cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, opts.FromSeq
		case !opts.FromTime.IsZero():
			t := opts.FromTime
			cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
		}
		cons, err := js.OrderedConsumer(ctx, s, cc)
		if err != nil {
			return ReplayProgress{}, fmt.Errorf("replay %s: %w", s, err)
		}
		consumers[i] = cons
		if cons.CachedInfo().NumPending == 0 || info.State.Msgs == 0 {
			counters[i].done.Store(true)
		}
	}
	snapshot := func(done bool) ReplayProgress {
		p := ReplayProgress{Elapsed: time.Since(start), Done: done}
		for i, s := range streams {
			c := counters[i]
			p.Streams = append(p.Streams, StreamProgress{Stream: s, Events: c.events.Load(), Seq: c.seq.Load(),
				LastSeq: c.lastSeq, Poison: c.poison.Load(), Done: c.done.Load()})
		}
		return p
	}

	var index *desiredIndex
	if slices.Contains(streams, events.StreamShadow) {
		index = newDesiredIndex()
		n, err := warmDesired(ctx, js, index)
		if err != nil {
			return snapshot(false), err
		}
		log.Info("desired-state fold warmed", "desired_events", n)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	if opts.Progress != nil {
		every := opts.ProgressEvery
		if every <= 0 {
			every = time.Second
		}
		progressDone.Add(1)
		go func() {
			defer progressDone.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-stopProgress:
					return
				case <-tick.C:
					opts.Progress(snapshot(false))
				}
			}
		}()
	}

	errs := make([]error, len(streams))
	var wg sync.WaitGroup
	for i, s := range streams {
		c := counters[i]
		if c.done.Load() {
			continue
		}
		p := &pipeline{
			stream:       s,
			log:          log.With("stream", s),
			w:            &writer{conn: conn, log: log.With("stream", s), stream: s, retryMin: 100 * time.Millisecond, retryMax: 5 * time.Second},
			batchSize:    cfg.BatchSize,
			batchTimeout: cfg.BatchTimeout,
			lastSeq:      c.lastSeq,
			flushed: func(n int, last uint64, poison int) {
				c.events.Add(uint64(n))
				c.seq.Store(last)
				c.poison.Add(uint64(poison))
			},
		}
		if s == events.StreamShadow {
			p.index = index
		}
		it, err := consumers[i].Messages(jetstream.PullMaxMessages(pullBuffer(cfg.BatchSize)))
		if err != nil {
			errs[i] = fmt.Errorf("replay %s: %w", s, err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer it.Stop()
			err := p.run(ctx, func(ctx context.Context) (jetstream.Msg, error) {
				return it.Next(jetstream.NextContext(ctx))
			})
			if err == nil && ctx.Err() == nil {
				c.done.Store(true)
				return
			}
			if err == nil {
				err = ctx.Err()
			}
			errs[i] = fmt.Errorf("replay %s: %w", s, err)
			cancel()
		}()
	}
	wg.Wait()
	close(stopProgress)
	progressDone.Wait()
	final := snapshot(true)
	if opts.Progress != nil {
		opts.Progress(final)
	}
	return final, errors.Join(errs...)
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	var info *jetstream.StreamInfo
	err := events.Retry(ctx, 5, func(ctx context.Context) error {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return err
		}
		info, err = s.Info(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return info, nil
}
