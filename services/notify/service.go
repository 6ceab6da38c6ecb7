package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/lease"
	"github.com/otawatch/otawatch/services/internal/match"
	"github.com/otawatch/otawatch/services/internal/svc"
)

const component = "notify"

// Service is the notify service: it follows ALERTS, routes and groups the
// alerts, and delivers each group's notifications to its receiver,
// recording every decision on NOTIFY.
type Service struct {
	root         *route
	inhibit      []inhibitRule
	receivers    map[string]Notifier
	externalURL  string
	timeout      time.Duration
	retryInitial time.Duration
	retryMax     time.Duration
	retryFor     time.Duration
	leaseBucket  string
	leaseTTL     time.Duration

	deps  svc.Deps
	log   *slog.Logger
	clock svc.Clock

	mu sync.Mutex
	// d is the active run's state, runCtx its context (nil standing by).
	d      *dispatcher
	runCtx context.Context
	// wg counts the active run's deliveries and publishes.
	wg      sync.WaitGroup
	standby bool
	caught  bool
	notifyF *consume.Follower
	alertsF *consume.Follower

	// dry, set by Replay, takes what flushes decide instead of
	// delivering and recording it (replay.go).
	dry *dryRun

	attempts, sent, failed, suppressed atomic.Uint64
	// retryWaits counts deliveries waiting to retry (tests wait for it).
	retryWaits atomic.Int32
	// busy counts the deliveries and suppression records under way
	// (Status.Busy).
	busy atomic.Int32
}

// Status is what the service has done so far, for tests and operators.
type Status struct {
	// Standby is true while another instance holds the notify lease.
	Standby bool
	// CaughtUp is true once NOTIFY and ALERTS as they were at start have
	// been read and groups are flushed.
	CaughtUp bool
	// NotifySeq and AlertsSeq are the last sequences read.
	NotifySeq, AlertsSeq uint64
	// Alerts, Groups and Silences are held now (of the active run).
	Alerts, Groups, Silences int
	// Attempts, Sent, Failed and Suppressed count this process's
	// records on NOTIFY.
	Attempts, Sent, Failed, Suppressed uint64
	// Busy is the number of deliveries and suppression records under
	// way: 0 once everything decided so far is on NOTIFY (or failed).
	Busy int
}

// New builds the service; it does no I/O but reading the receivers'
// secret files. Unset keys of cfg take their defaults, and a
// configuration that Validate refuses is a *conf.Error listing every
// problem. Timers (group_wait, group_interval, retries) run on
// deps.Clock.
func New[R ReceiverConfig](cfg Config[R], deps svc.Deps) (*Service, error) {
	if err := conf.Check("notify", &cfg); err != nil {
		return nil, err
	}
	if deps.JS == nil {
		return nil, errors.New("notify needs JetStream (deps.JS)")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", component)
	root, err := compileRoute(cfg.Route, nil)
	if err != nil {
		return nil, fmt.Errorf("notify route: %w", err)
	}
	inhibit, err := compileInhibit(cfg.InhibitRules)
	if err != nil {
		return nil, err
	}
	s := &Service{
		root: root, inhibit: inhibit, receivers: map[string]Notifier{}, externalURL: cfg.ExternalURL,
		timeout: cfg.Timeout, retryInitial: cfg.RetryInitial, retryMax: cfg.RetryMax, retryFor: cfg.RetryFor,
		leaseBucket: cfg.LeaseBucket, leaseTTL: cfg.LeaseTTL,
		deps: deps, log: log, clock: deps.ClockOf(),
	}
	for _, r := range cfg.Receivers {
		n, err := r.Notifier(log.With("receiver", r.ReceiverName()))
		if err != nil {
			return nil, fmt.Errorf("build receiver %q: %w", r.ReceiverName(), err)
		}
		s.receivers[r.ReceiverName()] = n
	}
	return s, nil
}

func compileInhibit(rules []InhibitRule) ([]inhibitRule, error) {
	out := make([]inhibitRule, 0, len(rules))
	for i, r := range rules {
		src, err := match.ParseAll(r.SourceMatchers)
		if err != nil {
			return nil, fmt.Errorf("inhibit rule %d: %w", i, err)
		}
		tgt, err := match.ParseAll(r.TargetMatchers)
		if err != nil {
			return nil, fmt.Errorf("inhibit rule %d: %w", i, err)
		}
		out = append(out, inhibitRule{source: src, target: tgt, equal: r.Equal})
	}
	return out, nil
}

// Status returns what the service has done so far.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Standby: s.standby, CaughtUp: s.caught,
		Attempts: s.attempts.Load(), Sent: s.sent.Load(), Failed: s.failed.Load(), Suppressed: s.suppressed.Load(),
		Busy: int(s.busy.Load())}
	if s.notifyF != nil {
		st.NotifySeq = s.notifyF.Applied()
	}
	if s.alertsF != nil {
		st.AlertsSeq = s.alertsF.Applied()
	}
	if s.d != nil {
		st.Alerts, st.Groups, st.Silences = len(s.d.alerts), len(s.d.groups), len(s.d.silences)
	}
	return st
}

