package alerting

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/lease"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
	"github.com/otawatch/otawatch/services/internal/svc"
)

const component = "alerting"

// Service is the alerting service.
type Service struct {
	cfg       Config
	deps      svc.Deps
	log       *slog.Logger
	clock     svc.Clock
	reloadReq chan struct{}
	tickReq   chan tickReq
	// holder is this instance's lease holder name, set when Run starts
	// and put on every event it publishes (HeaderHolder).
	holder string

	// evalLogged rate-limits evaluation error logs per rule (loop-owned).
	evalLogged map[string]*evalLog
	// crashOnStop skips the final snapshot: tests use it to stop the
	// service the way a crash would.
	crashOnStop bool
	// loseAlert, when set, says which alert events are never sent: tests
	// use it for a crash between an event and its alert publish.
	loseAlert func(ev events.Event) bool
	// snapReq asks the loop for a snapshot now (tests).
	snapReq chan chan error

	mu     sync.Mutex
	status Status
	// shadow and rollout follow the log while this instance is active
	// (nil otherwise); Status reads their positions and rejections.
	shadow, rollout *consume.Follower
}

type tickReq struct {
	at   time.Time
	done chan error
}

type evalLog struct {
	last       time.Time
	suppressed int
}

// Status is what the service has done so far, for tests and /readyz.
type Status struct {
	// ShadowSeq and RolloutSeq are the last stream sequences handled;
	// AlertsSeq the last ALERTS sequence published or restored.
	ShadowSeq, RolloutSeq, AlertsSeq uint64
	// CaughtUp is true once the log as it was at start has been read.
	CaughtUp bool
	// Active is the number of raised alerts.
	Active int
	// Devices is the number of devices in the fleet state.
	Devices int
	// Rules are the running rule ids; Reloads counts successful reloads
	// and ReloadError is the last refused one's error ("" after a good
	// one).
	Rules       []string
	Reloads     int
	ReloadError string
	// Ticks, Snapshots and Rejected count what they say; Restored is
	// true when the state came from a snapshot.
	Ticks, Snapshots, Rejected int
	Restored                   bool
	// Standby is true while another instance holds the alerting lease.
	Standby bool
	// Raised and Resolved count the alert events this process stored on
	// ALERTS, by severity.
	Raised, Resolved map[string]uint64
}

// New builds the service; it does no I/O. Unset keys of cfg take their
// defaults, and a configuration that Validate refuses is a *conf.Error
// listing every problem. Ticks run on deps.Clock (ClockOf).
func New(cfg Config, deps svc.Deps) (*Service, error) {
	if err := conf.Check("alerting", &cfg); err != nil {
		return nil, err
	}
	if deps.JS == nil {
		return nil, errors.New("alerting needs JetStream (deps.JS)")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		cfg: cfg, deps: deps, log: log.With("component", component), clock: deps.ClockOf(),
		reloadReq: make(chan struct{}, 1), tickReq: make(chan tickReq), snapReq: make(chan chan error),
		evalLogged: map[string]*evalLog{},
	}, nil
}

// Reload asks the running service to reload its rules now (SIGHUP). A bad
// rule set is refused and logged; the old rules keep running.
func (s *Service) Reload() {
	select {
	case s.reloadReq <- struct{}{}:
	default: // one is already queued
	}
}

// Tick runs a tick at time at and waits until it is done: the way tests
// and benchmarks drive time on a clock that does not fire. It returns
// ctx's error if the service does not take it.
func (s *Service) Tick(ctx context.Context, at time.Time) error {
	req := tickReq{at: at, done: make(chan error, 1)}
	select {
	case s.tickReq <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status returns a copy of the service's status.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	// A rejected event is handled without the engine: the followers know
	// how far they are.
	if s.shadow != nil {
		st.ShadowSeq = max(st.ShadowSeq, s.shadow.Applied())
		st.Rejected += int(s.shadow.Rejected())
	}
	if s.rollout != nil {
		st.RolloutSeq = max(st.RolloutSeq, s.rollout.Applied())
		st.Rejected += int(s.rollout.Rejected())
	}
	st.Rules = append([]string(nil), st.Rules...)
	st.Raised, st.Resolved = maps.Clone(st.Raised), maps.Clone(st.Resolved)
	return st
}

// countAlert counts an alert event stored on subject
// (alert.{raised,resolved}.{severity}.{ruleId}) in the Status.
func (s *Service) countAlert(subject string) {
	a, ok := events.ParseAlertSubject(subject)
	if !ok {
		return
	}
	s.setStatus(func(st *Status) {
		var m *map[string]uint64
		switch a.State {
		case events.AlertRaised:
			m = &st.Raised
		case events.AlertResolved:
			m = &st.Resolved
		default:
			return
		}
		if *m == nil {
			*m = map[string]uint64{}
		}
		(*m)[a.Severity]++
	})
}

func (s *Service) setStatus(fn func(*Status)) {
	s.mu.Lock()
	fn(&s.status)
	s.mu.Unlock()
}

// Run runs the service until ctx ends. While this instance holds the
// alerting lease it is active: restore, catch up, then follow SHADOW and
// ROLLOUT, tick, reload and snapshot. Without it, it stands by, reading
// nothing, and becomes active (from the last snapshot) when the lease is
// free: one instance publishes alerts and presence events at a time.
func (s *Service) Run(ctx context.Context) error {
	s.holder = lease.InstanceName()
	l, err := lease.Open(ctx, s.deps.JS, lease.Config{
		Bucket: s.cfg.LeaseBucket, Key: "alerting", Holder: s.holder, What: "alerting",
		TTL: s.cfg.LeaseTTL, Replicas: s.deps.Streams.Replicas, Log: s.log,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	err = l.Serve(ctx, func() {
		s.deps.Health.Set(component, errors.New("standby: another instance holds the alerting lease"))
		s.setStatus(func(st *Status) { st.Standby = true })
		s.log.Info("alerting standing by: another instance holds the lease")
	}, func(ctx context.Context, lost func() bool) error {
		s.setStatus(func(st *Status) { st.Standby = false })
		return s.runActive(ctx, lost)
	})
	if err == nil {
		s.deps.Health.Set(component, errors.New("stopped"))
	}
	return err
}

func (s *Service) rulesDirName() string {
	if s.cfg.RulesDir == "" {
		return "(built in)"
	}
	return s.cfg.RulesDir
}

func (s *Service) newEngine(set *rules.Set) *ruleeval.Engine {
	return ruleeval.New(set, ruleeval.Options{
		OfflineAfter: s.cfg.OfflineAfter,
		EvalTimeout:  s.cfg.EvalTimeout,
		OnEvalError:  s.onEvalError,
	})
}

// onEvalError logs a rule's evaluation errors at most once a minute per
// rule, with how many were not logged.
func (s *Service) onEvalError(rule, key string, err error) {
	l := s.evalLogged[rule]
	if l == nil {
		l = &evalLog{}
		s.evalLogged[rule] = l
	}
	now := s.clock.Now()
	if now.Sub(l.last) < time.Minute {
		l.suppressed++
		return
	}
	s.log.Warn("rule evaluation failed; the alert keeps its state", "rule", rule, "key", key, "err", err, "suppressed", l.suppressed)
	l.last, l.suppressed = now, 0
}
