package alerting

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// run is one active term's state. Three goroutines take turns on it under
// mu: the SHADOW and ROLLOUT followers' handlers (one event each) and the
// loop (ticks, reloads, snapshots). Every turn publishes what it caused
// and waits for the acknowledgements before it lets go, so whoever comes
// next (a snapshot above all) sees only outcomes that are stored.
type run struct {
	mu  sync.Mutex
	eng *ruleeval.Engine
	pub *publisher
	kv  jetstream.KeyValue
	// published holds ids of alert events already on ALERTS that the
	// catch-up may compute again; they are not published twice. It is
	// dropped once caught up.
	published map[string]bool
	manifest  *manifest
	dirty     bool
	caughtUp  bool
	// streams are the stream-full alerts (streamfull.go).
	streams streamWatch
	// rulesHash is the hash of the rule set last recorded on ALERTS
	// (rulesrecord.go).
	rulesHash string
	// shadow and rollout follow the log (services/internal/consume):
	// they hand events to handle, and record on REJECTED those that do
	// not decode, that the engine refuses, or whose handling panics.
	shadow, rollout *consume.Follower
}

// runActive is the active instance: it restores the state, follows the
// log, evaluates and publishes until ctx ends. When it ends because the
// lease was lost (lost), it skips the final snapshot: the new active
// instance owns the snapshot now.
func (s *Service) runActive(ctx context.Context, lost func() bool) error {
	s.deps.Health.Set(component, errors.New("starting"))
	r, err := s.begin(ctx)
	if err != nil {
		return err
	}
	fctx, stopFeeds := context.WithCancel(ctx)
	var feeds sync.WaitGroup
	for _, f := range []*consume.Follower{r.shadow, r.rollout} {
		feeds.Go(func() { _ = f.Run(fctx) }) // Run ends only with fctx
	}
	reloads := make(chan loaded)
	feeds.Go(func() { s.watch(fctx, reloads) })
	err = s.loop(ctx, r, reloads)
	stopFeeds()
	feeds.Wait()
	s.end(r, lost)
	return err
}

// begin loads the rules, restores the state and makes the followers of
// SHADOW and ROLLOUT, from the sequences after the state's.
func (s *Service) begin(ctx context.Context) (*run, error) {
	l := s.loadRules()
	if l.err != nil {
		return nil, fmt.Errorf("load rules: %w", l.err)
	}
	set := l.set
	s.log.Info("rules loaded", "rules", strings.Join(set.IDs(), ","), "dir", s.rulesDirName())
	r, err := s.restore(ctx, set)
	if err != nil {
		return nil, err
	}
	s.setStatus(func(st *Status) { st.Rules = set.IDs() })
	r.rulesHash = s.lastRecordedRules(ctx)
	s.recordRules(r, l, events.RulesLoadedStart)
	s.queue(r, causeRules, r.eng.SetRules(set))
	if err := r.pub.flush(ctx); err != nil {
		return nil, err
	}
	r.shadow = s.follower(r, events.StreamShadow, r.eng.ShadowSeq+1)
	r.rollout = s.follower(r, events.StreamRollout, r.eng.RolloutSeq+1)
	s.mu.Lock()
	s.shadow, s.rollout = r.shadow, r.rollout
	s.mu.Unlock()
	s.updateStatus(r)
	return r, nil
}

func (s *Service) follower(r *run, stream string, from uint64) *consume.Follower {
	return consume.New(s.deps.JS, consume.Config{
		Stream: stream, From: from, Source: component, EventSource: events.SourceAlerting,
		Handle: func(ctx context.Context, m consume.Msg) error { return s.handle(ctx, r, m) },
		Log:    s.log,
	})
}

// handle applies one SHADOW or ROLLOUT event and publishes what it
// caused. An event the engine refuses is poison: the follower records it
// on REJECTED and goes on. A publish that does not finish (only when ctx
// ends) is an error: the event, already applied, is handed over again and
// only its publishes are retried.
func (s *Service) handle(ctx context.Context, r *run, m consume.Msg) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Seq > r.seq(m.Stream) {
		var trs []ruleeval.Transition
		var err error
		cause := causeShadow
		if m.Stream == events.StreamRollout {
			cause = causeRollout
			trs, err = r.eng.ApplyRollout(m.Seq, m.Event)
		} else {
			trs, err = r.eng.ApplyShadow(m.Seq, m.Event)
		}
		r.dirty = true
		if err != nil {
			return consume.Poison(err)
		}
		s.queue(r, cause, trs)
	}
	if err := r.pub.flush(ctx); err != nil {
		return err
	}
	s.updateStatus(r)
	return nil
}

// seq is the last sequence of stream the engine applied.
func (r *run) seq(stream string) uint64 {
	if stream == events.StreamRollout {
		return r.eng.RolloutSeq
	}
	return r.eng.ShadowSeq
}