// Run runs the service until ctx ends. While this instance holds the
// notify lease it is active: it rebuilds its state from NOTIFY and ALERTS
// and then follows both; otherwise it stands by, reading nothing, and
// takes over when the lease is free. One instance delivers at a time.
func (s *Service) Run(ctx context.Context) error {
	if len(s.receivers) == 0 {
		s.log.Warn("no receivers configured: alerts are routed and silences kept, but no notification is delivered")
	}
	l, err := lease.Open(ctx, s.deps.JS, lease.Config{
		Bucket: s.leaseBucket, Key: "notify", Holder: lease.InstanceName(), What: "notify",
		TTL: s.leaseTTL, Replicas: s.deps.Streams.Replicas, Log: s.log,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	err = l.Serve(ctx, func() {
		s.deps.Health.Set(component, errors.New("standby: another instance holds the notify lease"))
		s.mu.Lock()
		s.standby = true
		s.mu.Unlock()
		s.log.Info("notify standing by: another instance holds the lease")
	}, func(ctx context.Context, _ func() bool) error {
		return s.runActive(ctx)
	})
	if err == nil {
		s.deps.Health.Set(component, errors.New("stopped"))
	}
	return err
}

// runActive is one active turn: read NOTIFY to its end (what was decided
// and delivered, the silences), then ALERTS to its end (the alerts and
// their groups) without deciding anything, then flush every group and
// follow both. Reading in that order is what makes a restart, a standby's
// takeover or a replay of ALERTS re-send nothing NOTIFY records as sent.
func (s *Service) runActive(ctx context.Context) error {
	d := newDispatcher(s.root, s.inhibit)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	nf := consume.New(s.deps.JS, consume.Config{Stream: events.StreamNotify, Source: component,
		EventSource: events.SourceNotify, Handle: s.handleNotify(d), Log: s.log})
	af := consume.New(s.deps.JS, consume.Config{Stream: events.StreamAlerts, Source: component,
		EventSource: events.SourceNotify, Handle: s.handleAlert(d), Log: s.log})
	s.mu.Lock()
	s.d, s.runCtx, s.standby, s.caught, s.notifyF, s.alertsF = d, fctx, false, false, nf, af
	s.mu.Unlock()
	defer func() {
		cancel()
		s.mu.Lock()
		for _, g := range d.groups {
			if g.timer != nil {
				g.timer.Stop()
			}
		}
		s.d, s.runCtx, s.caught = nil, nil, false
		s.mu.Unlock()
		s.wg.Wait()
	}()
	s.deps.Health.Set(component, errors.New("reading NOTIFY"))
	errc := make(chan error, 2)
	running := 1
	go func() { errc <- nf.Run(fctx) }()
	wait := func(caught <-chan struct{}) (bool, error) {
		select {
		case <-caught:
			return true, nil
		case <-ctx.Done():
			return false, nil
		case err := <-errc:
			running--
			return false, err
		}
	}
	stop := func(err error) error {
		cancel()
		for ; running > 0; running-- {
			<-errc
		}
		return err
	}
	if ok, err := wait(nf.CaughtUp()); !ok {
		return stop(err)
	}
	s.deps.Health.Set(component, errors.New("reading ALERTS"))
	running++
	go func() { errc <- af.Run(fctx) }()
	if ok, err := wait(af.CaughtUp()); !ok {
		return stop(err)
	}
	s.mu.Lock()
	d.live = true
	s.caught = true
	gs := make([]*group, 0, len(d.groups))
	for _, g := range d.groups {
		gs = append(gs, g)
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i].id < gs[j].id })
	for _, g := range gs {
		s.scheduleFirst(d, g)
	}
	alerts, groups := len(d.alerts), len(d.groups)
	s.mu.Unlock()
	s.deps.Health.Set(component, nil)
	s.log.Info("notify active", "alerts", alerts, "groups", groups, "receivers", len(s.receivers))
	select {
	case <-ctx.Done():
		return stop(nil)
	case err := <-errc:
		running--
		return stop(err)
	}
}

