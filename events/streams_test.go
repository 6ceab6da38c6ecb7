package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// startJetStream starts a plain NATS server (no accounts, no permissions:
// what the streams refuse here, they refuse on any server) with the
// otawatch streams. services/natsd's tests check its permissions.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatalf("new nats server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
	return js
}

// TestStreamsAreImmutable: on every stream, deleting a message (plain or
// secure) and purging (all or by subject) are refused, and the events stay.
func TestStreamsAreImmutable(t *testing.T) {
	js := startJetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subjects := map[string]string{
		events.StreamShadow:   events.ShadowReportedSubject("gateway", "dev-1"),
		events.StreamRollout:  events.RolloutSubject("job-1", "created"),
		events.StreamAlerts:   events.AlertSubject("raised", "critical", "device-failed"),
		events.StreamNotify:   events.NotifySubject("slack", "sent"),
		events.StreamRejected: events.RejectedSubject("bridge"),
		events.StreamAudit:    events.AuditCheckpointSubject(events.StreamShadow),
	}
	for _, cfg := range events.StreamConfigs(events.StreamOptions{}) {
		t.Run(cfg.Name, func(t *testing.T) {
			subject, ok := subjects[cfg.Name]
			if !ok {
				t.Fatalf("no test subject for stream %s", cfg.Name)
			}
			ack, err := js.Publish(ctx, subject, []byte(`{}`), jetstream.WithMsgID(cfg.Name+"-1"))
			if err != nil {
				t.Fatalf("publish to %s: %v", subject, err)
			}
			if ack.Stream != cfg.Name {
				t.Fatalf("%s landed on stream %s", subject, ack.Stream)
			}
			s, err := js.Stream(ctx, cfg.Name)
			if err != nil {
				t.Fatal(err)
			}
			tries := []struct {
				name string
				call func() error
			}{
				{"DeleteMsg", func() error { return s.DeleteMsg(ctx, ack.Sequence) }},
				{"SecureDeleteMsg", func() error { return s.SecureDeleteMsg(ctx, ack.Sequence) }},
				{"Purge", func() error { return s.Purge(ctx) }},
				{"Purge by subject", func() error { return s.Purge(ctx, jetstream.WithPurgeSubject(subject)) }},
				{"Purge up to sequence", func() error { return s.Purge(ctx, jetstream.WithPurgeSequence(ack.Sequence+1)) }},
			}
			for _, tc := range tries {
				if err := tc.call(); err == nil {
					t.Errorf("%s on %s succeeded, want refused", tc.name, cfg.Name)
				}
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n := info.State.Msgs; n != 1 {
				t.Errorf("%s holds %d messages after the refused deletes, want 1", cfg.Name, n)
			}
			if _, err := s.GetMsg(ctx, ack.Sequence); err != nil {
				t.Errorf("message %d of %s is gone: %v", ack.Sequence, cfg.Name, err)
			}
		})
	}
}
