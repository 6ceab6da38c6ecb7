package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/notify"
)

// check config lists every problem of the notify section at once: an
// unknown receiver, a bad matcher, a missing secret file, a bad duration.
func TestCheckConfigNotify(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "notify.yaml")
	yaml := `notify:
  route:
    receiver: nobody
    group_wait: 5x
    routes:
      - receiver: oncall
        matchers: ['severity', 'rule=~"(bad"']
  receivers:
    - name: oncall
      pagerduty:
        routing_key_file: ` + filepath.Join(dir, "missing.key") + `
    - name: silence
      webhook:
        url: https://hooks.example.com/x
`
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := Main(context.Background(), []string{"check", "config", "-c", file}, &Env{Stdout: &out, Stderr: &out})
	if code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", code, out.String())
	}
	for _, want := range []string{
		`notify.route.receiver: unknown receiver "nobody"`,
		"cannot unmarshal !!str `5x` into time.Duration",
		`notify.route.routes.0.matchers: matcher "severity"`,
		`notify.route.routes.0.matchers: matcher "rule=~\"(bad\""`,
		"notify.receivers.0.pagerduty.routing_key_file",
		`notify.receivers.1.name: "silence" is reserved`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// notify test sends the sample through the configured receiver (a webhook
// to a test server) and prints its answer.
func TestNotifyTestCommand(t *testing.T) {
	var mu sync.Mutex
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "notify:\n  receivers:\n    - name: hooks\n      webhook:\n        url: " + srv.URL + "/hook\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := Main(context.Background(), []string{"notify", "test", "-c", file, "hooks"}, &Env{Stdout: &out, Stderr: &out})
	if code != 0 {
		t.Fatalf("exit code %d\n%s", code, out.String())
	}
	for _, want := range []string{"receiver: hooks (webhook)", "status:   202", `answer:   {"ok":true}`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 1 {
		t.Fatalf("the server got %d requests, want 1", len(bodies))
	}
	var body map[string]any
	if err := json.Unmarshal(bodies[0], &body); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, bodies[0])
	}
	if !strings.Contains(string(bodies[0]), "test-device-1") {
		t.Errorf("body lacks the sample's devices:\n%s", bodies[0])
	}

	out.Reset()
	if code := Main(context.Background(), []string{"notify", "test", "-c", file, "nobody"}, &Env{Stdout: &out, Stderr: &out}); code != 1 ||
		!strings.Contains(out.String(), `no receiver "nobody"`) {
		t.Fatalf("unknown receiver: code %d\n%s", code, out.String())
	}
}

// silence add, list and expire write and read NOTIFY.
func TestSilenceCommand(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	url := js.Server.ClientURL()
	dir := t.TempDir()
	run := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := Main(context.Background(), append([]string{"silence"}, append(args, "--nats", url)...),
			&Env{Stdout: &out, Stderr: &out, Environ: []string{"USER=alice", "OTAWATCH_DATA_DIR=" + dir}})
		return code, out.String()
	}
	if code, out := run("list"); code != 0 || !strings.Contains(out, "no silences") {
		t.Fatalf("empty list: code %d\n%s", code, out)
	}
	if code, out := run("add", "--id", "maint1", "--for", "2h", "--comment", "maintenance", `job="j1"`, `severity=~"warning|info"`); code != 0 ||
		!strings.Contains(out, "silence maint1") || !strings.Contains(out, "by alice") {
		t.Fatalf("add: code %d\n%s", code, out)
	}
	if code, out := run("add", "bad matcher"); code != 2 {
		t.Fatalf("add with a bad matcher: code %d, want 2\n%s", code, out)
	}
	code, out := run("list")
	if code != 0 || !strings.Contains(out, "maint1") || !strings.Contains(out, "active") || !strings.Contains(out, `job="j1",severity=~"warning|info"`) {
		t.Fatalf("list: code %d\n%s", code, out)
	}
	if code, out := run("expire", "maint1"); code != 0 || !strings.Contains(out, "silence maint1 expired") {
		t.Fatalf("expire: code %d\n%s", code, out)
	}
	if code, out := run("list"); code != 0 || !strings.Contains(out, "no silences") {
		t.Fatalf("list after expiry: code %d\n%s", code, out)
	}
	if code, out := run("list", "--all"); code != 0 || !strings.Contains(out, "expired") {
		t.Fatalf("list --all: code %d\n%s", code, out)
	}
	if code, out := run("expire", "maint1"); code != 1 || !strings.Contains(out, "already expired") {
		t.Fatalf("expire twice: code %d\n%s", code, out)
	}
}

// The notify service's counters are on /metrics (registerServiceMetrics).
func TestNotifyMetrics(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	s, err := notify.New(NotifyConfig{}, svc.Deps{JS: js.JS})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := registerServiceMetrics(reg, s); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "otawatch_notify_") {
			n += len(mf.GetMetric())
		}
	}
	if n != 8 {
		t.Fatalf("%d notify series, want 8 (4 outcomes, 3 kinds held, standby)", n)
	}
}
