package api

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// Tokens of writeTokens.
const (
	opToken = "op-token-0123456789abcdef"
	roToken = "ro-token-0123456789abcdef"
)

// writeTokens writes a tokens file with one operator and one read-only
// token and returns its path.
func writeTokens(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	body := "# test tokens\noperator " + opToken + " alice\nread-only " + roToken + " grafana\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// harness is a running api service on a real embedded JetStream.
type harness struct {
	js     *testutil.JetStream
	svc    *Service
	health *svc.Health
	base   string
	token  string // sent by do() unless the request sets Authorization
	// stop ends Run and checks it returned nil; cleanup calls it too.
	stop func()
}

type harnessOpts struct {
	cfg       Config
	noStreams bool
	// clock is the service's (svc.Deps.Clock); nil is the wall clock.
	clock svc.Clock
}

// startAPI starts the service on a free loopback port; t.Cleanup stops it
// and fails the test if Run does not return nil.
func startAPI(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{NoStreams: o.noStreams})
	cfg := o.cfg
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.DashboardRefresh == 0 {
		cfg.DashboardRefresh = 20 * time.Millisecond
	}
	health := svc.NewHealth()
	s, err := New(cfg, svc.Deps{NC: js.NC, JS: js.JS, Health: health, Clock: o.clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil on a clean stop", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return 30s after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	testutil.Eventually(t, 10*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("Run: %v", err)
		default:
		}
		return s.Addr() != ""
	}, "the service did not listen")
	h := &harness{js: js, svc: s, health: health, base: "http://" + s.Addr(), stop: stop}
	if cfg.TokensFile != "" {
		h.token = opToken
	}
	return h
}

// waitCaughtUp waits until the read model has applied SHADOW up to seq.
func (h *harness) waitShadow(t *testing.T, seq uint64) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() bool { return h.svc.shadow.Applied() >= seq },
		"the read model did not apply SHADOW up to %d (at %d)", seq, h.svc.shadow.Applied())
}

// publish stores e on subject and returns its stream sequence.
func (h *harness) publish(t *testing.T, subject string, e events.Event) uint64 {
	t.Helper()
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := h.js.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: b, Header: nats.Header{"Nats-Msg-Id": {e.ID}}})
	if err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

func (h *harness) report(t *testing.T, typeID, dev, version, status string, dur float64, at time.Time) uint64 {
	t.Helper()
	fw := events.Firmware{Version: version, Status: status, Timestamp: at, UpdateDuration: dur, Checksum: "sha256:" + version}
	if status == events.StatusFailed {
		code := "E_FLASH"
		fw.ErrorCode = &code
	}
	e, err := events.New(events.ReportEventID(typeID, dev, fw), events.SourceBridge, events.TypeShadowReported, dev, at,
		events.ShadowReportedData{TypeID: typeID, DeviceID: dev, Topic: events.ReportTopic(typeID, dev), Firmware: fw})
	if err != nil {
		t.Fatal(err)
	}
	return h.publish(t, events.ShadowReportedSubject(typeID, dev), e)
}

func (h *harness) desire(t *testing.T, typeID, dev, job string, wave int, version string, at time.Time) uint64 {
	t.Helper()
	e, err := events.New(events.IdentityID("sd", typeID, dev, job, version), events.SourceRollout, events.TypeShadowDesired, dev, at,
		events.ShadowDesiredData{TypeID: typeID, DeviceID: dev, JobID: job, Wave: wave,
			Firmware: events.DesiredFirmware{Version: version, Checksum: "sha256:" + version, URL: "https://fw.example/" + version}})
	if err != nil {
		t.Fatal(err)
	}
	return h.publish(t, events.ShadowDesiredSubject(typeID, dev), e)
}

func (h *harness) presence(t *testing.T, typeID, dev, state string, lastSeen, at time.Time) uint64 {
	t.Helper()
	e, err := events.New(events.IdentityID("dp", typeID, dev, state, at.String()), events.SourceAlerting, events.TypeDevicePresence, dev, at,
		events.DevicePresenceData{TypeID: typeID, DeviceID: dev, State: state, LastSeen: lastSeen})
	if err != nil {
		t.Fatal(err)
	}
	return h.publish(t, events.DevicePresenceSubject(typeID, dev), e)
}

// do sends a request with the harness token (unless hdr sets
// Authorization) and returns the status and body.
func (h *harness) do(t *testing.T, method, path, body string, hdr http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if req.Header.Get("Authorization") == "" && h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// getJSON does a GET, checks the status and decodes the body into v.
func (h *harness) getJSON(t *testing.T, path string, wantStatus int, v any) {
	t.Helper()
	status, b := h.do(t, http.MethodGet, path, "", nil)
	if status != wantStatus {
		t.Fatalf("GET %s: status %d, want %d; body %s", path, status, wantStatus, b)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: body %s: %v", path, b, err)
		}
	}
}

// errorOf returns the "error" of a JSON error body, failing the test when
// the body is not one.
func errorOf(t *testing.T, b []byte) string {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not a JSON error", b)
	}
	return e.Error
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	ID   string
	Data string
}

// sseClient reads events from a stream in the background.
type sseClient struct {
	resp   *http.Response
	events chan sseEvent
	// comments counts comment lines (heartbeats).
	comments chan string
}

func (h *harness) openSSE(t *testing.T, path string, hdr http.Header) *sseClient {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: status %d: %s", path, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q, want text/event-stream", ct)
	}
	c := &sseClient{resp: resp, events: make(chan sseEvent, 100), comments: make(chan string, 100)}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.ID != "" || ev.Data != "" {
					c.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				select {
				case c.comments <- line:
				default:
				}
			case strings.HasPrefix(line, "id: "):
				ev.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				ev.Data += strings.TrimPrefix(line, "data: ")
			}
		}
		close(c.events)
	}()
	return c
}

// next returns the next event, failing the test after timeout.
func (c *sseClient) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-c.events:
		if !ok {
			t.Fatal("the stream ended")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return sseEvent{}
}

// none checks that no event arrives for a short while.
func (c *sseClient) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-c.events:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}
