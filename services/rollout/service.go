package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
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
	clock    Clock
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
	// shadowSeq and rolloutSeq are the stream sequences applied so far;
	// catchUp* the streams' last sequences at start.
	shadowSeq, rolloutSeq         uint64
	catchUpShadow, catchUpRollout uint64
	ready                         bool
	readyCh                       chan struct{}

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
}

// desiredRec is a recorded desired event of a job's device.
type desiredRec struct {
	attempt int
	at      time.Time
}

// Option changes how New builds the service (for tests).
type Option func(*Service)

// Clock is the time source of everything that is not an event handler:
// the driver's tick and the lease's step-down timer. Tests inject their own.
type Clock = lease.Clock

// LeaseKey is the key the driver lease lives under. One lease covers the
// whole orchestrator: jobs are light (their work is rate-limited sends), and
// one driver keeps all jobs' sends under one view of the broker.
const LeaseKey = "driver"

// WithClock sets the clock of the driver and the lease.
func WithClock(c Clock) Option { return func(s *Service) { s.clock = c } }

// WithInstance names the instance (the lease holder and MQTT client id).
func WithInstance(id string) Option { return func(s *Service) { s.instance = id } }

// New builds the service; it does no I/O.
func New(cfg Config, deps svc.Deps, opts ...Option) (*Service, error) {
	cfg.SetDefaults()
	if cfg.Broker == "" {
		cfg.Broker = DefaultBroker
	}
	p := conf.NewProblems()
	cfg.Validate(p)
	if list := p.List(); len(list) > 0 {
		msgs := make([]string, len(list))
		for i, pr := range list {
			msgs[i] = "rollout." + pr.Key + ": " + pr.Reason
		}
		return nil, fmt.Errorf("rollout config: %s", strings.Join(msgs, "; "))
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	s := &Service{
		cfg: cfg, deps: deps, clock: lease.WallClock{},
		log:     deps.Log.With("component", "rollout"),
		fleet:   fleet.New(),
		jobs:    map[string]*Job{},
		desired: map[string]map[events.DeviceRef]desiredRec{},
		buckets: map[string]*bucket{},
		gates:   map[string]*celGate{},
		readyCh: make(chan struct{}),

		settled:       map[string]uint64{},
		retractedHere: map[string]bool{},
	}
	for _, o := range opts {
		o(s)
	}
	if s.instance == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		s.instance = hex.EncodeToString(b[:])
	}
	s.log = s.log.With("instance", s.instance)
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
	s.deps.Health.Set("rollout", errors.New("catching up with the SHADOW and ROLLOUT streams"))
	if err := s.catchUpTargets(ctx); err != nil {
		return err
	}
	var err error
	s.lease, err = lease.Open(ctx, s.deps.JS, lease.Config{
		Bucket: s.cfg.LeaseBucket, Key: LeaseKey, Holder: s.instance, What: "rollout driver",
		TTL: s.cfg.LeaseTTL, Replicas: s.deps.Streams.Replicas, Clock: s.clock, Log: s.log,
	})
	if err != nil {
		return err
	}

	// Each instance folds the whole SHADOW and ROLLOUT streams itself, with
	// ordered (ephemeral) consumers from the start: a shared durable
	// consumer would split the events between instances, and every
	// instance needs all of them to answer commands and to take over.
	// events.ConsumerRolloutShadow stays reserved for a snapshot-based
	// durable consumer.
	shadowCtx, err := s.consume(ctx, events.StreamShadow, s.onShadow)
	if err != nil {
		return err
	}
	defer shadowCtx.Stop()
	rolloutCtx, err := s.consume(ctx, events.StreamRollout, s.onRollout)
	if err != nil {
		return err
	}
	defer rolloutCtx.Stop()
	s.checkReady()

	sub, err := s.deps.NC.QueueSubscribe(events.RolloutCommandPrefix+".*.*", QueueGroup, func(m *nats.Msg) { s.onCommand(ctx, m) })
	if err != nil {
		return fmt.Errorf("subscribe to rollout commands: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	s.client = s.newMQTT()
	s.client.Connect() // retries in the background; sends wait for the connection
	defer s.client.Disconnect(250)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.lease.Run(ctx)
	}()
	defer wg.Wait()

	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			s.drive(ctx)
		}
	}
}

