package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// HealthComponent is the bridge's name in the health registry; it is not
// ready while the MQTT connection is down.
const HealthComponent = "bridge"

// RejectSource is the bridge's source token on REJECTED
// (events.RejectedSubject(RejectSource)) and in RejectedData.Source.
const RejectSource = "bridge"

// Service is the bridge: it subscribes to device reports over MQTT and
// stores each accepted report as one event on SHADOW, each refused one on
// REJECTED, acknowledging the MQTT message only once JetStream has stored
// the event.
type Service struct {
	cfg  Config
	deps svc.Deps
	log  *slog.Logger
	dec  *Decoder
	now  func() time.Time

	accepted   atomic.Uint64
	duplicates atomic.Uint64
	rejected   atomic.Uint64
	retries    atomic.Uint64
	inFlight   atomic.Int64

	// hooks let tests simulate a crash; nil in production.
	hooks hooks
}

// hooks are test seams.
type hooks struct {
	// beforeAck runs after a report is stored and before its MQTT ack;
	// returning false skips the ack, as a process that dies there would.
	beforeAck func(mqtt.Message) bool
	// openConn wraps the connection paho opens, so a test can cut it.
	openConn func(net.Conn) net.Conn
}

// Stats are the bridge's counters since New.
type Stats struct {
	// Accepted is the number of reports stored as new SHADOW events.
	Accepted uint64
	// Duplicates is the number of reports JetStream had already stored
	// under the same Nats-Msg-Id: MQTT redeliveries and device retries.
	Duplicates uint64
	// Rejected is the number of refused reports recorded on REJECTED
	// (a redelivered refused report counts again).
	Rejected uint64
	// PublishRetries is the number of JetStream publishes tried again
	// after a failure or a full window.
	PublishRetries uint64
	// InFlight is the number of reports received and not yet stored and
	// acknowledged.
	InFlight int64
}

// New builds the service; it does no I/O. Unset keys of cfg take their
// defaults, and a configuration that Validate refuses is an error.
func New(cfg Config, deps svc.Deps) (*Service, error) {
	cfg.SetDefaults()
	p := conf.NewProblems()
	cfg.Validate(p.Sub("mqtt"))
	if list := p.List(); len(list) > 0 {
		return nil, &conf.Error{Problems: list}
	}
	if deps.NC == nil {
		return nil, errors.New("bridge needs a nats connection (deps.NC)")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dec, err := NewDecoder()
	if err != nil {
		return nil, err
	}
	return &Service{
		cfg:  cfg,
		deps: deps,
		log:  log.With("component", "bridge"),
		dec:  dec,
		now:  time.Now,
	}, nil
}

// Stats returns the bridge's counters.
func (s *Service) Stats() Stats {
	return Stats{
		Accepted:       s.accepted.Load(),
		Duplicates:     s.duplicates.Load(),
		Rejected:       s.rejected.Load(),
		PublishRetries: s.retries.Load(),
		InFlight:       s.inFlight.Load(),
	}
}

// Run connects to the broker and bridges reports until ctx ends. Then it
// stops taking messages, waits up to cfg.DrainTimeout for the reports in
// flight to be stored and acknowledged, and disconnects; whatever was not
// acknowledged stays in the broker's persistent session for the next run.
// It returns nil on a clean stop.
func (s *Service) Run(ctx context.Context) error {
	password, err := conf.ReadSecret(s.cfg.PasswordFile)
	if err != nil {
		return fmt.Errorf("mqtt password: %w", err)
	}
	// The bridge's own JetStream context on the shared connection: its
	// async window and PubAck timeout are tuned to MaxInFlight.
	js, err := jetstream.New(s.deps.NC,
		jetstream.WithPublishAsyncMaxPending(s.cfg.MaxInFlight+64),
		jetstream.WithPublishAsyncTimeout(s.cfg.PublishTimeout),
	)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	hard, cancelHard := context.WithCancel(context.Background())
	defer cancelHard()
	r := &runner{
		s:    s,
		js:   js,
		sem:  make(chan struct{}, s.cfg.MaxInFlight),
		stop: make(chan struct{}),
		hard: hard,

		cancelHard: cancelHard,
	}
	health := s.deps.Health
	health.Set(HealthComponent, errors.New("mqtt not connected yet"))

	opts := mqtt.NewClientOptions().
		AddBroker(s.cfg.Broker).
		SetClientID(s.cfg.ClientID).
		SetUsername(s.cfg.Username).
		SetPassword(password).
		// The broker keeps the subscription and every unacknowledged
		// report for this client id while the bridge is away.
		SetCleanSession(false).
		// Ack only after the JetStream PubAck (runner.process).
		SetAutoAckDisabled(true).
		// Each report in its own goroutine, bounded by r.sem: with order
		// kept, throughput would be one JetStream round trip per report.
		SetOrderMatters(false).
		// Redelivered reports arrive before Subscribe registers a route;
		// the default handler is the one path for every message.
		SetDefaultPublishHandler(r.handle).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(min(2*time.Second, s.cfg.MaxReconnectInterval)).
		SetMaxReconnectInterval(s.cfg.MaxReconnectInterval).
		SetConnectTimeout(s.cfg.ConnectTimeout).
		SetKeepAlive(s.cfg.KeepAlive).
		SetOnConnectHandler(func(c mqtt.Client) { r.onConnect(c) }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			health.Set(HealthComponent, fmt.Errorf("mqtt connection lost: %w", err))
			s.log.Warn("mqtt connection lost", "broker", s.cfg.Broker, "in_flight", s.inFlight.Load(), "err", err)
		}).
		SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) {
			s.log.Info("mqtt reconnecting", "broker", s.cfg.Broker)
		})
	if s.hooks.openConn != nil {
		wrap := s.hooks.openConn
		opts.SetCustomOpenConnectionFn(func(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, o.ConnectTimeout)
			if err != nil {
				return nil, err
			}
			return wrap(c), nil
		})
	}
	client := mqtt.NewClient(opts)
	s.log.Info("bridge starting", "broker", s.cfg.Broker, "client_id", s.cfg.ClientID, "topic", s.cfg.Topic,
		"max_in_flight", s.cfg.MaxInFlight)
	tok := client.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			health.Set(HealthComponent, err)
			return fmt.Errorf("connect to mqtt broker %s: %w", s.cfg.Broker, err)
		}
	case <-ctx.Done():
	}

	<-ctx.Done()
	r.shutdown(s.cfg.DrainTimeout)
	client.Disconnect(250)
	health.Set(HealthComponent, errors.New("stopped"))
	st := s.Stats()
	s.log.Info("bridge stopped", "accepted", st.Accepted, "duplicates", st.Duplicates, "rejected", st.Rejected,
		"abandoned", r.abandoned.Load())
	return nil
}

