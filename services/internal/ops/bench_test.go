package ops_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/ops"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// BenchmarkCheck is one round of the watcher against an embedded
// JetStream: every otawatch stream looked up, and the consumers of each
// (three durables) listed. It runs every ops.interval, whatever scrapes.
func BenchmarkCheck(b *testing.B) {
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	ctx := context.Background()
	for _, d := range []string{events.ConsumerProjectorShadow, events.ConsumerRolloutShadow, events.ConsumerProjectorRollout} {
		stream := events.StreamShadow
		if d == events.ConsumerProjectorRollout {
			stream = events.StreamRollout
		}
		if _, err := js.JS.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: d, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			b.Fatal(err)
		}
	}
	need := map[string][]string{}
	for _, s := range events.StreamNames() {
		need[s] = []string{"all"}
	}
	w := ops.NewWatcher(js.JS, need, time.Second, svc.NewHealth(), nil)
	b.ResetTimer()
	for b.Loop() {
		if err := w.Check(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAccessLog is what the access log adds to a request: the
// wrapper and one line through a text handler.
func BenchmarkAccessLog(b *testing.B) {
	h := ops.AccessLog(slog.New(slog.NewTextHandler(io.Discard, nil)), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ops.SetCaller(r.Context(), "alice")
		_, _ = io.WriteString(w, "{}")
	}))
	req := httptest.NewRequest("GET", "/api/v1/fleet", nil)
	for b.Loop() {
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
}
