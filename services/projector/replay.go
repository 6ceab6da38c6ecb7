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
	"github.com/otawatch/otawatch/services/internal/consume"
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

// replayStream is one stream of a replay: where it stops and how far it is.
type replayStream struct {
	name                string
	lastSeq             uint64
	events, seq, poison atomic.Uint64
	done                atomic.Bool
}

func (r *replayStream) flushed(n int, lastSeq uint64, poison int) {
	r.events.Add(uint64(n))
	r.seq.Store(lastSeq)
	r.poison.Add(uint64(poison))
}

func (r *replayStream) progress() StreamProgress {
	return StreamProgress{Stream: r.name, Events: r.events.Load(), Seq: r.seq.Load(), LastSeq: r.lastSeq,
		Poison: r.poison.Load(), Done: r.done.Load()}
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
	if err := opts.resolve(cfg); err != nil {
		return ReplayProgress{}, err
	}
	conn, err := openSchema(ctx, cfg, opts.Database)
	if err != nil {
		return ReplayProgress{}, err
	}
	defer conn.Close()

	start := time.Now()
	streams, err := replayBounds(ctx, js, opts.Streams)
	if err != nil {
		return ReplayProgress{}, err
	}
	snapshot := func(done bool) ReplayProgress {
		p := ReplayProgress{Elapsed: time.Since(start), Done: done}
		for _, r := range streams {
			p.Streams = append(p.Streams, r.progress())
		}
		return p
	}
	var index *desiredIndex
	if slices.Contains(opts.Streams, events.StreamShadow) {
		index = newDesiredIndex()
		n, err := warmDesired(ctx, js, index)
		if err != nil {
			return snapshot(false), err
		}
		log.Info("desired-state fold warmed", "desired_events", n)
	}

	stopProgress := reportProgress(opts, snapshot)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(streams))
	var wg sync.WaitGroup
	for i, r := range streams {
		if r.done.Load() {
			continue
		}
		p := &projection{stream: r.name, conn: conn, log: log.With("stream", r.name), flushed: r.flushed}
		if r.name == events.StreamShadow {
			p.index = index
		}
		b := p.batcher(js, consume.BatchConfig[*item]{
			From: opts.FromSeq, FromTime: opts.FromTime, Until: r.lastSeq,
			BatchSize: cfg.BatchSize, BatchTimeout: cfg.BatchTimeout, Parallel: writesInFlight,
			// The live projector recorded the poison on REJECTED already.
			NoRecord: true,
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := replayOne(ctx, b, r); err != nil {
				errs[i] = err
				cancel()
			}
		}()
	}
	wg.Wait()
	stopProgress()
	final := snapshot(true)
	if opts.Progress != nil {
		opts.Progress(final)
	}
	return final, errors.Join(errs...)
}

// resolve applies the defaults of opts (the configured database, every
// projected stream) and checks them.
func (opts *ReplayOptions) resolve(cfg Config) error {
	if opts.Database == "" {
		opts.Database = cfg.Database
	}
	if err := events.ValidateID("database", opts.Database); err != nil {
		return err
	}
	if len(opts.Streams) == 0 {
		for _, s := range projected {
			opts.Streams = append(opts.Streams, s.Stream)
		}
	}
	for _, s := range opts.Streams {
		if !slices.ContainsFunc(projected, func(x struct{ Stream, Durable string }) bool { return x.Stream == s }) {
			return fmt.Errorf("stream %q is not projected (streams: SHADOW, ROLLOUT, ALERTS, NOTIFY)", s)
		}
	}
	return nil
}

// replayBounds reads where each stream is now: a replay stops there.
func replayBounds(ctx context.Context, js jetstream.JetStream, names []string) ([]*replayStream, error) {
	out := make([]*replayStream, len(names))
	for i, name := range names {
		info, err := streamInfo(ctx, js, name)
		if err != nil {
			return nil, err
		}
		out[i] = &replayStream{name: name, lastSeq: info.State.LastSeq}
		if info.State.Msgs == 0 {
			out[i].done.Store(true)
		}
	}
	return out, nil
}

// reportProgress calls opts.Progress every opts.ProgressEvery until the
// returned stop is called.
func reportProgress(opts ReplayOptions, snapshot func(done bool) ReplayProgress) (stop func()) {
	if opts.Progress == nil {
		return func() {}
	}
	every := opts.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				opts.Progress(snapshot(false))
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// replayOne runs one stream's batcher to r.lastSeq, counting into r.
func replayOne(ctx context.Context, b *consume.Batcher[*item], r *replayStream) error {
	err := b.Run(ctx)
	if err == nil && ctx.Err() == nil {
		r.done.Store(true)
		return nil
	}
	if err == nil {
		err = ctx.Err()
	}
	return fmt.Errorf("replay %s: %w", r.name, err)
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	info, err := consume.StreamInfo(ctx, js, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return info, nil
}
