package slack

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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/notify"
)

// hookPath is the webhook's secret part, as Slack issues them.
const hookPath = "/services/T0000TEAM/B0000HOOK/XXXXXXXXXXXXXXXXXXXXXXXX"

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// fakeSlack is an incoming webhook as Slack documents it: POST of a JSON
// message to the hook's path, 200 "ok". It checks method, path and
// headers, and keeps each body.
type fakeSlack struct {
	t      *testing.T
	mu     sync.Mutex
	bodies [][]byte
	answer func(w http.ResponseWriter)
}

func (f *fakeSlack) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != hookPath {
		f.t.Errorf("request %s %s, want POST %s", r.Method, r.URL.Path, hookPath)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.t.Errorf("Content-Type = %q, want application/json", ct)
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	answer := f.answer
	f.mu.Unlock()
	if answer != nil {
		answer(w)
		return
	}
	_, _ = io.WriteString(w, "ok")
}

func newFake(t *testing.T) (*fakeSlack, *httptest.Server) {
	f := &fakeSlack{t: t}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func urlFile(t *testing.T, u string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "slack_url")
	if err := os.WriteFile(path, []byte(u+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newNotifier(t *testing.T, base string, edit func(*Config)) *Notifier {
	t.Helper()
	cfg := Config{URLFile: urlFile(t, base+hookPath)}
	if edit != nil {
		edit(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func group(n int, severity, status string) *notify.Notification {
	var alerts []events.AlertData
	state := events.AlertRaised
	if status == notify.StatusResolved {
		state = events.AlertResolved
	}
	for i := range n {
		dev := fmt.Sprintf("dev-%03d", i)
		alerts = append(alerts, events.AlertData{
			Key: "duration-anomaly/gw/" + dev, RuleID: "duration-anomaly", Severity: severity, State: state,
			TypeID: "gw", DeviceID: dev, JobID: "fw-4.2.1", Wave: 2,
			Message: "update of " + dev + " took 312s, 2.6x the fleet average", StartsAt: t0,
		})
	}
	return &notify.Notification{Receiver: "fleet-ops", GroupKey: "g1", Status: status, Alerts: alerts,
		Time: t0.Add(30 * time.Second), ExternalURL: "https://otawatch.example.com/"}
}

// blockKit checks a message against Block Kit's rules for what this
// receiver sends: text is set; blocks are sections (text and/or at most
// 10 fields, mrkdwn or plain_text, within the length limits) and
// contexts (elements).
func blockKit(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	if s, _ := m["text"].(string); s == "" {
		t.Errorf("no fallback text")
	}
	blocks, ok := m["blocks"].([]any)
	if !ok || len(blocks) == 0 || len(blocks) > 50 {
		t.Fatalf("blocks = %v", m["blocks"])
	}
	textObj := func(where string, v any, limit int) {
		o, _ := v.(map[string]any)
		typ, _ := o["type"].(string)
		text, _ := o["text"].(string)
		if (typ != "mrkdwn" && typ != "plain_text") || text == "" || len(text) > limit {
			t.Errorf("%s: bad text object %v", where, v)
		}
	}
	for i, b := range blocks {
		b := b.(map[string]any)
		where := fmt.Sprintf("blocks[%d]", i)
		switch b["type"] {
		case "section":
			fields, _ := b["fields"].([]any)
			if b["text"] == nil && len(fields) == 0 {
				t.Errorf("%s: section with neither text nor fields", where)
			}
			if b["text"] != nil {
				textObj(where+".text", b["text"], 3000)
			}
			if len(fields) > 10 {
				t.Errorf("%s: %d fields, Slack takes 10", where, len(fields))
			}
			for j, f := range fields {
				textObj(fmt.Sprintf("%s.fields[%d]", where, j), f, 2000)
			}
		case "context":
			els, _ := b["elements"].([]any)
			if len(els) == 0 || len(els) > 10 {
				t.Errorf("%s: %d elements", where, len(els))
			}
			for j, e := range els {
				textObj(fmt.Sprintf("%s.elements[%d]", where, j), e, 3000)
			}
		default:
			t.Errorf("%s: type %v, want section or context", where, b["type"])
		}
	}
	return m
}

func TestMessage(t *testing.T) {
	tests := []struct {
		name     string
		n        *notify.Notification
		want     []string
		not      []string
		fallback string
	}{
		{
			name:     "warning storm",
			n:        group(40, "warning", notify.StatusFiring),
			fallback: "[WARNING] duration-anomaly in job fw-4.2.1 wave 2: 40 devices",
			want: []string{
				`":warning: *[WARNING] duration-anomaly in job fw-4.2.1 wave 2: 40 devices*"`,
				`"*Severity*\nwarning"`, `"*Rule*\nduration-anomaly"`, `"*Job / wave*\nfw-4.2.1 / wave 2"`, `"*Devices*\n40"`,
				`*Devices (40):* dev-000, dev-001, dev-002, dev-003, dev-004 and 35 more`,
				`• update of dev-000 took 312s, 2.6x the fleet average`, `… and 37 more alerts`,
				`\u003chttps://otawatch.example.com/|Open the dashboard\u003e`,
			},
			not: []string{"dev-005,"},
		},
		{
			name:     "resolved",
			n:        group(3, "warning", notify.StatusResolved),
			fallback: "[RESOLVED] duration-anomaly in job fw-4.2.1 wave 2: 3 devices",
			want:     []string{`:white_check_mark: *[RESOLVED]`, `All 3 alerts of the group resolved.`},
			not:      []string{"took 312s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, srv := newFake(t)
			r := newNotifier(t, srv.URL, nil)
			res, err := r.Notify(context.Background(), tt.n)
			if err != nil || res.Status != 200 || res.Answer != "ok" {
				t.Fatalf("Notify: %+v, %v", res, err)
			}
			if len(fake.bodies) != 1 {
				t.Fatalf("fake got %d posts", len(fake.bodies))
			}
			body := fake.bodies[0]
			t.Logf("Slack received:\n%s", body)
			m := blockKit(t, body)
			if m["text"] != tt.fallback {
				t.Errorf("text = %q, want %q", m["text"], tt.fallback)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(body), w) {
					t.Errorf("body lacks %s", w)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(string(body), w) {
					t.Errorf("body has %s", w)
				}
			}
		})
	}
}

func TestEscapes(t *testing.T) {
	fake, srv := newFake(t)
	r := newNotifier(t, srv.URL, nil)
	n := group(1, "critical", notify.StatusFiring)
	n.Alerts[0].Message = "<!channel> see <https://evil.example|here> & now"
	if _, err := r.Notify(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	var m Message
	if err := json.Unmarshal(fake.bodies[0], &m); err != nil {
		t.Fatal(err)
	}
	got := m.Blocks[2].Text.Text
	if want := "• &lt;!channel&gt; see &lt;https://evil.example|here&gt; &amp; now"; !strings.Contains(got, want) {
		t.Errorf("body %q, want it to hold %q", got, want)
	}
}

func TestAnswersHideTheURL(t *testing.T) {
	tests := []struct {
		name, body string
		status     int
		retry      bool
	}{
		{name: "invalid payload is final", status: 400, body: "invalid_payload"},
		{name: "revoked hook is final", status: 403, body: "invalid_token"},
		{name: "archived channel is final", status: 410, body: "channel_is_archived"},
		{name: "rate limited is retried", status: 429, body: "rate_limited", retry: true},
		{name: "rollup error is retried", status: 500, body: "rollup_error", retry: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, srv := newFake(t)
			fake.answer = func(w http.ResponseWriter) {
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}
			r := newNotifier(t, srv.URL, nil)
			res, err := r.Notify(context.Background(), group(1, "warning", notify.StatusFiring))
			if err == nil || res.Retry != tt.retry || res.Answer != tt.body || res.Status != tt.status {
				t.Fatalf("got %+v, %v; want status %d retry %v", res, err, tt.status, tt.retry)
			}
			if strings.Contains(err.Error(), "XXXXXXXX") || strings.Contains(err.Error(), "T0000TEAM") {
				t.Errorf("error shows the webhook URL: %v", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	notURL := urlFile(t, "hooks.slack.com/services/T/B/SECRETPART")
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "good", cfg: Config{URLFile: urlFile(t, "https://hooks.slack.com"+hookPath)}},
		{name: "no url_file", cfg: Config{}, want: []string{"url_file: is required (the incoming webhook's URL)"}},
		{name: "missing file", cfg: Config{URLFile: filepath.Join(dir, "nope")}, want: []string{
			"url_file: read secret: open " + dir + "/nope: no such file or directory"}},
		{name: "not a URL, not shown", cfg: Config{URLFile: notURL}, want: []string{
			"url_file: " + notURL + `: the webhook URL scheme "" is not http or https`}},
		{name: "bad templates and timeout", cfg: Config{URLFile: urlFile(t, "https://x"+hookPath), Timeout: -1, Title: "{{", Text: "{{end}}"}, want: []string{
			"timeout: must be positive",
			"title: parse template: template: title:1: unclosed action",
			"text: parse template: template: text:1: unexpected {{end}}",
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
				if strings.Contains(pr.Reason, "SECRETPART") {
					t.Errorf("problem shows the URL: %s", pr.Reason)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			var ce *conf.Error
			if _, err := New(tt.cfg); len(tt.want) > 0 && !errors.As(err, &ce) {
				t.Errorf("New: %v, want a *conf.Error", err)
			}
		})
	}
}
