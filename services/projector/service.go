package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// projected are the streams the projector reads, with their durable
// consumers.
var projected = []struct{ Stream, Durable string }{
	{events.StreamShadow, events.ConsumerProjectorShadow},
	{events.StreamRollout, events.ConsumerProjectorRollout},
	{events.StreamAlerts, events.ConsumerProjectorAlerts},
	{events.StreamNotify, events.ConsumerProjectorNotify},
}

// Service is the projector: durable pull consumers on SHADOW, ROLLOUT,
// ALERTS and NOTIFY that write ClickHouse's read models.
type Service struct {
	cfg   Config
	deps  svc.Deps
	log   *slog.Logger
	hooks hooks
	// retryMin and retryMax bound the pause between ClickHouse attempts.
	retryMin, retryMax time.Duration
	// counts are the Stats, by stream.
	counts map[string]*streamCounts
}

// streamCounts are one stream's live counters.
type streamCounts struct{ rows, batches, rejected atomic.Uint64 }

// StreamStats are what the projector wrote of one stream since New.
type StreamStats struct {
	// Rows is rows ClickHouse accepted (a report is a row of
	// shadow_events and, at most once a batch per device, of
	// device_firmware).
	Rows uint64
	// Batches is batches written and acknowledged.
	Batches uint64
	// Rejected is events recorded on REJECTED instead of projected.
	Rejected uint64
}

// Stats returns the projector's counters by stream name.
func (s *Service) Stats() map[string]StreamStats {
	out := make(map[string]StreamStats, len(s.counts))
	for name, c := range s.counts {
		out[name] = StreamStats{Rows: c.rows.Load(), Batches: c.batches.Load(), Rejected: c.rejected.Load()}
	}
	return out
}

