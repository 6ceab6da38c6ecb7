package ops_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/ops"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

func TestReadyz(t *testing.T) {
	tests := []struct {
		name       string
		set        map[string]error
		wantStatus int
		wantBody   string
	}{
		{"no components", nil, http.StatusOK, `{"ready":true}`},
		{"all ready", map[string]error{"bridge": nil, "streams": nil}, http.StatusOK, `{"ready":true}`},
		{"one not ready", map[string]error{"bridge": nil, "streams": errors.New("stream ALERTS is missing (needed by api)")},
			http.StatusServiceUnavailable, `{"notReady":[{"name":"streams","reason":"stream ALERTS is missing (needed by api)"}],"ready":false}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := svc.NewHealth()
			for k, v := range tt.set {
				h.Set(k, v)
			}
			rec := httptest.NewRecorder()
			ops.Readyz(h).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			if rec.Code != tt.wantStatus || strings.TrimSpace(rec.Body.String()) != tt.wantBody {
				t.Errorf("got %d %s, want %d %s", rec.Code, rec.Body.String(), tt.wantStatus, tt.wantBody)
			}
		})
	}
}

// TestAccessLog: one line per request with method, path, status, bytes,
// duration and the caller's name; never the query (an access_token rides
// there) nor the Authorization header; probes and scrapes at debug.
func TestAccessLog(t *testing.T) {
	const secret = "s3cr3t-token-value-0123456789"
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ops.SetCaller(r.Context(), "alice")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "hello")
	})
	mux := http.NewServeMux()
	mux.Handle("/api/", app)
	mux.Handle("/healthz", ops.Healthz())
	srv := httptest.NewServer(ops.AccessLog(log, mux))
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL+"/api/v1/rollouts?access_token="+secret, nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp, err = http.Get(srv.URL + "/healthz"); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d log lines at info, want 1 (the probe at debug):\n%s", len(lines), buf.String())
	}
	if strings.Contains(buf.String(), secret) {
		t.Fatalf("the access log holds the token:\n%s", buf.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"msg": "http request", "method": "POST", "path": "/api/v1/rollouts", "status": 201.0, "bytes": 5.0, "caller": "alice"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (line %s)", k, got[k], v, lines[0])
		}
	}
	if _, ok := got["duration"]; !ok {
		t.Errorf("no duration in %s", lines[0])
	}
}

// TestWatcherStreams: a needed stream that is missing makes the streams
// component not ready, naming the stream and who needs it; once it exists
// the component is ready again. A stream nobody needs does not count.
func TestWatcherStreams(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{NoStreams: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfgs := map[string]jetstream.StreamConfig{}
	for _, c := range events.StreamConfigs(events.StreamOptions{Replicas: 1}) {
		cfgs[c.Name] = c
	}
	for _, name := range []string{events.StreamShadow, events.StreamRollout} {
		if _, err := js.JS.CreateStream(ctx, cfgs[name]); err != nil {
			t.Fatal(err)
		}
	}
	h := svc.NewHealth()
	need := map[string][]string{
		events.StreamShadow:  {"alerting", "api"},
		events.StreamRollout: {"alerting", "api"},
		events.StreamAlerts:  {"alerting", "api"},
	}
	w := ops.NewWatcher(js.JS, need, time.Second, h, nil)
	if h.Ready() {
		t.Fatal("ready before the first check")
	}
	err := w.Check(ctx)
	want := "stream ALERTS is missing (needed by alerting, api)"
	if err == nil || err.Error() != want {
		t.Fatalf("check: %v, want %q", err, want)
	}
	if bad := ops.NotReady(h); len(bad) != 1 || bad[0].Name != ops.StreamsComponent || bad[0].Reason != want {
		t.Fatalf("not ready: %+v, want streams: %s", bad, want)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(w)
	if got := gather(t, reg)[`otawatch_stream_present{stream="ALERTS"}`]; got != 0 {
		t.Errorf("otawatch_stream_present ALERTS = %v, want 0", got)
	}

	// NOTIFY is missing too, but nobody here needs it.
	if _, err := js.JS.CreateStream(ctx, cfgs[events.StreamAlerts]); err != nil {
		t.Fatal(err)
	}
	if err := w.Check(ctx); err != nil {
		t.Fatalf("check with ALERTS back: %v", err)
	}
	if !h.Ready() {
		t.Fatalf("not ready with every needed stream there: %+v", ops.NotReady(h))
	}
	if got := gather(t, reg)[`otawatch_stream_present{stream="ALERTS"}`]; got != 1 {
		t.Errorf("otawatch_stream_present ALERTS = %v, want 1", got)
	}
}

// TestWatcherConsumers: every durable consumer's pending counts, and no
// ephemeral one.
func TestWatcherConsumers(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 5 {
		if _, err := js.JS.Publish(ctx, fmt.Sprintf("shadow.reported.gw.dev-%d", i), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.JS.CreateOrUpdateConsumer(ctx, events.StreamShadow, jetstream.ConsumerConfig{
		Durable: events.ConsumerProjectorShadow, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	// Two delivered and held (ack pending), three not delivered yet.
	batch, err := cons.Fetch(2)
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	if _, err := js.JS.OrderedConsumer(ctx, events.StreamShadow, jetstream.OrderedConsumerConfig{}); err != nil {
		t.Fatal(err)
	}
	w := ops.NewWatcher(js.JS, map[string][]string{events.StreamShadow: {"projector"}}, time.Second, svc.NewHealth(), nil)
	if err := w.Check(ctx); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(w)
	got := gather(t, reg)
	for k, v := range map[string]float64{
		`otawatch_consumer_pending_messages{consumer="projector-shadow",stream="SHADOW"}`:     3,
		`otawatch_consumer_ack_pending_messages{consumer="projector-shadow",stream="SHADOW"}`: 2,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	n := 0
	for k := range got {
		if strings.HasPrefix(k, "otawatch_consumer_pending_messages{") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d consumers reported, want 1 (the durable one):\n%v", n, got)
	}
}

// gather returns every sample of reg as "name{label=value,...}" -> value.
func gather(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}