func (s *Service) catchUpTargets(ctx context.Context) error {
	for _, name := range []string{events.StreamShadow, events.StreamRollout} {
		var last uint64
		err := events.Retry(ctx, 5, func(ctx context.Context) error {
			st, err := s.deps.JS.Stream(ctx, name)
			if err != nil {
				return err
			}
			info, err := st.Info(ctx)
			if err != nil {
				return err
			}
			last = info.State.LastSeq
			return nil
		})
		if err != nil {
			return fmt.Errorf("read stream %s: %w", name, err)
		}
		if name == events.StreamShadow {
			s.catchUpShadow = last
		} else {
			s.catchUpRollout = last
		}
	}
	return nil
}

func (s *Service) consume(ctx context.Context, stream string, handle func(seq uint64, e events.Event, subject string)) (jetstream.ConsumeContext, error) {
	var cons jetstream.Consumer
	err := events.Retry(ctx, 5, func(ctx context.Context) error {
		var err error
		cons, err = s.deps.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer on %s: %w", stream, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, err := m.Metadata()
		if err != nil {
			s.log.Warn("message without metadata", "stream", stream, "err", err)
			return
		}
		e, err := events.Decode(m.Data())
		if err != nil {
			// Not ours to reject: the writer of that stream records its
			// own rejects. Skip it, but say so.
			s.log.Warn("undecodable event skipped", "stream", stream, "stream_seq", meta.Sequence.Stream, "err", err)
			e = events.Event{}
		}
		handle(meta.Sequence.Stream, e, m.Subject())
	}, jetstream.PullMaxMessages(4096))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", stream, err)
	}
	return cc, nil
}

func (s *Service) onShadow(seq uint64, e events.Event, _ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Type != "" {
		dev, err := s.fleet.Apply(seq, e)
		switch {
		case err != nil:
			s.log.Warn("shadow event not applied", "stream_seq", seq, "event_id", e.ID, "err", err)
		case e.Type == events.TypeShadowDesired:
			var d events.ShadowDesiredData
			if e.DecodeData(&d) == nil && d.JobID != "" {
				s.noteDesired(d.JobID, events.DeviceRef{TypeID: d.TypeID, DeviceID: d.DeviceID}, d.Attempt, e.Time)
			}
		}
		if err == nil && dev != nil && dev.JobID != "" {
			// The device's state changed: its job, if aborted, may have a
			// clear to do again (a late desired event, a failed device
			// that started over).
			delete(s.settled, dev.JobID)
		}
	}
	if seq > s.shadowSeq {
		s.shadowSeq = seq
	}
	s.checkReadyLocked()
}

func (s *Service) noteDesired(job string, ref events.DeviceRef, attempt int, at time.Time) {
	m := s.desired[job]
	if m == nil {
		m = map[events.DeviceRef]desiredRec{}
		s.desired[job] = m
	}
	if old, ok := m[ref]; !ok || attempt >= old.attempt {
		m[ref] = desiredRec{attempt: attempt, at: at}
	}
}

func (s *Service) onRollout(seq uint64, e events.Event, subject string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Type != "" {
		if id, _, ok := events.ParseRolloutSubject(subject); ok {
			j, err := Apply(s.jobs[id], seq, e)
			if err != nil {
				s.log.Warn("rollout event not applied", "stream_seq", seq, "event_id", e.ID, "job_id", id, "err", err)
			} else if j != nil {
				s.jobs[id] = j
			}
		}
	}
	if seq > s.rolloutSeq {
		s.rolloutSeq = seq
	}
	s.checkReadyLocked()
}

func (s *Service) checkReady() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkReadyLocked()
}

