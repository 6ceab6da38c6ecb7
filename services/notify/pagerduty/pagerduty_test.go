package pagerduty

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/notify"
)

const routingKey = "R0UT1NGKEY0123456789abcdefABCDEF"

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// fakePagerDuty is the Events API v2 as documented: POST /v2/enqueue, JSON,
// 202 {"status":"success",...}. It records every event and checks each
// request's method, path and headers.
type fakePagerDuty struct {
	t      *testing.T
	mu     sync.Mutex
	events []map[string]any
	// answer, when set, is the next status and body (then 202 again).
	answers []func(w http.ResponseWriter)
}

func (f *fakePagerDuty) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v2/enqueue" {
		f.t.Errorf("request %s %s, want POST /v2/enqueue", r.Method, r.URL.Path)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.t.Errorf("Content-Type = %q, want application/json", ct)
	}
	body, _ := io.ReadAll(r.Body)
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil {
		f.t.Errorf("body is not JSON: %v: %s", err, body)
	}
	f.mu.Lock()
	f.events = append(f.events, ev)
	var answer func(http.ResponseWriter)
	if len(f.answers) > 0 {
		answer, f.answers = f.answers[0], f.answers[1:]
	}
	f.mu.Unlock()
	if answer != nil {
		answer(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, `{"status":"success","message":"Event processed","dedup_key":%q}`, ev["dedup_key"])
}

func newFake(t *testing.T) (*fakePagerDuty, *httptest.Server) {
	f := &fakePagerDuty{t: t}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func secretFile(t testing.TB, s string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "routing_key")
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newNotifier(t testing.TB, url string, edit func(*Config)) *Notifier {
	t.Helper()
	cfg := Config{URL: url, RoutingKeyFile: secretFile(t, routingKey), Timeout: 5 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// storm is one wave's group: n devices failed.
func storm(n int, status string) *notify.Notification {
	var alerts []events.AlertData
	state := events.AlertRaised
	if status == notify.StatusResolved {
		state = events.AlertResolved
	}
	for i := range n {
		dev := fmt.Sprintf("dev-%03d", i)
		alerts = append(alerts, events.AlertData{
			Key: "device-failed/gw/" + dev, RuleID: "device-failed", Severity: "critical", State: state,
			TypeID: "gw", DeviceID: dev, JobID: "fw-4.2.1", Wave: 3,
			Message: "device " + dev + " failed: E42", StartsAt: t0.Add(time.Duration(i) * time.Millisecond),
		})
	}
	return &notify.Notification{
		Receiver: "oncall", GroupKey: `{}/{severity="critical"}:{job="fw-4.2.1"}`, Status: status,
		GroupLabels: map[string]string{"job": "fw-4.2.1"}, Alerts: alerts, Time: t0.Add(time.Second),
		ExternalURL: "https://otawatch.example.com/",
	}
}

func TestTriggerAndResolve(t *testing.T) {
	fake, srv := newFake(t)
	r := newNotifier(t, srv.URL, nil)
	ctx := context.Background()

	res, err := r.Notify(ctx, storm(200, notify.StatusFiring))
	if err != nil || res.Status != http.StatusAccepted || res.Retry || !strings.Contains(res.Answer, `"status":"success"`) {
		t.Fatalf("trigger: %+v, %v", res, err)
	}
	if _, err := r.Notify(ctx, storm(200, notify.StatusResolved)); err != nil {
		t.Fatalf("resolve: %v", err)
	}
	if len(fake.events) != 2 {
		t.Fatalf("fake received %d events, want 2", len(fake.events))
	}
	trigger, resolve := fake.events[0], fake.events[1]
	key := DedupKey(storm(1, notify.StatusFiring).GroupKey)
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(key) {
		t.Errorf("dedup key %q is not 64 hex digits", key)
	}

	checks := []struct {
		name string
		got  any
		want any
	}{
		{"trigger routing_key", trigger["routing_key"], routingKey},
		{"trigger event_action", trigger["event_action"], "trigger"},
		{"trigger dedup_key", trigger["dedup_key"], key},
		{"payload.summary", path(trigger, "payload", "summary"), "[CRITICAL] device-failed in job fw-4.2.1 wave 3: 200 devices"},
		{"payload.source", path(trigger, "payload", "source"), "otawatch"},
		{"payload.severity", path(trigger, "payload", "severity"), "critical"},
		{"payload.timestamp", path(trigger, "payload", "timestamp"), "2026-11-30T12:00:00Z"},
		{"payload.class", path(trigger, "payload", "class"), "device-failed"},
		{"payload.component", path(trigger, "payload", "component"), "fw-4.2.1"},
		{"custom_details.job", path(trigger, "payload", "custom_details", "job"), "fw-4.2.1"},
		{"custom_details.wave", path(trigger, "payload", "custom_details", "wave"), "3"},
		{"custom_details.rule", path(trigger, "payload", "custom_details", "rule"), "device-failed"},
		{"custom_details.devices_total", path(trigger, "payload", "custom_details", "devices_total"), 200.0},
		{"custom_details.firing", path(trigger, "payload", "custom_details", "firing"), 200.0},
		{"custom_details.devices listed", len(path(trigger, "payload", "custom_details", "devices").([]any)), 100},
		{"custom_details.devices first", path(trigger, "payload", "custom_details", "devices").([]any)[0], "dev-000"},
		{"links", trigger["links"], []any{map[string]any{"href": "https://otawatch.example.com/", "text": "otawatch dashboard"}}},
		{"client_url", trigger["client_url"], "https://otawatch.example.com/"},
		{"resolve routing_key", resolve["routing_key"], routingKey},
		{"resolve event_action", resolve["event_action"], "resolve"},
		{"resolve dedup_key is the trigger's", resolve["dedup_key"], key},
		{"resolve is the three documented keys", sortedKeys(resolve), []string{"dedup_key", "event_action", "routing_key"}},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("got %#v, want %#v", c.got, c.want)
			}
		})
	}
}

