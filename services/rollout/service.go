package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/fleet"
	"github.com/otawatch/otawatch/services/internal/lease"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// QueueGroup is the queue group of the command subscriptions: any one
// instance answers a command.
const QueueGroup = "otawatch-rollout"

// Service is the rollout service: it answers rollout commands, and the
// instance holding the lease drives the jobs (gates, waves, desired state).
type Service struct {
	cfg      Config
	deps     svc.Deps
	log      *slog.Logger
	clock    svc.Clock
	instance string

	mu      sync.Mutex
	fleet   *fleet.State
	jobs    map[string]*Job
	desired map[string]map[events.DeviceRef]desiredRec // job -> device -> latest recorded desired event
	buckets map[string]*bucket
	gates   map[string]*celGate
	// settled maps an aborted job with nothing left to clear to its
	// LastSeq then; a later event of the job, or a SHADOW event of one of
	// its devices, unsettles it (see retractBatch).
	settled map[string]uint64
	// retractedHere marks aborted jobs this instance cleared deltas of,
	// so it logs once when a job's clears are done.
	retractedHere map[string]bool
	// shadowFold and rolloutFold follow the streams (fold.go); ready is
	// set, and readyCh closed, once both caught up with where their
	// streams were at start.
	shadowFold, rolloutFold *consume.Follower
	ready                   bool
	readyCh                 chan struct{}

	lease  *lease.Lease
	client mqtt.Client
	stats  Stats
	hooks  hooks
}

// hooks are test seams; nil in production.
type hooks struct {
	// crashAfterPublish runs after a batch's deltas were acknowledged by
	// the broker and before they are marked sent; true makes the driver
	// stop there, as a process killed at that point would.
	crashAfterPublish func(acked int) bool
	// crashAfterRetract runs after a batch of clears was acknowledged by
	// the broker and before it is recorded; true stops the driver there.
	crashAfterRetract func(acked int) bool
	// manualTicks stops Run's ticker: the test calls drive itself, on a
	// fake clock, once the folds have what it published (a recording
	// whose every tick is known, for the what-if tests).
	manualTicks bool
}

// desiredRec is a recorded desired event of a job's device.
type desiredRec struct {
	attempt int
	at      time.Time
}

// LeaseKey is the key the driver lease lives under. One lease covers the
// whole orchestrator: jobs are light (their work is rate-limited sends), and
// one driver keeps all jobs' sends under one view of the broker.
const LeaseKey = "driver"

// HealthComponent is the service's name in the health registry: not ready
// until it has folded SHADOW and ROLLOUT up to where they were at start.
const HealthComponent = "rollout"

// New builds the service; it does no I/O. Unset keys of cfg take their
// defaults (an empty broker is DefaultBroker), and a configuration that
// Validate refuses is an *conf.Error listing every problem (keys under
// "rollout", as in the file). The driver's tick and the lease read
// deps.Clock (the wall clock when nil); event handlers take the events'
// time.
func New(cfg Config, deps svc.Deps) (*Service, error) {
	cfg.SetDefaults()
	if cfg.Broker == "" {
		cfg.Broker = DefaultBroker
	}
	if err := conf.Check("rollout", &cfg); err != nil {
		return nil, err
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	instance := cfg.Instance
	if instance == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		instance = hex.EncodeToString(b[:])
	}
	s := &Service{
		cfg: cfg, deps: deps, clock: deps.ClockOf(), instance: instance,
		log:     deps.Log.With("component", "rollout", "instance", instance),
		fleet:   fleet.New(),
		jobs:    map[string]*Job{},
		desired: map[string]map[events.DeviceRef]desiredRec{},
		buckets: map[string]*bucket{},
		gates:   map[string]*celGate{},
		readyCh: make(chan struct{}),

		settled:       map[string]uint64{},
		retractedHere: map[string]bool{},
	}
	// Each instance folds the whole SHADOW and ROLLOUT streams itself,
	// with ordered (ephemeral) consumers from the start: a shared durable
	// consumer would split the events between instances, and every
	// instance needs all of them to answer commands and to take over.
	// events.ConsumerRolloutShadow stays reserved for a snapshot-based
	// durable consumer.
	s.shadowFold = s.newFold(events.StreamShadow, s.onShadow)
	s.rolloutFold = s.newFold(events.StreamRollout, s.onRollout)
	return s, nil
}

// Stats count what the service did toward devices; tests and benchmarks
// read them.
type Stats struct {
	// DesiredRecorded is shadow.desired events appended.
	DesiredRecorded int64
	// DeltasPublished is desired-state messages the broker acknowledged.
	DeltasPublished int64
	// RetainedConfirmed is devices whose unconfirmed send was found
	// retained on the broker after a restart, and so not sent again.
	RetainedConfirmed int64
	// Resent is devices whose recorded send was not on the broker after a
	// restart, and so was sent.
	Resent int64
	// EventsAppended is ROLLOUT events this instance appended.
	EventsAppended int64
	// DeltasRetracted is clears of an aborted job's retained desired state
	// (zero-length retained publishes) the broker acknowledged.
	DeltasRetracted int64
}

// Stats returns a copy of the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Driving reports whether this instance holds the lease and drives jobs.
func (s *Service) Driving() bool { return s.lease != nil && s.lease.Held() }

// Instance is this instance's name.
func (s *Service) Instance() string { return s.instance }

// Run runs the service until ctx ends and returns nil on a clean stop.
func (s *Service) Run(ctx context.Context) error {
	s.deps.Health.Set(HealthComponent, errors.New("catching up with the SHADOW and ROLLOUT streams"))
	var err error
	s.lease, err = lease.Open(ctx, s.deps.JS, lease.Config{
		Bucket: s.cfg.LeaseBucket, Key: LeaseKey, Holder: s.instance, What: "rollout driver",
		TTL: s.cfg.LeaseTTL, Replicas: s.deps.Streams.Replicas, Clock: s.clock, Log: s.log,
	})
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // before wg.Wait: the goroutines end with ctx
	for _, run := range []func(context.Context){
		func(ctx context.Context) { _ = s.shadowFold.Run(ctx) }, // nil when ctx ends; it logs its failures
		func(ctx context.Context) { _ = s.rolloutFold.Run(ctx) },
		s.trackReadiness,
		s.lease.Run,
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(ctx)
		}()
	}

	sub, err := s.deps.NC.QueueSubscribe(events.RolloutCommandPrefix+".*.*", QueueGroup, func(m *nats.Msg) { s.onCommand(ctx, m) })
	if err != nil {
		return fmt.Errorf("subscribe to rollout commands: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	s.client = s.newMQTT()
	s.client.Connect() // retries in the background; sends wait for the connection
	defer s.client.Disconnect(250)

	var ticks <-chan time.Time // nil with manual ticks: never fires
	if !s.hooks.manualTicks {
		tick := time.NewTicker(s.cfg.Tick)
		defer tick.Stop()
		ticks = tick.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticks:
			s.drive(ctx)
		}
	}
}