func (s *Service) checkReadyLocked() {
	if s.ready || s.shadowSeq < s.catchUpShadow || s.rolloutSeq < s.catchUpRollout {
		return
	}
	s.ready = true
	close(s.readyCh)
	s.deps.Health.Set("rollout", nil)
	s.log.Info("rollout state caught up", "jobs", len(s.jobs), "devices", s.fleet.Len(),
		"shadow_seq", s.shadowSeq, "rollout_seq", s.rolloutSeq)
}

// waitReady waits until the streams are folded up to where they were at
// start, so no command and no decision works on a partial state.
func (s *Service) waitReady(ctx context.Context) error {
	select {
	case <-s.readyCh:
		return nil
	case <-ctx.Done():
		return &CommandError{Code: events.RolloutErrUnavailable, Msg: "the rollout service is still reading its streams; try again"}
	}
}

// errConflict is an append refused because the job has events this
// instance has not folded yet.
var errConflict = errors.New("the job changed concurrently")

// appendLocked appends a job's pending events, each expecting the job's
// last event to be the one before it (so two instances cannot interleave
// decisions), and folds each into the job at once. The caller holds s.mu.
func (s *Service) appendLocked(ctx context.Context, id string, pend []Pending, now time.Time) (*Job, error) {
	j := s.jobs[id]
	filter := events.SubjectRollout + "." + id + ".>"
	for _, p := range pend {
		var expect uint64
		if j != nil {
			expect = j.LastSeq
		}
		e, err := events.New(events.IdentityID("ro", id, fmt.Sprint(expect), p.Type), events.SourceRollout, p.Type, id, now, p.Data)
		if err != nil {
			return j, err
		}
		body, err := e.Marshal()
		if err != nil {
			return j, fmt.Errorf("encode %s: %w", p.Type, err)
		}
		var ack *jetstream.PubAck
		err = events.Retry(ctx, 3, func(ctx context.Context) error {
			var err error
			ack, err = s.deps.JS.Publish(ctx, events.RolloutSubject(id, events.RolloutEventName(p.Type)), body,
				jetstream.WithMsgID(e.ID), jetstream.WithExpectLastSequenceForSubject(expect, filter))
			return err
		})
		if err != nil {
			if events.IsWrongLastSequence(err) {
				return j, errConflict
			}
			if errors.Is(err, nats.ErrMaxPayload) {
				return j, invalid("event %s of job %s is too large for the server: %v", events.RolloutEventName(p.Type), id, err)
			}
			return j, fmt.Errorf("append %s to job %s: %w", events.RolloutEventName(p.Type), id, err)
		}
		if ack.Duplicate {
			// Stored by an earlier try whose ack was lost: fold what is
			// stored, not this copy.
			if e, err = s.storedEvent(ctx, events.StreamRollout, ack.Sequence); err != nil {
				return j, err
			}
		}
		if j, err = Apply(j, ack.Sequence, e); err != nil {
			return j, err
		}
		s.jobs[id] = j
		s.stats.EventsAppended++
	}
	return j, nil
}

func (s *Service) storedEvent(ctx context.Context, stream string, seq uint64) (events.Event, error) {
	var e events.Event
	err := events.Retry(ctx, 3, func(ctx context.Context) error {
		st, err := s.deps.JS.Stream(ctx, stream)
		if err != nil {
			return err
		}
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			return err
		}
		e, err = events.Decode(m.Data)
		return err
	})
	if err != nil {
		return e, fmt.Errorf("read %s seq %d: %w", stream, seq, err)
	}
	return e, nil
}