// loop runs the active term's timers and requests until ctx ends: it marks
// the catch-up, ticks, swaps reloaded rules and writes snapshots.
func (s *Service) loop(ctx context.Context, r *run, reloads <-chan loaded) error {
	ticks := make(chan time.Time, 1)
	timer := s.armTick(ticks)
	defer func() { timer.Stop() }()
	snapT := time.NewTicker(s.cfg.SnapshotInterval)
	defer snapT.Stop()
	snapDone := make(chan snapResult, 1)
	snapping := false
	shadowUp, rolloutUp := r.shadow.CaughtUp(), r.rollout.CaughtUp()
	for {
		var err error
		select {
		case <-ctx.Done():
			if snapping {
				res := <-snapDone
				s.locked(r, func() { s.snapshotted(r, res) })
			}
			return nil
		case <-shadowUp:
			shadowUp = nil
			err = s.turn(ctx, r, func() { s.markCaughtUp(r, rolloutUp == nil) })
		case <-rolloutUp:
			rolloutUp = nil
			err = s.turn(ctx, r, func() { s.markCaughtUp(r, shadowUp == nil) })
		case at := <-ticks:
			timer = s.armTick(ticks)
			err = s.turn(ctx, r, func() {
				if !r.caughtUp {
					return // a restart after a long stop must not call the fleet offline
				}
				if err := s.tick(ctx, r, at); err != nil && ctx.Err() == nil {
					s.log.Warn("tick failed; the next tick tries again", "err", err, "tick", at)
				}
			})
		case req := <-s.tickReq:
			err = s.turn(ctx, r, func() { req.done <- s.tick(ctx, r, req.at) })
		case l := <-reloads:
			err = s.turn(ctx, r, func() { s.reloaded(r, l) })
		case done := <-s.snapReq:
			if snapping {
				snapping = false
				res := <-snapDone
				s.locked(r, func() { s.snapshotted(r, res) })
			}
			s.locked(r, func() {
				r.dirty = false
				done <- s.saveSnapshot(ctx, r).err
			})
		case <-snapT.C:
			if !snapping {
				snapping = s.startSnapshot(ctx, r, snapDone)
			}
		case res := <-snapDone:
			snapping = false
			s.locked(r, func() { s.snapshotted(r, res) })
		}
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
}

// locked runs fn holding the run's state.
func (s *Service) locked(r *run, fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn()
}

// turn is one of the loop's turns on the state: fn, then the publishes it
// queued, then the status.
func (s *Service) turn(ctx context.Context, r *run, fn func()) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn()
	if err := r.pub.flush(ctx); err != nil {
		return err
	}
	s.updateStatus(r)
	return nil
}

// armTick has the clock send the next tick time, the next multiple of
// tick_interval, on ticks. A test's clock that never fires leaves the
// ticks to Tick.
func (s *Service) armTick(ticks chan<- time.Time) svc.Timer {
	now := s.clock.Now()
	at := now.Truncate(s.cfg.TickInterval).Add(s.cfg.TickInterval)
	return s.clock.AfterFunc(at.Sub(now), func() {
		select {
		case ticks <- at:
		default: // the loop is behind: it takes the one waiting
		}
	})
}

// markCaughtUp is called as each follower catches up; both is true for
// the second.
func (s *Service) markCaughtUp(r *run, both bool) {
	if !both {
		return
	}
	r.caughtUp = true
	r.published = nil
	s.deps.Health.Set(component, nil)
	s.log.Info("caught up", "shadow_seq", r.eng.ShadowSeq, "rollout_seq", r.eng.RolloutSeq,
		"devices", r.eng.Fleet().Len(), "active_alerts", r.eng.ActiveCount())
}

// updateStatus copies the state's figures into the Status.
func (s *Service) updateStatus(r *run) {
	s.setStatus(func(st *Status) {
		st.ShadowSeq, st.RolloutSeq, st.AlertsSeq = r.eng.ShadowSeq, r.eng.RolloutSeq, r.pub.alertsSeq
		st.CaughtUp, st.Devices, st.Active = r.caughtUp, r.eng.Fleet().Len(), r.eng.ActiveCount()
	})
}

// end closes an active term, once the followers have stopped: the final
// snapshot (unless a crash is simulated or the lease was lost), then the
// followers' counts go into the Status.
func (s *Service) end(r *run, lost func() bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dirty && !s.crashOnStop && !lost() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := r.pub.flush(sctx) // what the last handled event caused
		if err == nil {
			err = s.saveSnapshot(sctx, r).err
		}
		cancel()
		if err != nil {
			s.log.Warn("final snapshot failed; the next start reads more of the log", "err", err)
		}
	}
	s.mu.Lock()
	s.status.ShadowSeq = max(s.status.ShadowSeq, r.shadow.Applied())
	s.status.RolloutSeq = max(s.status.RolloutSeq, r.rollout.Applied())
	s.status.Rejected += int(r.shadow.Rejected() + r.rollout.Rejected())
	s.shadow, s.rollout = nil, nil
	s.mu.Unlock()
	s.deps.Health.Set(component, errors.New("stopped"))
}

// queue publishes transitions a turn of cause computed, less those
// already on ALERTS, each with the engine's position (position.go).
func (s *Service) queue(r *run, cause string, trs []ruleeval.Transition) {
	if len(trs) == 0 {
		return
	}
	r.dirty = true
	hdr := r.positionNow(cause).header()
	for _, tr := range trs {
		ev, err := tr.Event()
		if err != nil {
			s.log.Error("build alert event", "key", tr.Alert.Key, "err", err)
			continue
		}
		if r.published[ev.ID] {
			continue
		}
		if err := r.pub.add(tr.Subject(), ev, hdr); err != nil {
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
	s.queue(r, causeTick, trs)
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
	s.recordRules(r, l, events.RulesLoadedReload)
	s.queue(r, causeRules, r.eng.SetRules(l.set))
	s.log.Info("rules reloaded", "rules", strings.Join(l.set.IDs(), ","), "on_request", l.forced)
	s.setStatus(func(st *Status) {
		st.Rules, st.ReloadError = l.set.IDs(), ""
		st.Reloads++
	})
}
