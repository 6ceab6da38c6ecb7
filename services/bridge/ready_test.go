package bridge

import (
	"context"
	"testing"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// A bridge is not ready before it has subscribed: here it never gets as
// far as the lease. Without a status of its own, /readyz would say ready
// (no component failing), and a deployment would let devices report into
// a broker session that does not exist yet (their reports dropped).
func TestNotReadyBeforeSubscribed(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	health := svc.NewHealth()
	s, err := New(Config{Broker: "tcp://127.0.0.1:1", ClientID: "bridge-ready"},
		svc.Deps{NC: js.NC, JS: js.JS, Streams: events.StreamOptions{Replicas: 1}, Health: health})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if health.Ready() {
		t.Fatalf("ready before subscribing: %v", health.Status())
	}
}