// waitFolded waits (briefly) until the job has an event past seq, after a
// conflict says the stream has one this instance has not folded yet.
func (s *Service) waitFolded(ctx context.Context, id string, seq uint64) {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		s.mu.Lock()
		j := s.jobs[id]
		moved := j != nil && j.LastSeq > seq
		s.mu.Unlock()
		if moved {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lastSeq(j *Job) uint64 {
	if j == nil {
		return 0
	}
	return j.LastSeq
}

func (s *Service) newMQTT() mqtt.Client {
	id := s.cfg.ClientID
	if id == "" {
		id = "otawatch-rollout-" + s.instance
	}
	o := mqtt.NewClientOptions().AddBroker(s.cfg.Broker).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(10 * time.Second).
		SetOrderMatters(false).SetKeepAlive(30 * time.Second).
		SetOnConnectHandler(func(mqtt.Client) {
			s.deps.Health.Set("rollout_mqtt", nil)
			s.log.Info("mqtt connected", "broker", s.cfg.Broker)
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			s.deps.Health.Set("rollout_mqtt", fmt.Errorf("mqtt connection lost: %w", err))
			s.log.Warn("mqtt connection lost", "broker", s.cfg.Broker, "err", err)
		})
	if tc, err := s.cfg.TLS.Config(); err != nil {
		s.log.Error("mqtt tls", "err", err) // Validate reported it already
	} else if tc != nil {
		o.SetTLSConfig(tc)
	}
	if s.cfg.Username != "" {
		o.SetUsername(s.cfg.Username)
	}
	if s.cfg.PasswordFile != "" {
		if pw, err := conf.ReadSecret(s.cfg.PasswordFile); err != nil {
			s.log.Error("read mqtt password", "err", err)
		} else {
			o.SetPassword(pw)
		}
	}
	s.deps.Health.Set("rollout_mqtt", errors.New("connecting to "+s.cfg.Broker))
	return mqtt.NewClient(o)
}

// onCommand answers one request on the command subjects. The actor comes
// from the sender's identity (events.CommandActor), never from the body; a
// message without a reply subject is not a request and is dropped, logged.
func (s *Service) onCommand(ctx context.Context, m *nats.Msg) {
	cmd, identity, ok := events.ParseRolloutCommandSubject(m.Subject)
	if m.Reply == "" {
		s.log.Warn("rollout command without a reply subject dropped", "subject", m.Subject)
		return
	}
	var req events.RolloutRequest
	var rep events.RolloutReply
	switch {
	case !ok:
		rep = replyErr(invalid("%q is not a rollout command subject (%s.CMD.IDENTITY)", m.Subject, events.RolloutCommandPrefix))
	case len(m.Data) > 0:
		var err error
		if req, err = DecodeRequest(cmd, m.Data); err != nil {
			rep = replyErr(err)
		}
	}
	if rep.Error == "" {
		actor, err := events.CommandActor(identity, m.Header.Get(events.RolloutActorHeader))
		if err != nil {
			rep = replyErr(&CommandError{Code: events.RolloutErrForbidden, Msg: err.Error()})
		}
		req.Actor = actor
	}
	if rep.Error == "" {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rep = s.Handle(wctx, cmd, req)
		cancel()
	}
	body, err := json.Marshal(rep)
	if err != nil {
		body, _ = json.Marshal(replyErr(fmt.Errorf("encode reply: %w", err)))
	}
	if err := m.Respond(body); err != nil {
		s.log.Warn("respond to rollout command", "cmd", cmd, "err", err)
	}
}

func replyErr(err error) events.RolloutReply {
	var ce *CommandError
	if errors.As(err, &ce) {
		return events.RolloutReply{Error: ce.Msg, Code: ce.Code}
	}
	return events.RolloutReply{Error: err.Error(), Code: events.RolloutErrUnavailable}
}

// Handle runs one rollout command and returns its reply (the command
// subjects' handler; exported for in-process callers).
func (s *Service) Handle(ctx context.Context, cmd string, req events.RolloutRequest) events.RolloutReply {
	if err := s.waitReady(ctx); err != nil {
		return replyErr(err)
	}
	now := s.clock.Now()
	switch cmd {
	case "list":
		s.mu.Lock()
		defer s.mu.Unlock()
		jobs := make([]events.RolloutJob, 0, len(s.jobs))
		for _, j := range s.jobs {
			jobs = append(jobs, s.viewLocked(j, now, false))
		}
		sort.Slice(jobs, func(a, b int) bool {
			if !jobs[a].CreatedAt.Equal(jobs[b].CreatedAt) {
				return jobs[a].CreatedAt.After(jobs[b].CreatedAt)
			}
			return jobs[a].ID < jobs[b].ID
		})
		return events.RolloutReply{Jobs: jobs}
	case "show":
		s.mu.Lock()
		defer s.mu.Unlock()
		j := s.jobs[req.JobID]
		if j == nil {
			return replyErr(&CommandError{Code: events.RolloutErrNotFound, Msg: fmt.Sprintf("no rollout job %q", req.JobID)})
		}
		v := s.viewLocked(j, now, true)
		return events.RolloutReply{Job: &v}
	case "delta":
		return s.delta(req)
	}
	if cmd == CmdCreate && req.Spec != nil && req.Spec.ID == "" {
		spec := *req.Spec
		spec.ID = newJobID(now)
		req.Spec = &spec
	}
	id := req.JobID
	if cmd == CmdCreate && req.Spec != nil {
		id = req.Spec.ID
	}
	var retried int
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		j := s.jobs[id]
		pend, err := Command(j, cmd, req, s.commandContextLocked(now))
		if err != nil {
			s.mu.Unlock()
			return replyErr(err)
		}
		before := lastSeq(j)
		j, err = s.appendLocked(ctx, id, pend, now)
		if errors.Is(err, errConflict) && attempt < 5 {
			s.mu.Unlock()
			s.waitFolded(ctx, id, before)
			continue
		}
		if err != nil {
			s.mu.Unlock()
			return replyErr(err)
		}
		if cmd == CmdRetryFailed {
			retried = len(pend[0].Data.Devices)
		}
		v := s.viewLocked(j, now, true)
		s.mu.Unlock()
		s.log.Info("rollout command", "cmd", cmd, "job_id", id, "status", j.Status)
		return events.RolloutReply{Job: &v, Retried: retried}
	}
}

func (s *Service) commandContextLocked(now time.Time) CommandContext {
	maxPlan := 0
	if s.deps.NC != nil {
		maxPlan = int(s.deps.NC.MaxPayload()) - 4096
	}
	return CommandContext{Now: now, Fleet: s.fleet, Jobs: s.jobs, Defaults: s.cfg, CheckCEL: checkCEL, MaxPlanBytes: maxPlan}
}

func newJobID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "r" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// delta is the difference between a device's desired and reported firmware:
// the body of GET .../shadow/delta. In sync (or never targeted) it is empty.
func (s *Service) delta(req events.RolloutRequest) events.RolloutReply {
	if err := events.ValidateID("type id", req.TypeID); err != nil {
		return replyErr(invalid("%v", err))
	}
	if err := events.ValidateID("device id", req.DeviceID); err != nil {
		return replyErr(invalid("%v", err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.fleet.Device(req.TypeID, req.DeviceID)
	if !ok {
		return replyErr(&CommandError{Code: events.RolloutErrNotFound, Msg: fmt.Sprintf("device %s/%s is unknown", req.TypeID, req.DeviceID)})
	}
	delta := DeltaOf(d)
	if j := s.jobs[d.JobID]; j != nil && j.Status == events.RolloutAborted {
		// An aborted job asks nothing of its devices any more.
		delta.State.Firmware = nil
	}
	return events.RolloutReply{Delta: delta}
}

// DeltaOf is a device's shadow delta: its desired firmware when the device
// has not reported completing it, nothing when in sync. The timestamp is
// the newest event the answer rests on (as the HTTP API answers it). It
// does not know the job's status: the caller leaves out the firmware of an
// aborted job.
func DeltaOf(d fleet.Device) *events.ShadowDelta {
	out := &events.ShadowDelta{Timestamp: d.LastSeen}
	if d.DesiredAt.After(out.Timestamp) {
		out.Timestamp = d.DesiredAt
	}
	if d.Target == nil || d.Status == events.StatusCompleted && d.Version == d.Target.Version {
		return out
	}
	out.State.Firmware = &events.DeltaFirmware{Version: d.Target.Version, Checksum: d.Target.Checksum, URL: d.Target.URL, JobID: d.JobID}
	return out
}
