package alerting

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/lease"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
	"github.com/otawatch/otawatch/services/internal/svc"
)

const component = "alerting"

// batchMax bounds how many log messages one loop turn handles before it
// waits for its publishes: large enough to amortise the wait under load,
// small enough to keep a single alert's latency low.
const batchMax = 256

// Service is the alerting service.
type Service struct {
	cfg       Config
	deps      svc.Deps
	log       *slog.Logger
	now       func() time.Time
	reloadReq chan struct{}
	tickReq   chan tickReq

	// evalLogged rate-limits evaluation error logs per rule (loop-owned).
	evalLogged map[string]*evalLog
	// crashOnStop skips the final snapshot: tests use it to stop the
	// service the way a crash would.
	crashOnStop bool
	// snapReq asks the loop for a snapshot now (tests).
	snapReq chan chan error

	mu     sync.Mutex
	status Status
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

// New builds the service; it does no I/O.
func New(cfg Config, deps svc.Deps) (*Service, error) {
	cfg.SetDefaults()
	p := conf.NewProblems()
	cfg.Validate(p.Sub("alerting"))
	if ps := p.List(); len(ps) > 0 {
		msgs := make([]string, len(ps))
		for i, pr := range ps {
			msgs[i] = pr.Key + ": " + pr.Reason
		}
		return nil, fmt.Errorf("alerting config: %s", strings.Join(msgs, "; "))
	}
	if deps.JS == nil {
		return nil, errors.New("alerting needs JetStream (deps.JS)")
	}
	log := deps.Log
	if log == nil {
		log = slog.Default()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Service{
		cfg: cfg, deps: deps, log: log.With("component", component), now: now,
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
// and benchmarks drive time with ManualTicks. It returns ctx's error if
// the service does not take it.
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
	st.Rules = append([]string(nil), st.Rules...)
	st.Raised, st.Resolved = maps.Clone(st.Raised), maps.Clone(st.Resolved)
	return st
}

// countAlert counts an alert event stored on subject
// (alert.{raised,resolved}.{severity}.{ruleId}) in the Status.
func (s *Service) countAlert(subject string) {
	t := strings.Split(subject, ".")
	if len(t) != 4 || t[0] != events.SubjectAlert {
		return
	}
	s.setStatus(func(st *Status) {
		var m *map[string]uint64
		switch t[1] {
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
		(*m)[t[2]]++
	})
}

func (s *Service) setStatus(fn func(*Status)) {
	s.mu.Lock()
	fn(&s.status)
	s.mu.Unlock()
}

// run is one Run's state, owned by its loop goroutine.
type run struct {
	eng *ruleeval.Engine
	pub *publisher
	kv  jetstream.KeyValue
	// published holds ids of alert events already on ALERTS that the
	// catch-up may compute again; they are not published twice. It is
	// dropped once caught up.
	published map[string]bool
	manifest  *manifest
	dirty     bool
	// streams are the stream-full alerts (streamfull.go).
	streams streamWatch
}

// Run runs the service until ctx ends. While this instance holds the
// alerting lease it is active: restore, catch up, then follow SHADOW and
// ROLLOUT, tick, reload and snapshot. Without it, it stands by, reading
// nothing, and becomes active (from the last snapshot) when the lease is
// free: one instance publishes alerts and presence events at a time.
func (s *Service) Run(ctx context.Context) error {
	l, err := lease.Open(ctx, s.deps.JS, lease.Config{
		Bucket: s.cfg.LeaseBucket, Key: "alerting", Holder: lease.InstanceName(), What: "alerting",
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

// runActive is the active instance: it restores the state, follows the
// log, evaluates and publishes until ctx ends. When it ends because the
// lease was lost (lost), it skips the final snapshot: the new active
// instance owns the snapshot now.
func (s *Service) runActive(ctx context.Context, lost func() bool) error {
	s.deps.Health.Set(component, errors.New("starting"))
	set, err := s.loadRules()
	if err != nil {
		return fmt.Errorf("load rules: %w", err)
	}
	s.log.Info("rules loaded", "rules", strings.Join(set.IDs(), ","), "dir", s.rulesDirName())
	r, err := s.restore(ctx, set)
	if err != nil {
		return err
	}
	s.setStatus(func(st *Status) { st.Rules = set.IDs() })
	s.queue(r, r.eng.SetRules(set))
	if err := r.pub.flush(ctx); err != nil {
		return err
	}

	fctx, stopFeeds := context.WithCancel(ctx)
	defer stopFeeds()
	shadowCh, shadowLast, err := s.follow(fctx, events.StreamShadow, r.eng.ShadowSeq+1)
	if err != nil {
		return err
	}
	rolloutCh, rolloutLast, err := s.follow(fctx, events.StreamRollout, r.eng.RolloutSeq+1)
	if err != nil {
		return err
	}
	reloads := make(chan loaded)
	go s.watch(fctx, reloads)
	var tickC <-chan time.Time
	if !s.cfg.ManualTicks {
		t := time.NewTicker(s.cfg.TickInterval)
		defer t.Stop()
		tickC = t.C
	}
	snapT := time.NewTicker(s.cfg.SnapshotInterval)
	defer snapT.Stop()
	snapDone := make(chan snapResult, 1)
	snapping := false

	caughtUp := false
	checkCaughtUp := func() {
		if caughtUp || r.eng.ShadowSeq < shadowLast || r.eng.RolloutSeq < rolloutLast {
			return
		}
		caughtUp = true
		r.published = nil
		s.deps.Health.Set(component, nil)
		s.log.Info("caught up", "shadow_seq", r.eng.ShadowSeq, "rollout_seq", r.eng.RolloutSeq,
			"devices", r.eng.Fleet().Len(), "active_alerts", r.eng.ActiveCount())
	}
	updateStatus := func() {
		checkCaughtUp()
		s.setStatus(func(st *Status) {
			st.ShadowSeq, st.RolloutSeq, st.AlertsSeq = r.eng.ShadowSeq, r.eng.RolloutSeq, r.pub.alertsSeq
			st.CaughtUp, st.Devices, st.Active = caughtUp, r.eng.Fleet().Len(), r.eng.ActiveCount()
		})
	}
	updateStatus()
	for {
		select {
		case <-ctx.Done():
			stopFeeds()
			if snapping {
				<-snapDone
			}
			if r.dirty && !s.crashOnStop && !lost() {
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res := s.saveSnapshot(sctx, r)
				cancel()
				if res.err != nil {
					s.log.Warn("final snapshot failed; the next start reads more of the log", "err", res.err)
				}
			}
			s.deps.Health.Set(component, errors.New("stopped"))
			return nil
		case rec, ok := <-shadowCh:
			if !ok {
				return fmt.Errorf("follow %s: reader stopped", events.StreamShadow)
			}
			s.handle(r, rec)
			s.drain(r, shadowCh, rolloutCh)
		case rec, ok := <-rolloutCh:
			if !ok {
				return fmt.Errorf("follow %s: reader stopped", events.StreamRollout)
			}
			s.handle(r, rec)
			s.drain(r, shadowCh, rolloutCh)
		case t := <-tickC:
			if caughtUp {
				if err := s.tick(ctx, r, s.now().Truncate(s.cfg.TickInterval)); err != nil && ctx.Err() == nil {
					s.log.Warn("tick failed; the next tick tries again", "err", err, "tick", t)
				}
			}
		case req := <-s.tickReq:
			req.done <- s.tick(ctx, r, req.at)
		case l := <-reloads:
			s.reloaded(r, l)
		case done := <-s.snapReq:
			if snapping {
				snapping = false
				s.snapshotted(r, <-snapDone)
			}
			r.dirty = false
			done <- s.saveSnapshot(ctx, r).err
		case <-snapT.C:
			if r.dirty && caughtUp && !snapping {
				// Copy here, serialise and write there: the loop goes on.
				snap, m, err := s.prepareSnapshot(r)
				if err != nil {
					s.log.Warn("snapshot failed", "err", err)
					break
				}
				snapping, r.dirty = true, false
				prev := r.manifest
				go func() {
					sctx, cancel := context.WithTimeout(ctx, time.Minute)
					defer cancel()
					state, err := snap.MarshalJSON()
					if err == nil {
						err = saveSnapshot(sctx, r.kv, m, state, prev)
					}
					snapDone <- snapResult{m: m, err: err}
				}()
			}
		case res := <-snapDone:
			snapping = false
			s.snapshotted(r, res)
		}
		if err := r.pub.flush(ctx); err != nil {
			if ctx.Err() != nil {
				continue // the Done case stops
			}
			return err
		}
		updateStatus()
	}
}

func (s *Service) rulesDirName() string {
	if s.cfg.RulesDir == "" {
		return "(built in)"
	}
	return s.cfg.RulesDir
}

// restore builds the engine from the snapshot (if any) and folds the
// ALERTS events published after it, so a restart neither raises again an
// alert that is active nor forgets one it must resolve.
func (s *Service) restore(ctx context.Context, set *rules.Set) (*run, error) {
	kv, err := openBucket(ctx, s.deps.JS, s.cfg.SnapshotBucket, s.deps.Streams.Replicas)
	if err != nil {
		return nil, err
	}
	r := &run{kv: kv, pub: newPublisher(s.deps.JS), published: map[string]bool{}}
	r.pub.stored = s.countAlert
	r.eng = s.newEngine(set)
	m, state, err := loadSnapshot(ctx, kv)
	if err != nil {
		s.log.Warn("snapshot unusable; rebuilding from the log", "err", err)
	}
	alertsFrom := uint64(1)
	if m != nil {
		if err := r.eng.UnmarshalJSON(state); err != nil {
			s.log.Warn("snapshot unusable; rebuilding from the log", "err", err)
			r.eng = s.newEngine(set)
		} else {
			r.manifest = m
			r.pub.alertsSeq = m.AlertsSeq
			alertsFrom = m.AlertsSeq + 1
			s.setStatus(func(st *Status) { st.Restored = true })
			s.log.Info("snapshot restored", "gen", m.Gen, "shadow_seq", m.ShadowSeq, "rollout_seq", m.RolloutSeq,
				"alerts_seq", m.AlertsSeq, "devices", r.eng.Fleet().Len())
		}
	}
	rd, err := ruleeval.OpenReader(ctx, s.deps.JS, events.StreamAlerts, alertsFrom, false)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	n := 0
	for {
		rec, ok, err := rd.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("fold %s: %w", events.StreamAlerts, err)
		}
		if !ok {
			break
		}
		r.pub.alertsSeq = max(r.pub.alertsSeq, rec.Seq)
		var a events.AlertData
		if rec.DecodeErr == nil {
			rec.DecodeErr = rec.Event.DecodeData(&a)
		}
		if rec.DecodeErr != nil {
			s.log.Warn("skipping an ALERTS message that does not decode", "stream_seq", rec.Seq, "err", rec.DecodeErr)
			continue
		}
		if a.RuleID == StreamFullRule {
			continue // not the engine's: checkStreams reads them back
		}
		r.eng.Restore(a)
		r.published[rec.Event.ID] = true
		n++
	}
	if n > 0 {
		s.log.Info("alerts folded", "events", n, "active_alerts", r.eng.ActiveCount())
	}
	return r, nil
}

func (s *Service) newEngine(set *rules.Set) *ruleeval.Engine {
	return ruleeval.New(set, ruleeval.Options{
		OfflineAfter: s.cfg.OfflineAfter,
		EvalTimeout:  s.cfg.EvalTimeout,
		OnEvalError:  s.onEvalError,
	})
}

// follow reads stream from sequence from on, forever, into a channel. A
// reader that fails is reopened after the last sequence it delivered.
func (s *Service) follow(ctx context.Context, stream string, from uint64) (<-chan ruleeval.Record, uint64, error) {
	rd, err := ruleeval.OpenReader(ctx, s.deps.JS, stream, from, true)
	if err != nil {
		return nil, 0, err
	}
	ch := make(chan ruleeval.Record, 1024)
	go func() {
		defer close(ch)
		next := from
		for {
			rec, ok, err := rd.Next(ctx)
			if ctx.Err() != nil {
				rd.Close()
				return
			}
			if err != nil || !ok {
				rd.Close()
				s.log.Warn("reader failed; reopening", "stream", stream, "from_seq", next, "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				if rd, err = ruleeval.OpenReader(ctx, s.deps.JS, stream, next, true); err != nil {
					s.log.Error("reopen reader", "stream", stream, "err", err)
					return
				}
				continue
			}
			next = rec.Seq + 1
			select {
			case ch <- rec:
			case <-ctx.Done():
				rd.Close()
				return
			}
		}
	}()
	return ch, rd.Last, nil
}

// drain handles whatever else is already waiting, up to batchMax, so the
// publishes of a burst are awaited together.
func (s *Service) drain(r *run, shadowCh, rolloutCh <-chan ruleeval.Record) {
	for i := 1; i < batchMax; i++ {
		select {
		case rec, ok := <-shadowCh:
			if !ok {
				return
			}
			s.handle(r, rec)
		case rec, ok := <-rolloutCh:
			if !ok {
				return
			}
			s.handle(r, rec)
		default:
			return
		}
	}
}

// handle applies one SHADOW or ROLLOUT message and queues what it caused.
func (s *Service) handle(r *run, rec ruleeval.Record) {
	r.dirty = true
	var trs []ruleeval.Transition
	var err error
	switch {
	case rec.DecodeErr != nil:
		r.eng.Skip(rec.Stream, rec.Seq)
		err = &ruleeval.PoisonError{Err: rec.DecodeErr}
	case rec.Stream == events.StreamRollout:
		trs, err = r.eng.ApplyRollout(rec.Seq, rec.Event)
	default:
		trs, err = r.eng.ApplyShadow(rec.Seq, rec.Event)
	}
	if err != nil {
		s.reject(r, rec, err)
	}
	s.queue(r, trs)
}

// reject records a message the engine refused on REJECTED, with the
// reason and the raw bytes.
func (s *Service) reject(r *run, rec ruleeval.Record, cause error) {
	s.log.Warn("rejected", "stream", rec.Stream, "stream_seq", rec.Seq, "err", cause)
	ev, err := events.NewRejectedEvent(component, events.SourceAlerting, rec.Stream, rec.Seq, rec.Stored, cause.Error(), rec.Raw)
	if err == nil {
		err = r.pub.add(events.RejectedSubject(component), ev)
	}
	if err != nil {
		s.log.Error("record rejected message", "stream", rec.Stream, "stream_seq", rec.Seq, "err", err)
		return
	}
	s.setStatus(func(st *Status) { st.Rejected++ })
}

// queue publishes transitions, less those already on ALERTS.
func (s *Service) queue(r *run, trs []ruleeval.Transition) {
	if len(trs) == 0 {
		return
	}
	r.dirty = true
	for _, tr := range trs {
		ev, err := tr.Event()
		if err != nil {
			s.log.Error("build alert event", "key", tr.Alert.Key, "err", err)
			continue
		}
		if r.published[ev.ID] {
			continue
		}
		if err := r.pub.add(tr.Subject(), ev); err != nil {
			s.log.Error("publish alert", "key", tr.Alert.Key, "err", err)
			continue
		}
		s.log.Info("alert "+tr.Alert.State, "key", tr.Alert.Key, "severity", tr.Alert.Severity,
			"rule", tr.Alert.RuleID, "reason", tr.Alert.Reason, "at", tr.At)
	}
}

// tick runs one tick at time at: presence events for stale devices
// (published before they are applied), then the tick rules.
func (s *Service) tick(ctx context.Context, r *run, at time.Time) error {
	s.checkStreams(ctx, r, at)
	stale, trs, err := r.eng.RunTick(at, func(evs []events.Event) error {
		subjects := make([]string, len(evs))
		for i, ev := range evs {
			subjects[i] = ev.Subject
		}
		return r.pub.publishNow(ctx, subjects, evs)
	})
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		s.log.Info("devices potentially offline", "devices", len(stale), "tick", at)
		r.dirty = true
	}
	s.queue(r, trs)
	s.setStatus(func(st *Status) { st.Ticks++ })
	return r.pub.flush(ctx)
}

// reloaded swaps in a reloaded rule set, or keeps the old one.
func (s *Service) reloaded(r *run, l loaded) {
	if l.err != nil {
		var le *rules.LoadError
		if errors.As(l.err, &le) {
			for _, p := range le.Problems {
				s.log.Error("rule refused; the old rules keep running", "file", p.File, "rule", p.Rule, "pos", p.Pos.String(), "err", p.Reason)
			}
		} else {
			s.log.Error("rules reload refused; the old rules keep running", "err", l.err)
		}
		s.setStatus(func(st *Status) { st.ReloadError = l.err.Error() })
		return
	}
	s.queue(r, r.eng.SetRules(l.set))
	s.log.Info("rules reloaded", "rules", strings.Join(l.set.IDs(), ","), "on_request", l.forced)
	s.setStatus(func(st *Status) {
		st.Rules, st.ReloadError = l.set.IDs(), ""
		st.Reloads++
	})
}

type snapResult struct {
	m   manifest
	err error
}

// prepareSnapshot copies the engine on the loop, after every publish it
// caused was acknowledged (the loop flushes before it gets here), so the
// copy and its sequences agree with ALERTS.
func (s *Service) prepareSnapshot(r *run) (*ruleeval.Snapshot, manifest, error) {
	snap, err := r.eng.Snapshot()
	if err != nil {
		return nil, manifest{}, fmt.Errorf("copy state for a snapshot: %w", err)
	}
	m := manifest{Gen: 1, ShadowSeq: r.eng.ShadowSeq, RolloutSeq: r.eng.RolloutSeq, AlertsSeq: r.pub.alertsSeq, SavedAt: s.now().UTC()}
	if r.manifest != nil {
		m.Gen = r.manifest.Gen + 1
	}
	return snap, m, nil
}

func (s *Service) saveSnapshot(ctx context.Context, r *run) snapResult {
	snap, m, err := s.prepareSnapshot(r)
	if err == nil {
		var state []byte
		if state, err = snap.MarshalJSON(); err == nil {
			err = saveSnapshot(ctx, r.kv, m, state, r.manifest)
		}
	}
	res := snapResult{m: m, err: err}
	s.snapshotted(r, res)
	return res
}

func (s *Service) snapshotted(r *run, res snapResult) {
	if res.err != nil {
		r.dirty = true
		s.log.Warn("snapshot failed; the next one tries again", "err", res.err)
		return
	}
	m := res.m
	r.manifest = &m
	s.log.Debug("snapshot saved", "gen", m.Gen, "bytes", m.Size, "shadow_seq", m.ShadowSeq)
	s.setStatus(func(st *Status) { st.Snapshots++ })
}

// onEvalError logs a rule's evaluation errors at most once a minute per
// rule, with how many were not logged.
func (s *Service) onEvalError(rule, key string, err error) {
	l := s.evalLogged[rule]
	if l == nil {
		l = &evalLog{}
		s.evalLogged[rule] = l
	}
	now := time.Now()
	if now.Sub(l.last) < time.Minute {
		l.suppressed++
		return
	}
	s.log.Warn("rule evaluation failed; the alert keeps its state", "rule", rule, "key", key, "err", err, "suppressed", l.suppressed)
	l.last, l.suppressed = now, 0
}