// handleAlert folds ALERTS events into d.
func (s *Service) handleAlert(d *dispatcher) func(context.Context, consume.Msg) error {
	return func(_ context.Context, m consume.Msg) error {
		if m.Event.Type != events.TypeAlertRaised && m.Event.Type != events.TypeAlertResolved {
			return nil // not an alert lifecycle event: nothing to notify
		}
		var a events.AlertData
		if err := m.Event.DecodeData(&a); err != nil {
			return consume.Poison(fmt.Errorf("decode alert data: %w", err))
		}
		if a.Key == "" || (a.State != events.AlertRaised && a.State != events.AlertResolved) {
			return consume.Poison(fmt.Errorf("alert event %s: key %q, state %q: want a key and raised or resolved", m.Event.ID, a.Key, a.State))
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.d != d {
			return nil
		}
		for _, g := range d.applyAlert(a, s.clock.Now()) {
			if d.live {
				s.scheduleFirst(d, g)
			}
		}
		return nil
	}
}

// handleNotify folds NOTIFY events (this instance's own among them) into
// d.
func (s *Service) handleNotify(d *dispatcher) func(context.Context, consume.Msg) error {
	return func(_ context.Context, m consume.Msg) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.d != d {
			return nil
		}
		switch m.Event.Type {
		case events.TypeNotifyAttempt, events.TypeNotifySent, events.TypeNotifyFailed:
			var nd events.NotificationData
			if err := m.Event.DecodeData(&nd); err != nil {
				return consume.Poison(fmt.Errorf("decode notification data: %w", err))
			}
			switch m.Event.Type {
			case events.TypeNotifyAttempt:
				d.record(nd)
			case events.TypeNotifySent:
				d.applySent(nd, m.Event.Time)
			default:
				d.applyFailed(nd)
			}
		case events.TypeNotifySuppressed:
			var sd events.SuppressedData
			if err := m.Event.DecodeData(&sd); err != nil {
				return consume.Poison(fmt.Errorf("decode suppressed data: %w", err))
			}
			cause := sd.SilenceID + sd.InhibitedBy
			d.suppressed[events.SuppressedEventID(sd.Receiver, sd.AlertID, sd.Reason, cause)] = true
		case events.TypeSilenceCreated:
			var sd events.SilenceData
			if err := m.Event.DecodeData(&sd); err != nil {
				return consume.Poison(fmt.Errorf("decode silence data: %w", err))
			}
			ms, err := match.ParseAll(sd.Matchers)
			if err != nil {
				return consume.Poison(fmt.Errorf("silence %s: %w", sd.ID, err))
			}
			if d.silences[sd.ID] == nil {
				d.silences[sd.ID] = &silence{data: sd, matchers: ms}
			}
		case events.TypeSilenceExpired:
			var ed events.SilenceExpiredData
			if err := m.Event.DecodeData(&ed); err != nil {
				return consume.Poison(fmt.Errorf("decode silence expiry: %w", err))
			}
			if sl := d.silences[ed.ID]; sl != nil && sl.expired == nil {
				at := ed.At
				sl.expired = &at
			}
		}
		return nil
	}
}