// runner is one Run's state.
type runner struct {
	s   *Service
	js  jetstream.JetStream
	sem chan struct{}

	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
	// stop closes when Run's context ends: no new report is taken.
	stop chan struct{}
	// hard ends when the drain time is over: reports still in flight give
	// up without an ack and come back in the next session.
	hard       context.Context
	cancelHard context.CancelFunc
	abandoned  atomic.Int64
}

func (r *runner) onConnect(c mqtt.Client) {
	s := r.s
	tok := c.Subscribe(s.cfg.Topic, 1, nil) // nil: the default handler
	if !tok.WaitTimeout(s.cfg.ConnectTimeout) {
		s.deps.Health.Set(HealthComponent, errors.New("mqtt subscribe timed out"))
		s.log.Error("mqtt subscribe timed out", "topic", s.cfg.Topic)
		return
	}
	if err := tok.Error(); err != nil {
		s.deps.Health.Set(HealthComponent, fmt.Errorf("mqtt subscribe: %w", err))
		s.log.Error("mqtt subscribe failed", "topic", s.cfg.Topic, "err", err)
		return
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code > 1 {
				s.deps.Health.Set(HealthComponent, fmt.Errorf("mqtt subscribe %q refused (code %d)", topic, code))
				s.log.Error("mqtt subscribe refused", "topic", topic, "code", code)
				return
			}
		}
	}
	s.deps.Health.Set(HealthComponent, nil)
	s.log.Info("mqtt connected", "broker", s.cfg.Broker, "topic", s.cfg.Topic)
}

// shutdown stops taking reports, waits up to drain for those in flight,
// then abandons the rest (unacknowledged) and waits for them to return.
func (r *runner) shutdown(drain time.Duration) {
	r.mu.Lock()
	r.stopped = true
	close(r.stop)
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		r.s.log.Warn("drain time over, leaving reports unacknowledged for redelivery",
			"in_flight", r.s.inFlight.Load(), "drain_timeout", drain)
	}
	r.cancelHard()
	<-done
}

// handle is paho's handler for every message, each in its own goroutine.
func (r *runner) handle(_ mqtt.Client, m mqtt.Message) {
	select {
	case r.sem <- struct{}{}:
	case <-r.stop:
		return // not acknowledged: the broker keeps it for the next session
	}
	defer func() { <-r.sem }()
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.wg.Add(1)
	r.mu.Unlock()
	defer r.wg.Done()
	r.s.inFlight.Add(1)
	defer r.s.inFlight.Add(-1)
	r.process(m)
}

