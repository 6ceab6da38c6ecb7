package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/notify"
)

const secret = "s3cr3t-shared-with-the-receiver"

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

type request struct {
	header http.Header
	body   []byte
}

func fake(t *testing.T) (*[]request, *httptest.Server) {
	var got []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/hooks/otawatch" {
			t.Errorf("request %s %s, want POST /hooks/otawatch", r.Method, r.URL.Path)
		}
		body, _ := io.ReadAll(r.Body)
		got = append(got, request{r.Header.Clone(), body})
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return &got, srv
}

func file(t *testing.T, s string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func notification() *notify.Notification {
	return &notify.Notification{
		Receiver: "tickets", GroupKey: `{}:{job="fw-4.2.1"}`, Status: notify.StatusFiring,
		GroupLabels: map[string]string{"job": "fw-4.2.1"},
		Alerts: []events.AlertData{{
			Key: "device-failed/gw/d1", RuleID: "device-failed", Severity: "critical", State: events.AlertRaised,
			TypeID: "gw", DeviceID: "d1", JobID: "fw-4.2.1", Wave: 1, Message: "device d1 failed", StartsAt: t0,
		}},
		Time: t0.Add(time.Second), ExternalURL: "https://otawatch.example.com",
	}
}

func TestSignedPayload(t *testing.T) {
	tests := []struct {
		name   string
		secret string
	}{
		{name: "signed with a secret", secret: secret},
		{name: "unsigned without one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, srv := fake(t)
			cfg := Config{URL: srv.URL + "/hooks/otawatch"}
			if tt.secret != "" {
				cfg.SecretFile = file(t, tt.secret)
			}
			r, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			n := notification()
			res, err := r.Notify(context.Background(), n)
			if err != nil || res.Status != http.StatusNoContent {
				t.Fatalf("Notify: %+v, %v", res, err)
			}
			// A retry of the same notification carries the same id.
			if _, err := r.Notify(context.Background(), n); err != nil {
				t.Fatal(err)
			}
			if len(*got) != 2 {
				t.Fatalf("fake got %d requests", len(*got))
			}
			req := (*got)[0]
			if ct := req.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			sig := req.header.Get(SignatureHeader)
			if tt.secret == "" {
				if sig != "" {
					t.Errorf("unsigned request has %s: %q", SignatureHeader, sig)
				}
			} else {
				// Computed here independently of Sign.
				m := hmac.New(sha256.New, []byte(tt.secret))
				m.Write(req.body)
				if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); sig != want {
					t.Errorf("%s = %q, want %q", SignatureHeader, sig, want)
				}
				if !Verify([]byte(tt.secret), req.body, sig) {
					t.Errorf("Verify refuses the request's own signature")
				}
				if Verify([]byte(tt.secret), append(req.body, ' '), sig) || Verify([]byte("other"), req.body, sig) {
					t.Errorf("Verify accepts a changed body or another secret")
				}
			}
			id := req.header.Get(IDHeader)
			if id == "" || (*got)[1].header.Get(IDHeader) != id {
				t.Errorf("notification ids %q and %q, want equal and set", id, (*got)[1].header.Get(IDHeader))
			}
			var p map[string]any
			if err := json.Unmarshal(req.body, &p); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"version": "1", "id": id, "receiver": "tickets", "status": "firing", "groupKey": `{}:{job="fw-4.2.1"}`,
				"groupLabels": map[string]any{"job": "fw-4.2.1"}, "commonLabels": map[string]any{},
				"summary":     "[CRITICAL] device-failed in job fw-4.2.1 wave 1: 1 device",
				"externalURL": "https://otawatch.example.com", "time": "2026-11-30T12:00:01Z",
				"alerts": []any{map[string]any{
					"key": "device-failed/gw/d1", "ruleId": "device-failed", "severity": "critical", "state": "raised",
					"typeId": "gw", "deviceId": "d1", "jobId": "fw-4.2.1", "wave": 1.0, "message": "device d1 failed",
					"startsAt": "2026-11-30T12:00:00Z",
				}},
			}
			if !reflect.DeepEqual(p, want) {
				t.Errorf("payload\n%s\nwant\n%v", req.body, want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	empty := file(t, "")
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "good", cfg: Config{URL: "https://tickets.example.com/hook", SecretFile: file(t, secret)}},
		{name: "everything wrong", cfg: Config{URL: "tickets.example.com", SecretFile: filepath.Join(dir, "nope"), Timeout: -1, Summary: "{{"}, want: []string{
			`url: scheme "" is not http or https`,
			"secret_file: read secret: open " + dir + "/nope: no such file or directory",
			"timeout: must be positive",
			"summary: parse template: template: summary:1: unclosed action",
		}},
		{name: "no url, empty secret", cfg: Config{SecretFile: empty}, want: []string{"url: is required", "secret_file: " + empty + " is empty"}},
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
		})
	}
}