// scheduleFirst sets a new group's first flush: group_wait from now (at
// once for 0), or the route's next digest time.
func (s *Service) scheduleFirst(d *dispatcher, g *group) {
	switch {
	case g.route.digest:
		now := s.clock.Now()
		s.scheduleAfter(d, g, g.route.nextDigest(now).Sub(now))
	case g.route.groupWait <= 0:
		s.flush(d, g)
	default:
		s.scheduleAfter(d, g, g.route.groupWait)
	}
}

func (s *Service) scheduleAfter(d *dispatcher, g *group, after time.Duration) {
	if g.timer != nil {
		g.timer.Stop()
	}
	g.timer = s.clock.AfterFunc(after, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.d != d || d.groups[g.id] != g {
			return
		}
		g.timer = nil
		s.flush(d, g)
	})
}

// flush decides whether g's receiver is due a notification and starts its
// delivery; the next flush follows group_interval later (or at the next
// digest time). s.mu is held.
func (s *Service) flush(d *dispatcher, g *group) {
	now := s.clock.Now()
	next := g.route.groupInterval
	if g.route.digest {
		next = g.route.nextDigest(now).Sub(now)
	}
	if g.inflight {
		s.scheduleAfter(d, g, next) // the delivery in flight tells its story first
		return
	}
	dec := d.decide(g, now)
	switch {
	case len(dec.suppressed) == 0:
	case s.dry != nil:
		s.dry.suppress(now, dec.suppressed)
	default:
		s.wg.Add(1)
		s.busy.Add(1)
		go s.recordSuppressed(s.runCtx, now, dec.suppressed)
	}
	if !dec.send {
		for _, al := range dec.done {
			d.drop(g, al)
		}
		if d.groups[g.id] == g {
			s.scheduleAfter(d, g, next)
		}
		return
	}
	notifier := s.receivers[g.route.receiver]
	if notifier == nil {
		s.log.Error("route names a receiver that is not built", "receiver", g.route.receiver)
		return
	}
	g.inflight = true
	s.scheduleAfter(d, g, next)
	n := &Notification{Receiver: g.route.receiver, GroupKey: g.key, Status: dec.nd.Status,
		GroupLabels: g.labels, CommonLabels: dec.common, Alerts: dec.alerts, Time: dec.nd.DecidedAt, ExternalURL: s.externalURL}
	if s.dry != nil {
		s.dry.deliver(s, d, g, notifier, n, dec)
		return
	}
	s.wg.Add(1)
	s.busy.Add(1)
	go s.deliver(s.runCtx, d, g, notifier, n, dec)
}

// recordSuppressed puts suppression decisions on NOTIFY.
func (s *Service) recordSuppressed(ctx context.Context, at time.Time, list []events.SuppressedData) {
	defer s.wg.Done()
	defer s.busy.Add(-1)
	for _, sd := range list {
		id := events.SuppressedEventID(sd.Receiver, sd.AlertID, sd.Reason, sd.SilenceID+sd.InhibitedBy)
		if err := s.publish(ctx, events.NotifySubject(sd.Receiver, events.NotifySuppressed), id,
			events.TypeNotifySuppressed, sd.AlertID, at, sd); err != nil {
			if ctx.Err() == nil {
				s.log.Error("record suppressed alert", "receiver", sd.Receiver, "alert", sd.Key, "err", err)
			}
			return
		}
		s.suppressed.Add(1)
	}
}

// publish stores one event on NOTIFY with its id as Nats-Msg-Id, waiting
// for the acknowledgement.
func (s *Service) publish(ctx context.Context, subject, id, typ, evSubject string, at time.Time, data any) error {
	ev, err := events.New(id, events.SourceNotify, typ, evSubject, at, data)
	if err != nil {
		return err
	}
	b, err := ev.Marshal()
	if err != nil {
		return fmt.Errorf("marshal %s event %s: %w", typ, id, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = b
	msg.Header.Set(jetstream.MsgIDHeader, id)
	err = events.Retry(ctx, 5, func(ctx context.Context) error {
		_, err := s.deps.JS.PublishMsg(ctx, msg)
		return err
	})
	if err != nil {
		return fmt.Errorf("publish %s to %s: %w", typ, subject, err)
	}
	return nil
}
