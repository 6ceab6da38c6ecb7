package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/alerting"
	"github.com/otawatch/otawatch/services/bridge"
	"github.com/otawatch/otawatch/services/internal/identity"
	"github.com/otawatch/otawatch/services/internal/ops"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/projector"
	"github.com/otawatch/otawatch/services/rollout"
)

// httpGet returns the status and body of GET url ("" and 0 when it cannot
// connect).
func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRunBridgeAloneIsObservable: "otawatch run bridge" (no api) answers
// /healthz, /readyz and /metrics on http.listen, and /metrics counts the
// reports the bridge accepted, saw twice and rejected.
func TestRunBridgeAloneIsObservable(t *testing.T) {
	dataDir := t.TempDir()
	natsPort, mqttPort, httpPort := testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)
	env := []string{
		"OTAWATCH_DATA_DIR=" + dataDir,
		fmt.Sprintf("OTAWATCH_NATS_LISTEN=127.0.0.1:%d", natsPort),
		fmt.Sprintf("OTAWATCH_NATS_MQTT_LISTEN=127.0.0.1:%d", mqttPort),
		fmt.Sprintf("OTAWATCH_MQTT_BROKER=tcp://127.0.0.1:%d", mqttPort),
		fmt.Sprintf("OTAWATCH_HTTP_LISTEN=127.0.0.1:%d", httpPort),
		"OTAWATCH_OPS_INTERVAL=200ms",
		"OTAWATCH_CLICKHOUSE_ADDR=",
	}
	if err := identity.Add(filepath.Join(dataDir, "devices.json"), "dev-1", "dev-1-password", 4); err != nil {
		t.Fatal(err)
	}
	p := startOtawatch(t, env, "run", "bridge")
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	testutil.Eventually(t, 60*time.Second, func() bool {
		code, _ := httpGet(base + "/readyz")
		return code == http.StatusOK
	}, "otawatch run bridge never answered /readyz 200\n%s", p.stderr)
	if code, body := httpGet(base + "/healthz"); code != http.StatusOK || !strings.Contains(body, `"ok"`) {
		t.Errorf("/healthz: %d %s", code, body)
	}

	dev := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)).
		SetClientID("device-1").SetUsername("dev-1").SetPassword("dev-1-password"))
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device connect: %v", tok.Error())
	}
	defer dev.Disconnect(100)
	good := `{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"2025-07-22T11:30:00Z","status":"completed","checksum":"sha256:abc","previousVersion":"4.1.5","updateDuration":127,"errorCode":null}}}}`
	// The same report twice (a device's retry), then one that is not JSON.
	for _, payload := range []string{good, good, "not json"} {
		if tok := dev.Publish(events.ReportTopic("gw", "dev-1"), 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("device publish: %v", tok.Error())
		}
	}
	want := []string{
		`otawatch_bridge_reports_total{outcome="accepted"} 1`,
		`otawatch_bridge_reports_total{outcome="duplicate"} 1`,
		`otawatch_bridge_reports_total{outcome="rejected"} 1`,
		`otawatch_stream_present{stream="SHADOW"} 1`,
		`otawatch_stream_present{stream="REJECTED"} 1`,
		`go_goroutines `,
	}
	var metrics string
	testutil.Eventually(t, 30*time.Second, func() bool {
		_, metrics = httpGet(base + "/metrics")
		for _, w := range want {
			if !strings.Contains(metrics, w) {
				return false
			}
		}
		return true
	}, "/metrics lacks one of %q:\n%s\n%s", want, &metrics, p.stderr)

	var ready struct{ Ready bool }
	_, body := httpGet(base + "/readyz")
	if err := json.Unmarshal([]byte(body), &ready); err != nil || !ready.Ready {
		t.Errorf("/readyz %s", body)
	}
	if err := p.stop(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), `msg="ops listening"`) {
		t.Errorf("log does not say where ops listens:\n%s", p.stderr)
	}
}

