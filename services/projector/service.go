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
	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/consume"
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
	// newBackOff paces every retry: ClickHouse, JetStream, a batch.
	newBackOff func() backoff.BackOff
	// counts are the Stats, by stream; followers are set while Run runs.
	counts    map[string]*streamCounts
	followers sync.Map // stream name -> *consume.Batcher[*item]
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
	// Seq is the last stream sequence written and acked; Lag is how many
	// events of the stream wait behind it (0 before Run reads the stream).
	Seq, Lag uint64
}

// Stats returns the projector's counters by stream name.
func (s *Service) Stats() map[string]StreamStats {
	out := make(map[string]StreamStats, len(s.counts))
	for name, c := range s.counts {
		st := StreamStats{Rows: c.rows.Load(), Batches: c.batches.Load(), Rejected: c.rejected.Load()}
		if f, ok := s.followers.Load(name); ok {
			b := f.(*consume.Batcher[*item])
			st.Seq, st.Lag = b.Applied(), b.Lag()
		}
		out[name] = st
	}
	return out
}

// New builds the service from its section of the configuration: it applies
// the defaults and returns a *conf.Error listing every problem of cfg. It
// does no I/O.
func New(cfg Config, deps svc.Deps) (*Service, error) {
	cfg.SetDefaults()
	p := conf.NewProblems()
	section := p.Sub("clickhouse")
	if cfg.Addr == "" {
		section.Addf("addr", "is required to run the projector")
	}
	cfg.Validate(section)
	if list := p.List(); len(list) > 0 {
		return nil, &conf.Error{Problems: list}
	}
	if deps.JS == nil {
		return nil, errors.New("projector needs jetstream (deps.JS)")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	counts := map[string]*streamCounts{}
	for _, st := range projected {
		counts[st.Stream] = &streamCounts{}
	}
	return &Service{cfg: cfg, deps: deps, log: log.With("component", "projector"), newBackOff: consume.DefaultBackOff, counts: counts}, nil
}

// writesInFlight is how many batches of a stream are written at once.
// Inserts wait on the server (parsing, sorting, writing a part), and a
// second batch in flight keeps ClickHouse busy meanwhile.
const writesInFlight = 2

// attemptTimeout bounds one attempt to connect or to read the desired
// events, so a server that accepts and never answers is tried again.
const attemptTimeout = 30 * time.Second

// errStarting is the readiness state until the schema is in place.
var errStarting = errors.New("connecting to clickhouse")

// Run projects until ctx ends and returns nil then. ClickHouse being down,
// at start or later, is waited out (not ready meanwhile, nothing acked).
func (s *Service) Run(ctx context.Context) error {
	h := newHealth(s.deps.Health)
	h.set("clickhouse", errStarting)
	conn, err := s.connect(ctx, h)
	if err != nil {
		return nil // only ctx's end stops connect
	}
	defer conn.Close()

	index := newDesiredIndex()
	if err := consume.Retry(ctx, s.log, s.newBackOff, "read desired events", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		n, err := warmDesired(ctx, s.deps.JS, index)
		if err == nil {
			s.log.Info("desired-state fold warmed", "desired_events", n, "devices", len(index.m))
		}
		return err
	}); err != nil {
		return nil
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for _, st := range projected {
		p := &projection{stream: st.Stream, conn: conn, log: s.log.With("stream", st.Stream), health: h, hooks: s.hooks, counts: s.counts[st.Stream]}
		if st.Stream == events.StreamShadow {
			p.index = index
		}
		b := p.batcher(s.deps.JS, consume.BatchConfig[*item]{
			Durable:     st.Durable,
			Description: "otawatch projector: " + st.Stream + " -> ClickHouse",
			AckWait:     s.cfg.AckWait,
			// Room for the batches being written, the next one being
			// read and the client's pull buffer.
			MaxAckPending: max((writesInFlight+2)*s.cfg.BatchSize, 1000),
			BatchSize:     s.cfg.BatchSize,
			BatchTimeout:  s.cfg.BatchTimeout,
			Parallel:      writesInFlight,
			NewBackOff:    s.newBackOff,
		})
		s.followers.Store(st.Stream, b)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Run ends with an error only when a test hook stopped it.
			if err := b.Run(ctx); err != nil {
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
	err := consume.Retry(ctx, s.log, s.newBackOff, "connect to clickhouse", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		c, err := openSchema(ctx, s.cfg, s.cfg.Database)
		if err != nil {
			h.set("clickhouse", err)
			return err
		}
		conn = c
		return nil
	})
	return conn, err
}

// openSchema opens database on cfg's server and applies the schema.
func openSchema(ctx context.Context, cfg Config, database string) (driver.Conn, error) {
	c, err := Open(ctx, cfg, database)
	if err != nil {
		return nil, err
	}
	if _, err := Migrate(ctx, c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// warmDesired reads every shadow.desired event of the SHADOW stream, up to
// where the stream is now, into index, so reports delivered from here on
// (including redeliveries of older ones) find their job and wave whatever
// order they come in. It returns the number of events read.
func warmDesired(ctx context.Context, js jetstream.JetStream, index *desiredIndex) (int, error) {
	// Every desired event up to the stream's last sequence now is stored
	// before the last desired event readDesired looks up, so it reads
	// them all.
	info, err := streamInfo(ctx, js, events.StreamShadow)
	if err != nil {
		return 0, fmt.Errorf("read desired events: %w", err)
	}
	n, err := readDesired(ctx, js, index, 1)
	if err == nil {
		index.cover(info.State.LastSeq)
	}
	return n, err
}

// catchUp makes index hold every desired event up to sequence upTo, when
// it does not yet: it reads the desired events after the index's complete
// part. The event at upTo was stored, so every desired event before it
// was too, up to the last one readDesired looks up.
func catchUp(ctx context.Context, js jetstream.JetStream, index *desiredIndex, upTo uint64) error {
	if index.complete() >= upTo {
		return nil
	}
	index.catching.Lock()
	defer index.catching.Unlock()
	from := index.complete() + 1
	if from > upTo {
		return nil
	}
	if _, err := readDesired(ctx, js, index, from); err != nil {
		return err
	}
	index.cover(upTo)
	return nil
}

// readDesired reads SHADOW's shadow.desired events from sequence from up
// to the last one stored when it starts into index, and returns how many
// it read.
func readDesired(ctx context.Context, js jetstream.JetStream, index *desiredIndex, from uint64) (int, error) {
	subject := events.SubjectShadowDesired + ".>"
	last, err := consume.LastMsg(ctx, js, events.StreamShadow, subject)
	if err != nil {
		return 0, fmt.Errorf("read desired events: %w", err)
	}
	if last == nil || last.Sequence < from {
		return 0, nil
	}
	n := 0
	err = consume.ReadRange(ctx, js, events.StreamShadow, []string{subject}, from, last.Sequence, func(m consume.Msg) (bool, error) {
		// Projecting fills the index; the row itself is written when the
		// live consumer delivers this event.
		project(&item{stream: events.StreamShadow, seq: m.Seq, subject: m.Subject, raw: m.Data}, index)
		n++
		return false, nil
	})
	if err != nil {
		return n, fmt.Errorf("read desired events (%d read): %w", n, err)
	}
	return n, nil
}
