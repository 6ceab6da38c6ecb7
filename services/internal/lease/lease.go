// Package lease makes one instance of a service the active one: a key in a
// JetStream KV bucket that one holder at a time creates and renews.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// Config says which lease to open and for whom.
type Config struct {
	// Bucket is the KV bucket; its TTL is the lease's. Key is the lease in
	// it: leases with different keys are independent.
	Bucket, Key string
	// Holder names this instance: the key's value, for operators.
	Holder string
	// What the lease is for, in log lines and the bucket's description
	// ("rollout driver").
	What string
	// TTL is how long a lease lasts without a renewal.
	TTL time.Duration
	// Replicas of the bucket (at least 1).
	Replicas int
	// Clock is the holder's clock for its step-down timer (the service's
	// svc.Deps.Clock); nil is the wall clock.
	Clock svc.Clock
	// Log gets the lease's changes; nil discards them.
	Log *slog.Logger
}

// Lease makes one instance the active one. It is a JetStream KV key in a bucket
// whose TTL (MaxAge) is the lease TTL: Create takes the key when it is
// absent (never held, released, or expired), Update(rev) renews it and
// fails when someone else took it. A per-key TTL is not used because Update
// drops it. The holder steps down on its own clock after two thirds of the
// TTL without a successful renewal, before the key can expire under it and
// another instance take over.
type Lease struct {
	kv       jetstream.KeyValue
	key      string
	what     string
	holder   string
	value    []byte    // the key's value while held: holder, and the instance's ids with one
	inst     *Instance // the process's lasting identity (WithInstance); nil: none
	ttl      time.Duration
	stepDown time.Duration
	clock    svc.Clock
	log      *slog.Logger

	mu      sync.Mutex
	held    bool
	rev     uint64
	renewed time.Time
}

// Open creates (or updates) the lease bucket and returns the lease. It does
// not take the lease: Run does. When ctx carries an Instance
// (WithInstance), the lease resumes at once a key left by an earlier run
// of that instance (a crashed process restarted on its data dir).
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Lease, error) {
	if cfg.Clock == nil {
		cfg.Clock = svc.RealClock{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	var kv jetstream.KeyValue
	err := events.Retry(ctx, 5, func(ctx context.Context) error {
		var err error
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      cfg.Bucket,
			Description: cfg.What + " lease",
			TTL:         cfg.TTL,
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    max(cfg.Replicas, 1),
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open lease bucket %q: %w", cfg.Bucket, err)
	}
	l := &Lease{kv: kv, key: cfg.Key, what: cfg.What, holder: cfg.Holder, value: []byte(cfg.Holder),
		inst: instanceFrom(ctx), ttl: cfg.TTL, stepDown: cfg.TTL * 2 / 3, clock: cfg.Clock, log: cfg.Log}
	if l.inst != nil {
		l.value = []byte(l.inst.value(cfg.Holder))
	}
	return l, nil
}

// Held reports whether this instance may act now: it holds the lease and
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

// Serve runs the lease (Run) and calls active each time this instance
// holds it, until ctx ends. active's context ends when ctx does or when
// the lease is lost; lost then reports true. Between turns, standby is
// called and Serve waits for the lease. The lease is released only after
// active has returned, so another instance never becomes active alongside.
// A holder notices a lost lease within 1/8 of the TTL of its step-down
// (2/3 of the TTL without a renewal): active has the rest of the TTL to
// stop. Serve returns active's error, or nil once ctx has ended.
func (l *Lease) Serve(ctx context.Context, standby func(), active func(ctx context.Context, lost func() bool) error) error {
	runCtx, stopRun := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { l.Run(runCtx); close(ran) }()
	defer func() { stopRun(); <-ran }()
	for {
		if !l.Held() {
			standby()
			if !l.wait(ctx, true, 50*time.Millisecond) {
				return nil
			}
		}
		actx, stepDown := context.WithCancel(ctx)
		var lost atomic.Bool
		go func() {
			if l.wait(actx, false, l.ttl/8) {
				lost.Store(true)
				stepDown()
			}
		}()
		err := active(actx, lost.Load)
		stepDown()
		if err != nil || ctx.Err() != nil {
			return err
		}
		l.log.Warn(l.what+" lease lost: stopped, standing by", "holder", l.holder, "key", l.key)
	}
}

// wait polls Held every interval until it is held (true) or ctx ends
// (false).
func (l *Lease) wait(ctx context.Context, held bool, interval time.Duration) bool {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for l.Held() != held {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return ctx.Err() == nil
}

func (l *Lease) attempt(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, l.ttl/4)
	defer cancel()
	l.mu.Lock()
	held, rev := l.held, l.rev
	l.mu.Unlock()
	start := l.clock.Now()
	var err error
	resumed := false
	if held {
		rev, err = l.kv.Update(cctx, l.key, l.value, rev)
	} else {
		rev, err = l.kv.Create(cctx, l.key, l.value)
		if errors.Is(err, jetstream.ErrKeyExists) && l.inst != nil {
			rev, resumed, err = l.resume(cctx)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		if resumed {
			l.log.Info(l.what+" lease resumed: it was this data dir's earlier run's, which is gone; this instance is active",
				"holder", l.holder, "key", l.key, "instance", l.inst.id)
		} else if !l.held {
			l.log.Info(l.what+" lease taken: this instance is active", "holder", l.holder, "key", l.key)
		}
		// Count from before the call: the server's TTL runs from its write,
		// which is no earlier than start.
		l.held, l.rev, l.renewed = true, rev, start
	case held:
		// Stay active until the step-down time unless the key is someone
		// else's: a renewal can fail for a moment (leader change) and the
		// next one succeed within the TTL.
		if errors.Is(err, jetstream.ErrKeyExists) || events.IsWrongLastSequence(err) {
			l.held = false
			l.log.Warn(l.what+" lease lost to another instance", "holder", l.holder, "key", l.key)
		} else if l.clock.Now().Sub(l.renewed) >= l.stepDown {
			l.held = false
			l.log.Warn(l.what+" lease not renewed in time: stepping down", "holder", l.holder, "key", l.key, "err", err)
		}
	}
}

// resume takes over a key an earlier run of this lease's instance left
// behind (it died holding it). Any other holder's key is left alone:
// ErrKeyExists, as Create said.
func (l *Lease) resume(ctx context.Context) (uint64, bool, error) {
	e, err := l.kv.Get(ctx, l.key)
	if err != nil {
		return 0, false, err // gone meanwhile (expired, released): the next attempt creates it
	}
	if !l.inst.leftByEarlierRun(string(e.Value())) {
		return 0, false, jetstream.ErrKeyExists
	}
	// Update(rev) fails if anyone wrote the key since Get.
	rev, err := l.kv.Update(ctx, l.key, l.value, e.Revision())
	return rev, err == nil, err
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
	if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev)); err != nil {
		l.log.Debug("release "+l.what+" lease", "key", l.key, "err", err)
	}
}

// InstanceName names a lease holder: host name, process id and a random
// part, so each holder is a new one. (A restarted process resumes its
// leases through its Instance, not through this name.)
func InstanceName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randomHex(4))
}

// CheckConfig reports the problems of a service's lease keys, lease_bucket
// and lease_ttl, under p.
func CheckConfig(p conf.Problems, bucket string, ttl time.Duration) {
	if err := events.ValidateID("lease bucket", bucket); err != nil {
		p.Addf("lease_bucket", "%v", err)
	}
	if ttl < time.Second {
		p.Addf("lease_ttl", "%s is shorter than 1s", ttl)
	}
}