// process stores one report (or its refusal) and acknowledges it.
func (r *runner) process(m mqtt.Message) {
	s := r.s
	topic, payload := m.Topic(), m.Payload()
	data, err := s.dec.Decode(topic, payload, s.cfg.MaxPayload)
	if err != nil {
		r.refuse(m, err.Error())
		return
	}
	subject := events.ShadowReportedSubject(data.TypeID, data.DeviceID)
	id := events.ReportEventID(data.TypeID, data.DeviceID, data.Firmware)
	ev, err := events.New(id, events.SourceBridge, events.TypeShadowReported, subject, s.now(), data)
	if err != nil {
		r.refuse(m, fmt.Sprintf("build event: %v", err))
		return
	}
	body, err := ev.Marshal()
	if err != nil {
		r.refuse(m, fmt.Sprintf("encode event: %v", err))
		return
	}
	if max := s.deps.NC.MaxPayload(); max > 0 && int64(len(body)) > max {
		r.refuse(m, fmt.Sprintf("event is %d bytes, over the NATS server's max_payload of %d", len(body), max))
		return
	}
	ack, ok := r.publish(subject, id, body, events.StreamShadow)
	if !ok {
		return
	}
	if ack.Duplicate {
		s.duplicates.Add(1)
	} else {
		s.accepted.Add(1)
	}
	r.ack(m)
}

// refuse records a report on REJECTED with its reason and acknowledges it.
func (r *runner) refuse(m mqtt.Message, reason string) {
	s := r.s
	topic, payload := m.Topic(), m.Payload()
	// Same topic and bytes, same id: a redelivered refusal is stored once.
	id := events.IdentityID("rj", topic, string(payload))
	subject := events.RejectedSubject(RejectSource)
	data := events.RejectedData{Source: RejectSource, Reason: reason, Topic: topic, Raw: payload}
	body, err := rejectedBody(id, subject, s.now(), data, s.deps.NC.MaxPayload())
	if err != nil {
		// Cannot happen with these types; leave it unacknowledged and say so.
		s.log.Error("encode rejected event", "topic", topic, "err", err)
		return
	}
	if _, ok := r.publish(subject, id, body, events.StreamRejected); !ok {
		return
	}
	s.rejected.Add(1)
	s.log.Warn("report rejected", "topic", topic, "event_id", id, "reason", reason, "bytes", len(payload))
	r.ack(m)
}

// rejectedBody encodes a rejected event, cutting the raw bytes (and saying
// so in the reason) when the whole input would not fit in one NATS message.
func rejectedBody(id, subject string, t time.Time, data events.RejectedData, max int64) ([]byte, error) {
	full := len(data.Raw)
	reason := data.Reason
	for {
		ev, err := events.New(id, events.SourceBridge, events.TypeRejected, subject, t, data)
		if err != nil {
			return nil, err
		}
		body, err := ev.Marshal()
		if err != nil {
			return nil, err
		}
		if max <= 0 || int64(len(body)) <= max || len(data.Raw) == 0 {
			return body, nil
		}
		data.Raw = data.Raw[:len(data.Raw)/2]
		data.Reason = fmt.Sprintf("%s (raw cut to its first %d of %d bytes to fit a NATS message)", reason, len(data.Raw), full)
	}
}

func (r *runner) ack(m mqtt.Message) {
	if h := r.s.hooks.beforeAck; h != nil && !h(m) {
		return
	}
	m.Ack()
}

// publish stores body on stream under msgID, retrying a full window at once
// and a failure with backoff, until it is stored or the drain time is over.
func (r *runner) publish(subject, msgID string, body []byte, stream string) (*jetstream.PubAck, bool) {
	s := r.s
	backoff := 50 * time.Millisecond
	const maxBackoff = 5 * time.Second
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			s.retries.Add(1)
		}
		msg := &nats.Msg{Subject: subject, Data: body}
		fut, err := r.js.PublishMsgAsync(msg, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(stream))
		if err == nil {
			select {
			case ack := <-fut.Ok():
				return ack, true
			case err = <-fut.Err():
			case <-r.hard.Done():
				r.abandoned.Add(1)
				return nil, false
			}
		}
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			// PublishAsync already waited for room; try again at once.
			if r.hard.Err() != nil {
				r.abandoned.Add(1)
				return nil, false
			}
			continue
		}
		s.log.Warn("jetstream publish failed, retrying", "subject", subject, "event_id", msgID,
			"attempt", attempt+1, "backoff", backoff, "err", err)
		select {
		case <-time.After(backoff):
		case <-r.hard.Done():
			r.abandoned.Add(1)
			return nil, false
		}
		backoff = min(2*backoff, maxBackoff)
	}
}