// TestReadyzFailsWhileAStreamIsMissing: a process whose stream disappears
// (the ALERTS stream deleted) answers /readyz 503 naming it, while it is
// missing, and 200 again once it is back. The server is a plain test
// server without otawatch's permissions, where a stream can be deleted.
func TestReadyzFailsWhileAStreamIsMissing(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("test nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	httpPort := testutil.FreePort(t)
	cfg, err := LoadConfig("", []string{
		"OTAWATCH_DATA_DIR=" + t.TempDir(),
		"OTAWATCH_NATS_URL=" + ns.ClientURL(),
		fmt.Sprintf("OTAWATCH_HTTP_LISTEN=127.0.0.1:%d", httpPort),
		"OTAWATCH_OPS_INTERVAL=100ms",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("OTAWATCH_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	go func() { done <- Run(ctx, cfg, []string{"alerting"}, log, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort)
	testutil.Eventually(t, 30*time.Second, func() bool {
		code, _ := httpGet(readyz)
		return code == http.StatusOK
	}, "never ready")

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(ctx, events.StreamAlerts); err != nil {
		t.Fatal(err)
	}
	// The streams check names the missing stream. The alerting service may
	// also report itself not ready meanwhile (its publishes to ALERTS fail,
	// and on a loaded machine it has stepped down): the streams entry is
	// what this test is about.
	want := ops.ComponentStatus{Name: ops.StreamsComponent, Reason: "stream ALERTS is missing (needed by alerting)"}
	var body string
	var r struct {
		Ready    bool
		NotReady []ops.ComponentStatus
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		var code int
		code, body = httpGet(readyz)
		r.Ready, r.NotReady = false, nil
		if code != http.StatusServiceUnavailable || json.Unmarshal([]byte(body), &r) != nil {
			return false
		}
		for _, c := range r.NotReady {
			if c == want {
				return true
			}
		}
		return false
	}, "readyz does not name ALERTS as missing after it was deleted: %s", body)
	if r.Ready {
		t.Errorf("readyz %s says ready", body)
	}
	if _, m := httpGet(fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort)); !strings.Contains(m, `otawatch_stream_present{stream="ALERTS"} 0`) {
		t.Errorf("/metrics does not show ALERTS missing:\n%s", m)
	}

	if err := events.EnsureStreams(ctx, js, events.StreamOptions{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _ := httpGet(readyz)
		return code == http.StatusOK
	}, "readyz not 200 again once ALERTS is back")
}

func TestOpsAddr(t *testing.T) {
	tests := []struct {
		name   string
		listen string
		names  []string
		want   string
	}{
		{"default without the api: http.listen", "", []string{"bridge"}, "127.0.0.1:8080"},
		{"default with the api: the api serves them", "", []string{"api", "bridge"}, ""},
		{"an address: always", "127.0.0.1:9464", []string{"api", "bridge"}, "127.0.0.1:9464"},
		{"off", ops.ListenOff, []string{"bridge"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadConfig("", []string{"OTAWATCH_OPS_LISTEN=" + tt.listen})
			if err != nil {
				t.Fatal(err)
			}
			if got := opsAddr(cfg, tt.names); got != tt.want {
				t.Errorf("opsAddr = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestServiceMetricsNames: every service with counters shows them on the
// process's registry from the start (zero until something happens).
func TestServiceMetricsNames(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	deps := svc.Deps{NC: js.NC, JS: js.JS, Health: svc.NewHealth()}
	cfg, err := LoadConfig("", []string{"OTAWATCH_CLICKHOUSE_ADDR=127.0.0.1:9000"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	b, err := bridge.New(cfg.MQTT, deps)
	if err != nil {
		t.Fatal(err)
	}
	p, err := projector.New(cfg.ClickHouse, deps)
	if err != nil {
		t.Fatal(err)
	}
	a, err := alerting.New(cfg.Alerting, deps)
	if err != nil {
		t.Fatal(err)
	}
	r, err := rollout.New(cfg.Rollout, deps)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []svc.Service{b, p, a, r} {
		if err := registerServiceMetrics(reg, s); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]int{}
	for _, mf := range mfs {
		have[mf.GetName()] = len(mf.GetMetric())
	}
	for name, n := range map[string]int{
		"otawatch_bridge_reports_total":           3,
		"otawatch_bridge_publish_retries_total":   1,
		"otawatch_bridge_reports_in_flight":       1,
		"otawatch_projector_rows_total":           4,
		"otawatch_projector_batches_total":        4,
		"otawatch_projector_rejected_total":       4,
		"otawatch_alerting_alerts_total":          6,
		"otawatch_rollout_deltas_sent_total":      1,
		"otawatch_rollout_deltas_retracted_total": 1,
		"otawatch_rollout_desired_recorded_total": 1,
		"otawatch_rollout_events_appended_total":  1,
	} {
		if have[name] != n {
			t.Errorf("%s: %d series, want %d", name, have[name], n)
		}
	}
}
