package bridge

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/lease"
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
	// clock is deps.Clock: event times and retry waits (tests set a fake
	// one).
	clock svc.Clock
	// holder names this instance in the bridge lease.
	holder string

	accepted   atomic.Uint64
	duplicates atomic.Uint64
	rejected   atomic.Uint64
	retries    atomic.Uint64
	inFlight   atomic.Int64
	// full are the streams refusing events for being full (full.go).
	full fullStreams

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
	// beforePublish runs before each JetStream publish; an error fails
	// that publish, as an unavailable JetStream would.
	beforePublish func() error
	// publishFault picks the failure each JetStream publish meets, if
	// any (publisher.fault).
	publishFault func(p *pending) publishFault
}

// Stats are the bridge's counters since New.
type Stats struct {
	// Accepted is the number of reports (and presence messages) stored as
	// new SHADOW events.
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
	if err := conf.Check("mqtt", &cfg); err != nil {
		return nil, err
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
		cfg:    cfg,
		deps:   deps,
		log:    log.With("component", "bridge"),
		dec:    dec,
		clock:  deps.ClockOf(),
		holder: lease.InstanceName(),
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

// Run bridges reports until ctx ends, while this instance holds the
// bridge lease of its client id; without it, it stands by (not ready) and
// takes over when the lease is free. Then it stops taking messages, waits
// up to cfg.DrainTimeout for the reports in flight to be stored and
// acknowledged, and disconnects; whatever was not acknowledged stays in
// the broker's persistent session for the next run. It returns nil on a
// clean stop.
func (s *Service) Run(ctx context.Context) error {
	// Not ready until subscribed (runner.onConnect): a probe that finds
	// no bridge component at all would say ready, and devices let in then
	// report into a broker session that does not exist yet.
	s.deps.Health.Set(HealthComponent, errors.New("starting: waiting for the bridge lease"))
	password, err := conf.ReadSecret(s.cfg.PasswordFile)
	if err != nil {
		return fmt.Errorf("mqtt password: %w", err)
	}
	js := s.deps.JS
	if js == nil {
		if js, err = jetstream.New(s.deps.NC); err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
	}
	l, err := lease.Open(ctx, js, lease.Config{
		Bucket: s.cfg.LeaseBucket, Key: leaseKey(s.cfg.ClientID), Holder: s.holder,
		What: "bridge", TTL: s.cfg.LeaseTTL, Replicas: s.deps.Streams.Replicas, Log: s.log,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	health := s.deps.Health
	err = l.Serve(ctx, func() {
		health.Set(HealthComponent, fmt.Errorf("standby: another instance holds the bridge lease of client id %q", s.cfg.ClientID))
		s.log.Info("bridge standing by: another instance holds the lease", "client_id", s.cfg.ClientID)
	}, func(ctx context.Context, lost func() bool) error {
		// After a lost lease, drain only briefly: the next holder may
		// connect once the lease expires.
		return s.session(ctx, password, func() time.Duration {
			if lost() {
				return min(s.cfg.DrainTimeout, s.cfg.LeaseTTL/8)
			}
			return s.cfg.DrainTimeout
		})
	})
	if err == nil {
		health.Set(HealthComponent, errors.New("stopped"))
	}
	return err
}

// leaseKey is the lease's KV key for an MQTT client id: the id itself when
// it is a plain one, otherwise its hex form.
func leaseKey(clientID string) string {
	if events.ValidateID("client id", clientID) == nil {
		return clientID
	}
	return "x" + hex.EncodeToString([]byte(clientID))
}

// session connects to the broker and bridges reports until ctx ends, then
// stops taking messages, drains for up to drain() and disconnects.
func (s *Service) session(ctx context.Context, password string, drain func() time.Duration) error {
	r, err := newRunner(s)
	if err != nil {
		return err
	}
	defer r.cancelHard()
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
		// Ack only after the JetStream PubAck (runner.finish).
		SetAutoAckDisabled(true).
		// paho calls the handler on its inbound goroutine. It never
		// blocks: it hands the report to a worker, or queues it when
		// max_in_flight reports are being stored (runner.handle), so paho
		// keeps reading and notices a dropped connection even while
		// JetStream is stalled. With order off, paho would start a
		// goroutine per report just to hand it over: 5 us of CPU per
		// report. (DESIGN.md's advice to turn order off is against a
		// handler that waits for its PubAck, which would serialise the
		// bridge on JetStream round trips.)
		SetOrderMatters(true).
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
		}).
		// paho retries a failed connect (refused credentials included)
		// without a word; say why each attempt failed.
		SetConnectionNotificationHandler(func(_ mqtt.Client, n mqtt.ConnectionNotification) {
			if f, ok := n.(mqtt.ConnectionNotificationFailed); ok {
				health.Set(HealthComponent, fmt.Errorf("mqtt connect: %w", f.Reason))
				s.log.Warn("mqtt connect failed", "broker", s.cfg.Broker, "client_id", s.cfg.ClientID, "err", f.Reason)
			}
		})
	if tc, err := s.cfg.TLS.Config(); err != nil {
		return fmt.Errorf("mqtt tls: %w", err)
	} else if tc != nil {
		opts.SetTLSConfig(tc)
	}
	if u, err := url.Parse(s.cfg.Broker); err == nil {
		if open := connOpener(u.Scheme, s.hooks.openConn); open != nil {
			opts.SetCustomOpenConnectionFn(open)
		}
	}
	client := mqtt.NewClient(opts)
	s.log.Info("bridge starting", "broker", s.cfg.Broker, "client_id", s.cfg.ClientID, "topic", s.cfg.Topic,
		"max_in_flight", s.cfg.MaxInFlight)
	tok := client.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			// Only a refusal ends up here: with ConnectRetry paho keeps
			// trying an unreachable broker until Disconnect.
			r.shutdown(0)
			client.Disconnect(0)
			health.Set(HealthComponent, err)
			return fmt.Errorf("connect to mqtt broker %s: %w", s.cfg.Broker, err)
		}
	case <-ctx.Done():
	}

	<-ctx.Done()
	r.shutdown(drain())
	client.Disconnect(250)
	health.Set(HealthComponent, errors.New("stopped"))
	st := s.Stats()
	s.log.Info("bridge stopped", "accepted", st.Accepted, "duplicates", st.Duplicates, "rejected", st.Rejected,
		"abandoned", r.abandoned.Load())
	return nil
}