func path(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func TestSeverityAndSummaryLimits(t *testing.T) {
	fake, srv := newFake(t)
	r := newNotifier(t, srv.URL, func(c *Config) { c.Summary = `{{range .Firing}}{{.Message}} {{end}}` })
	tests := []struct {
		name, severity, want string
	}{
		{"critical", "critical", "critical"},
		{"warning", "warning", "warning"},
		{"info", "info", "info"},
		{"unknown pages as error", "major", "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := storm(100, notify.StatusFiring)
			for i := range n.Alerts {
				n.Alerts[i].Severity = tt.severity
			}
			if _, err := r.Notify(context.Background(), n); err != nil {
				t.Fatal(err)
			}
			ev := fake.events[len(fake.events)-1]
			if got := path(ev, "payload", "severity"); got != tt.want {
				t.Errorf("severity %q -> %v, want %q", tt.severity, got, tt.want)
			}
			if s := path(ev, "payload", "summary").(string); len(s) > 1024 || !strings.HasPrefix(s, "device dev-000 failed") {
				t.Errorf("summary of %d bytes (limit 1024): %.60q", len(s), s)
			}
		})
	}
}

func TestAnswers(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     string
		body       string
		retry      bool
		retryAfter time.Duration
	}{
		{name: "invalid event is final", status: 400, body: `{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect (should be 32 characters)"]}`},
		{name: "throttled waits Retry-After", status: 429, header: "2", retry: true, retryAfter: 2 * time.Second},
		{name: "server error retried", status: 502, body: "bad gateway", retry: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, srv := newFake(t)
			fake.answers = append(fake.answers, func(w http.ResponseWriter) {
				if tt.header != "" {
					w.Header().Set("Retry-After", tt.header)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			r := newNotifier(t, srv.URL, nil)
			res, err := r.Notify(context.Background(), storm(1, notify.StatusFiring))
			if err == nil {
				t.Fatal("no error")
			}
			if res.Status != tt.status || res.Retry != tt.retry || res.RetryAfter != tt.retryAfter || res.Answer != tt.body {
				t.Errorf("got %+v, want status %d retry %v after %s answer %q", res, tt.status, tt.retry, tt.retryAfter, tt.body)
			}
			if strings.Contains(err.Error(), routingKey) {
				t.Errorf("error shows the routing key: %v", err)
			}
			if !strings.Contains(err.Error(), "pagerduty oncall trigger") {
				t.Errorf("error does not name the receiver and action: %v", err)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	r := newNotifier(t, srv.URL, func(c *Config) { c.Timeout = 100 * time.Millisecond })
	res, err := r.Notify(context.Background(), storm(1, notify.StatusFiring))
	if !errors.Is(err, context.DeadlineExceeded) || !res.Retry {
		t.Errorf("got %+v, %v; want a retried timeout", res, err)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := secretFile(t, routingKey)
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "defaults and a key file", cfg: Config{RoutingKeyFile: good}},
		{name: "no key file", cfg: Config{}, want: []string{"routing_key_file: is required (the integration's routing key)"}},
		{name: "missing key file", cfg: Config{RoutingKeyFile: filepath.Join(dir, "nope")}, want: []string{"routing_key_file: read secret: open " + dir + "/nope: no such file or directory"}},
		{name: "empty key file", cfg: Config{RoutingKeyFile: empty}, want: []string{"routing_key_file: " + empty + " is empty"}},
		{name: "everything wrong at once", cfg: Config{URL: "events.pagerduty.com", Timeout: -time.Second, MaxDevices: -1, Summary: "{{.Nope"}, want: []string{
			"url: scheme \"\" is not http or https",
			"routing_key_file: is required (the integration's routing key)",
			"timeout: must be positive",
			"max_devices: -1 is less than 1",
			"summary: parse template: template: summary:1: unclosed action",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.SetDefaults()
			p := conf.NewProblems()
			cfg.Validate(p)
			var got []string
			for _, pr := range p.List() {
				got = append(got, pr.Key+": "+pr.Reason)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			_, err := New(tt.cfg)
			var ce *conf.Error
			if len(tt.want) > 0 && !errors.As(err, &ce) {
				t.Errorf("New: %v, want a *conf.Error", err)
			}
		})
	}
}

func sortedKeys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
