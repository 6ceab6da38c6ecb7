package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/lease"
	"github.com/otawatch/otawatch/services/internal/svc"
)

const component = "audit"

// Service writes the checkpoints of every chained stream
// (events.ChainedStreams) while it holds the audit lease.
type Service struct {
	cfg   Config
	deps  svc.Deps
	log   *slog.Logger
	clock svc.Clock
}

// New returns the audit service.
func New(cfg Config, deps svc.Deps) (*Service, error) {
	if deps.JS == nil {
		return nil, errors.New("audit needs JetStream (deps.JS)")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, deps: deps, log: log.With("component", component), clock: deps.ClockOf()}
	if err := conf.Check("audit", &s.cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// Run writes checkpoints while this instance holds the lease, until ctx
// ends. A new holder resumes each chain from its last checkpoint.
func (s *Service) Run(ctx context.Context) error {
	l, err := lease.Open(ctx, s.deps.JS, lease.Config{
		Bucket: s.cfg.LeaseBucket, Key: "audit", Holder: lease.InstanceName(), What: "audit",
		TTL: s.cfg.LeaseTTL, Replicas: s.deps.Streams.Replicas, Clock: s.clock, Log: s.log,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return l.Serve(ctx, func() {
		s.deps.Health.Set(component, nil) // standing by is healthy
		s.log.Info("audit standing by: another instance holds the lease")
	}, func(ctx context.Context, _ func() bool) error {
		return s.runActive(ctx)
	})
}

// chain is one stream's chain as far as it has been followed.
type chain struct {
	stream string
	mu     sync.Mutex
	head   events.ChainHead
	seq    uint64
	stored time.Time
	count  uint64
	// since is how many events were chained after the last checkpoint.
	since   int
	written uint64 // the last checkpointed seq
}

func (s *Service) runActive(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	chains := make([]*chain, 0, len(events.ChainedStreams()))
	errc := make(chan error, len(events.ChainedStreams()))
	for _, name := range events.ChainedStreams() {
		c, err := s.resume(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		chains = append(chains, c)
		f := consume.New(s.deps.JS, consume.Config{
			Stream: name, From: c.seq + 1, Raw: true, Source: "audit", EventSource: events.SourceAudit, Log: s.log,
			Handle: func(ctx context.Context, m consume.Msg) error { return s.apply(ctx, c, m) },
		})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.Run(ctx); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	s.deps.Health.Set(component, nil)
	tick := time.NewTicker(s.cfg.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			select {
			case err := <-errc:
				return err
			default:
				return nil
			}
		case <-tick.C:
			for _, c := range chains {
				c.mu.Lock()
				if c.seq > c.written {
					if err := s.checkpoint(ctx, c); err != nil {
						s.log.Warn("write checkpoint", "stream", c.stream, "stream_seq", c.seq, "err", err)
					}
				}
				c.mu.Unlock()
			}
		}
	}
}

// resume reads stream's last checkpoint: the chain goes on from there (or
// from the start of the stream without one).
func (s *Service) resume(ctx context.Context, stream string) (*chain, error) {
	c := &chain{stream: stream}
	m, err := consume.LastMsg(ctx, s.deps.JS, events.StreamAudit, events.AuditCheckpointSubject(stream))
	switch {
	case err != nil:
		return nil, fmt.Errorf("last checkpoint of %s: %w", stream, err)
	case m == nil:
		return c, nil
	}
	ev, err := events.Decode(m.Data)
	if err != nil {
		return nil, fmt.Errorf("last checkpoint of %s (AUDIT seq %d): %w", stream, m.Sequence, err)
	}
	var d events.AuditCheckpointData
	if err := ev.DecodeData(&d); err != nil {
		return nil, err
	}
	if c.head, err = parseHead(d.Head); err != nil {
		return nil, fmt.Errorf("last checkpoint of %s (AUDIT seq %d): %w", stream, m.Sequence, err)
	}
	c.seq, c.written, c.stored, c.count = d.Seq, d.Seq, d.Time, d.Events
	s.log.Info("chain resumed from checkpoint", "stream", stream, "stream_seq", d.Seq)
	return c, nil
}

// apply chains one message; every CheckpointEvery it writes a checkpoint
// first, and an error there hands the message over again.
func (s *Service) apply(ctx context.Context, c *chain, m consume.Msg) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	head, seq, stored, count := c.head, c.seq, c.stored, c.count
	c.head = events.ChainNext(c.head, c.stream, m.Seq, m.Subject, m.Data)
	c.seq, c.stored, c.count = m.Seq, m.Stored, c.count+1
	c.since++
	if c.since < s.cfg.CheckpointEvery {
		return nil
	}
	if err := s.checkpoint(ctx, c); err != nil {
		c.head, c.seq, c.stored, c.count = head, seq, stored, count
		c.since--
		return err
	}
	return nil
}

// checkpoint writes c's head; c.mu is held.
func (s *Service) checkpoint(ctx context.Context, c *chain) error {
	d := events.AuditCheckpointData{Stream: c.stream, Seq: c.seq, Head: hexHead(c.head), Time: c.stored.UTC(), Events: c.count}
	id := events.AuditCheckpointID(c.stream, c.seq)
	subject := events.AuditCheckpointSubject(c.stream)
	b, err := events.Encode(id, events.SourceAudit, events.TypeAuditCheckpoint, subject, s.clock.Now(), &d)
	if err != nil {
		return err
	}
	err = events.Retry(ctx, 3, func(ctx context.Context) error {
		_, err := s.deps.JS.Publish(ctx, subject, b, jetstream.WithMsgID(id))
		return err
	})
	if err != nil {
		return fmt.Errorf("publish checkpoint %s seq %d: %w", c.stream, c.seq, err)
	}
	c.written, c.since = c.seq, 0
	s.log.Debug("checkpoint written", "stream", c.stream, "stream_seq", c.seq)
	return nil
}
