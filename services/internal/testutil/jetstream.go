package testutil

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/natsd"
)

// JetStream is an embedded NATS server with JetStream and every otawatch
// stream created, plus a connection to it.
type JetStream struct {
	Server *natsd.Server
	NC     *nats.Conn
	JS     jetstream.JetStream
}

// JetStreamOptions tune StartJetStream.
type JetStreamOptions struct {
	// MQTT turns on the server's MQTT listener on a free port.
	MQTT bool
	// StoreDir reuses a store (to restart a server on the same data); empty
	// means a fresh t.TempDir().
	StoreDir string
	// NoStreams skips creating the otawatch streams.
	NoStreams bool
	// Auth is the server's authentication; nil admits anonymous clients
	// on both ports (the test's own connection, and MQTT clients with the
	// whole device topic space), as a loopback otawatch may.
	Auth *natsd.Auth
	// User and Password are the test connection's credentials (with Auth).
	User, Password string
	// MQTTTLS is the MQTT listener's TLS (with MQTT).
	MQTTTLS *tls.Config
}

// StartJetStream starts an embedded server on a free loopback port, with the
// file store in a temporary directory, and creates the otawatch streams. The
// server and connection are closed by t.Cleanup.
func StartJetStream(t testing.TB, o JetStreamOptions) *JetStream {
	t.Helper()
	cfg := natsd.Config{StoreDir: o.StoreDir, Listen: "127.0.0.1:-1", Auth: natsd.Auth{AnonymousNATS: true, AnonymousMQTT: true}}
	if o.Auth != nil {
		cfg.Auth = *o.Auth
	}
	if cfg.StoreDir == "" {
		cfg.StoreDir = t.TempDir()
	}
	if o.MQTT {
		cfg.MQTTListen = "127.0.0.1:-1"
		cfg.MQTTTLS = o.MQTTTLS
	}
	srv, err := natsd.Start(cfg)
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	copts := []nats.Option{nats.Name(t.Name())}
	if o.User != "" {
		copts = append(copts, nats.UserInfo(o.User, o.Password))
	}
	nc, err := nats.Connect(srv.ClientURL(), copts...)
	if err != nil {
		srv.Shutdown()
		t.Fatalf("connect to embedded nats: %v", err)
	}
	t.Cleanup(func() {
		nc.Close()
		srv.Shutdown()
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	if !o.NoStreams {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := events.EnsureStreams(ctx, js, events.StreamOptions{Replicas: 1}); err != nil {
			t.Fatalf("ensure streams: %v", err)
		}
	}
	return &JetStream{Server: srv, NC: nc, JS: js}
}

// Events reads every message of stream from the start and decodes each as an
// envelope; it fails the test on a message that is not one.
func (j *JetStream) Events(t testing.TB, stream string) []jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := j.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	var out []jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("stream %s get seq %d: %v", stream, seq, err)
		}
		out = append(out, *m)
	}
	return out
}

// Count returns the number of messages in stream.
func (j *JetStream) Count(t testing.TB, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := j.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	return info.State.Msgs
}

// Eventually polls cond every 20 ms until it holds or timeout passes, then
// fails the test with msg. It waits for asynchronous work to land; it asserts
// no timing.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StreamMsgs returns the number of messages in stream, or 0 while the
// stream cannot be read (a server restarting): for polling with
// Eventually, against any server.
func StreamMsgs(js jetstream.JetStream, stream string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}
