package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// Clock is the time source of everything that is not an event handler:
// the driver's tick and the lease's step-down timer. Tests inject their own.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// LeaseKey is the key the driver lease lives under. One lease covers the
// whole orchestrator: jobs are light (their work is rate-limited sends), and
// one driver keeps all jobs' sends under one view of the broker.
const LeaseKey = "driver"

// Lease makes one instance the driver. It is a JetStream KV key in a bucket
// whose TTL (MaxAge) is the lease TTL: Create takes the key when it is
// absent (never held, released, or expired), Update(rev) renews it and
// fails when someone else took it. A per-key TTL is not used because Update
// drops it. The holder steps down on its own clock after two thirds of the
// TTL without a successful renewal, before the key can expire under it and
// another instance take over.
type Lease struct {
	kv       jetstream.KeyValue
	holder   string
	ttl      time.Duration
	stepDown time.Duration
	clock    Clock
	log      *slog.Logger

	mu      sync.Mutex
	held    bool
	rev     uint64
	renewed time.Time
}

// OpenLease creates (or updates) the lease bucket and returns a lease for
// holder. It does not take the lease: Run does.
func OpenLease(ctx context.Context, js jetstream.JetStream, bucket, holder string, ttl time.Duration, replicas int, clock Clock, log *slog.Logger) (*Lease, error) {
	var kv jetstream.KeyValue
	err := events.Retry(ctx, 5, func(ctx context.Context) error {
		var err error
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "rollout driver lease",
			TTL:         ttl,
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    max(replicas, 1),
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open lease bucket %q: %w", bucket, err)
	}
	return &Lease{kv: kv, holder: holder, ttl: ttl, stepDown: ttl * 2 / 3, clock: clock, log: log}, nil
}

// Held reports whether this instance may drive now: it holds the lease and
// renewed it less than the step-down time ago.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held && l.clock.Now().Sub(l.renewed) < l.stepDown
}

// Run takes and renews the lease every TTL/4 until ctx ends, then releases
// it (so a clean stop hands over at once, not after the TTL).
func (l *Lease) Run(ctx context.Context) {
	tick := time.NewTicker(l.ttl / 4)
	defer tick.Stop()
	for {
		l.attempt(ctx)
		select {
		case <-ctx.Done():
			l.release()
			return
		case <-tick.C:
		}
	}
}

func (l *Lease) attempt(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, l.ttl/4)
	defer cancel()
	l.mu.Lock()
	held, rev := l.held, l.rev
	l.mu.Unlock()
	start := l.clock.Now()
	var err error
	if held {
		rev, err = l.kv.Update(cctx, LeaseKey, []byte(l.holder), rev)
	} else {
		rev, err = l.kv.Create(cctx, LeaseKey, []byte(l.holder))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		if !l.held {
			l.log.Info("rollout lease taken: this instance drives the jobs", "holder", l.holder)
		}
		// Count from before the call: the server's TTL runs from its write,
		// which is no earlier than start.
		l.held, l.rev, l.renewed = true, rev, start
	case held:
		// Keep driving until the step-down time unless the key is someone
		// else's: a renewal can fail for a moment (leader change) and the
		// next one succeed within the TTL.
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSeq(err) {
			l.held = false
			l.log.Warn("rollout lease lost to another instance", "holder", l.holder)
		} else if l.clock.Now().Sub(l.renewed) >= l.stepDown {
			l.held = false
			l.log.Warn("rollout lease not renewed in time: stepping down", "holder", l.holder, "err", err)
		}
	}
}

// release deletes the key if this instance still holds it.
func (l *Lease) release() {
	l.mu.Lock()
	held, rev := l.held, l.rev
	l.held = false
	l.mu.Unlock()
	if !held {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.kv.Delete(ctx, LeaseKey, jetstream.LastRevision(rev)); err != nil {
		l.log.Debug("release rollout lease", "err", err)
	}
}

func isWrongSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