// New builds the service; it does no I/O.
func New(cfg Config, deps svc.Deps) (*Service, error) {
	if cfg.Addr == "" {
		return nil, errors.New("projector needs clickhouse.addr")
	}
	if deps.JS == nil {
		return nil, errors.New("projector needs jetstream")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	counts := map[string]*streamCounts{}
	for _, st := range projected {
		counts[st.Stream] = &streamCounts{}
	}
	return &Service{cfg: cfg, deps: deps, log: log.With("component", "projector"),
		retryMin: 100 * time.Millisecond, retryMax: 10 * time.Second, counts: counts}, nil
}

// errStarting is the readiness state until the schema is in place.
var errStarting = errors.New("connecting to clickhouse")

// Run projects until ctx ends and returns nil then. ClickHouse being down,
// at start or later, is waited out (not ready meanwhile, nothing acked).
func (s *Service) Run(ctx context.Context) error {
	h := newHealth(s.deps.Health)
	h.set("clickhouse", errStarting)
	conn, err := s.connect(ctx, h)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer conn.Close()

	index := newDesiredIndex()
	if err := s.retry(ctx, "read desired events", func(ctx context.Context) error {
		n, err := warmDesired(ctx, s.deps.JS, index)
		if err == nil {
			s.log.Info("desired-state fold warmed", "desired_events", n, "devices", len(index.m))
		}
		return err
	}); err != nil {
		return nil // only ctx's end stops retry
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for _, st := range projected {
		p := &pipeline{
			stream:       st.Stream,
			log:          s.log.With("stream", st.Stream),
			w:            &writer{conn: conn, log: s.log.With("stream", st.Stream), stream: st.Stream, health: h, retryMin: s.retryMin, retryMax: s.retryMax},
			batchSize:    s.cfg.BatchSize,
			batchTimeout: s.cfg.BatchTimeout,
			ack:          true,
			ackWait:      s.cfg.AckWait,
			js:           s.deps.JS,
			hooks:        s.hooks,
			counts:       s.counts[st.Stream],
		}
		if st.Stream == events.StreamShadow {
			p.index = index
		}
		durable := st.Durable
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.consume(ctx, p, durable); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	h.set("clickhouse", nil)
	s.log.Info("projecting", "database", s.cfg.Database, "addr", s.cfg.Addr, "batch_size", s.cfg.BatchSize, "batch_timeout", s.cfg.BatchTimeout)
	wg.Wait()
	return firstErr
}

// connect opens ClickHouse and applies the schema, retrying until it works
// or ctx ends.
func (s *Service) connect(ctx context.Context, h *health) (driver.Conn, error) {
	var conn driver.Conn
	err := s.retry(ctx, "connect to clickhouse", func(ctx context.Context) error {
		c, err := Open(ctx, s.cfg, s.cfg.Database)
		if err != nil {
			h.set("clickhouse", err)
			return err
		}
		applied, err := Migrate(ctx, c)
		if err != nil {
			c.Close()
			h.set("clickhouse", err)
			return err
		}
		if len(applied) > 0 {
			s.log.Info("schema applied", "database", s.cfg.Database, "versions", applied)
		}
		conn = c
		return nil
	})
	return conn, err
}

// retry runs call until it succeeds, pausing with backoff; it returns
// ctx's error when ctx ends first.
func (s *Service) retry(ctx context.Context, what string, call func(context.Context) error) error {
	pause := s.retryMin
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := call(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt == 1 || attempt%10 == 0 {
			s.log.Warn(what+" failed; retrying", "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(pause*2, s.retryMax)
	}
}

// consumerConfig is the durable consumer of one stream. MaxAckPending
// leaves room for the batch being written, the next one being read and the
// client's pull buffer.
func (s *Service) consumerConfig(stream, durable string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "otawatch projector: " + stream + " -> ClickHouse",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		// Poison events are terminated by the projector itself, after
		// recording them on REJECTED, so deliveries are not capped.
		MaxDeliver:    -1,
		MaxAckPending: max(4*s.cfg.BatchSize, 1000),
	}
}

func pullBuffer(batchSize int) int { return min(max(batchSize, 100), 50_000) }

// consume runs one stream's pipeline on its durable consumer, starting it
// again after a consumer or connection failure, until ctx ends. It returns
// an error only when a test hook stopped it.
func (s *Service) consume(ctx context.Context, p *pipeline, durable string) error {
	for ctx.Err() == nil {
		var cons jetstream.Consumer
		err := s.retry(ctx, "create consumer "+durable, func(ctx context.Context) error {
			var err error
			cons, err = s.deps.JS.CreateOrUpdateConsumer(ctx, p.stream, s.consumerConfig(p.stream, durable))
			return err
		})
		if err != nil {
			return nil
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(pullBuffer(p.batchSize)))
		if err != nil {
			s.log.Warn("consume failed", "stream", p.stream, "err", err)
			continue
		}
		err = p.run(ctx, func(ctx context.Context) (jetstream.Msg, error) {
			return it.Next(jetstream.NextContext(ctx))
		})
		it.Stop()
		if errors.Is(err, errStopped) {
			return err
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("consumer stopped; starting it again", "stream", p.stream, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// warmDesired reads every shadow.desired event of the SHADOW stream, up to
// where the stream is now, into index, so reports delivered from here on
// (including redeliveries of older ones) find their job and wave whatever
// order they come in. It returns the number of events read.
func warmDesired(ctx context.Context, js jetstream.JetStream, index *desiredIndex) (int, error) {
	cons, err := js.OrderedConsumer(ctx, events.StreamShadow, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectShadowDesired + ".>"},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return 0, fmt.Errorf("read desired events: %w", err)
	}
	pending := cons.CachedInfo().NumPending
	if pending == 0 {
		return 0, nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(pullBuffer(int(min(pending, 50_000)))))
	if err != nil {
		return 0, fmt.Errorf("read desired events: %w", err)
	}
	defer it.Stop()
	var n uint64
	for n < pending {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return int(n), fmt.Errorf("read desired events (%d of %d): %w", n, pending, err)
		}
		n++
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		// Projecting fills the index; the row itself is written when the
		// live consumer delivers this event.
		project(&item{stream: events.StreamShadow, seq: md.Sequence.Stream, subject: m.Subject(), raw: m.Data()}, index)
	}
	return int(n), nil
}
