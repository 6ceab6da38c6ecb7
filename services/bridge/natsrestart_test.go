package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/natsd"
)

// TestExternalNATSRestart: the bridge on a TCP connection to a NATS server
// (the scale-out path, nats.url) with reports in flight while that server
// restarts on the same store. The publishes whose PubAcks were lost with
// the connection are retried once it is back (the PubAck timeout is an hour
// here, so only that path can recover them): every report is stored
// exactly once.
func TestExternalNATSRestart(t *testing.T) {
	const n = 20000
	port := testutil.FreePort(t)
	cfg := natsd.Config{StoreDir: t.TempDir(), Listen: fmt.Sprintf("127.0.0.1:%d", port), Auth: natsd.Auth{AnonymousNATS: true}}
	start := func() *natsd.Server {
		srv, err := natsd.Start(cfg)
		if err != nil {
			t.Fatalf("start nats: %v", err)
		}
		return srv
	}
	srv := start()
	defer func() { srv.Shutdown() }()
	url := srv.ClientURL()

	// The test's own view of the streams.
	tnc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer tnc.Close()
	tjs, err := jetstream.New(tnc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := events.EnsureStreams(ctx, tjs, events.StreamOptions{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	count := func() uint64 { return testutil.StreamMsgs(tjs, events.StreamShadow) }

	// The bridge's connection, as otawatch run makes it for nats.url.
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	m := testutil.StartMosquitto(t)
	health := svc.NewHealth()
	s, err := New(Config{Broker: m.URL, ClientID: "bridge-nats-restart", MaxInFlight: 64, PublishTimeout: time.Hour},
		svc.Deps{Log: slog.New(slog.DiscardHandler), NC: nc, Health: health})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("bridge: %v", err)
		}
	}()
	ready := func() bool { st := health.Status(); return len(st) == 1 && st[0].Err == nil }
	testutil.Eventually(t, 20*time.Second, ready, "bridge not ready: %v", health.Status())

	msgs := make([]msg, n)
	for i := range msgs {
		_, msgs[i] = report(i)
	}
	pub := (&env{mqttURL: m.URL}).publisher(t, "nats-restart-fleet")
	toks := make(chan mqtt.Token, n)
	go func() {
		for _, m := range msgs {
			toks <- pub.Publish(m.topic, 1, false, m.payload)
		}
		close(toks)
	}()
	testutil.Eventually(t, 30*time.Second, func() bool { return s.Stats().Accepted >= n/4 },
		"bridge stored %d reports before the restart", s.Stats().Accepted)

	srv.Shutdown()
	srv = start()

	for tok := range toks {
		if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	testutil.Eventually(t, 90*time.Second, func() bool {
		st := s.Stats()
		return st.Accepted+st.Duplicates >= n && st.InFlight == 0
	}, "after the NATS restart the bridge handled %+v of %d reports", s.Stats(), n)
	if got := count(); got != n {
		t.Fatalf("SHADOW holds %d events, want %d (stats %+v)", got, n, s.Stats())
	}
	// Some retried publishes had landed before the restart: they come
	// back as duplicates, and SHADOW still holds each report once.
	if st := s.Stats(); st.PublishRetries == 0 {
		t.Errorf("stats %+v: no publish was retried, the restart cut none in flight", st)
	}
}
