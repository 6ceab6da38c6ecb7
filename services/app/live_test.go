package app

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/bridge"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/simulator"
)

// live is a system for end-to-end tests: an embedded JetStream with its
// MQTT listener, and the services and devices a test starts on it, each
// on its own connection and stopped when the test ends.
type live struct {
	t      *testing.T
	js     *testutil.JetStream
	broker string
	log    *slog.Logger
}

func startLive(t *testing.T) *live {
	t.Helper()
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: true})
	return &live{t: t, js: js, broker: "tcp://" + js.Server.MQTTAddr(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// deps are a service's dependencies on a connection of its own.
func (l *live) deps() svc.Deps {
	l.t.Helper()
	nc, err := nats.Connect(l.js.Server.ClientURL())
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(nc.Close)
	jsx, err := jetstream.New(nc)
	if err != nil {
		l.t.Fatal(err)
	}
	return svc.Deps{Log: l.log, NC: nc, JS: jsx, Streams: events.StreamOptions{Replicas: 1}, Health: svc.NewHealth()}
}

// run runs s until the test ends; a Run that fails the test.
func (l *live) run(name string, s svc.Service) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	l.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			l.t.Errorf("%s: Run returned %v", name, err)
		}
	})
}

// startBridge runs the bridge and waits until it subscribed: devices may
// report only then (a broker keeps QoS 1 messages for subscriptions that
// exist).
func (l *live) startBridge(clientID string) {
	l.t.Helper()
	d := l.deps()
	b, err := bridge.New(bridge.Config{Broker: l.broker, ClientID: clientID}, d)
	if err != nil {
		l.t.Fatal(err)
	}
	l.run("bridge", b)
	testutil.Eventually(l.t, 30*time.Second, func() bool { return len(d.Health.Status()) > 0 && d.Health.Ready() },
		"the bridge never subscribed: %v", d.Health.Status())
}

// startFleet runs a simulated fleet of devices that install what their
// delta topic asks, and waits until it is connected.
func (l *live) startFleet(cfg simulator.FleetConfig) *simulator.Fleet {
	l.t.Helper()
	cfg.Broker, cfg.Mode = l.broker, simulator.ModeFleet
	f, err := simulator.NewFleet(cfg, l.log)
	if err != nil {
		l.t.Fatal(err)
	}
	l.run("simulator", f)
	select {
	case <-f.Ready():
	case <-time.After(60 * time.Second):
		l.t.Fatalf("the simulated fleet did not connect: %+v", f.Stats())
	}
	return f
}
