package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
)

func TestRolloutProxyWithoutService(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/api/v1/rollouts"},
		{http.MethodGet, "/api/v1/rollouts/job1"},
		{http.MethodPost, "/api/v1/rollouts"},
		{http.MethodPost, "/api/v1/rollouts/job1/resume"},
	} {
		status, b := h.do(t, r.method, r.path, "", nil)
		if status != http.StatusServiceUnavailable || errorOf(t, b) != "rollout service not running" {
			t.Errorf("%s %s: status %d body %s, want 503 rollout service not running", r.method, r.path, status, b)
		}
	}
}

// echoRequest is what the test responder saw.
type echoRequest struct {
	Subject string                     `json:"subject"`
	Actor   string                     `json:"actor"`
	Body    map[string]json.RawMessage `json:"body"`
}

func TestRolloutProxyForwards(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}})
	// A stand-in rollout service: it echoes what it received, and answers
	// job ids that name an outcome with that outcome.
	sub, err := h.js.NC.Subscribe(events.RolloutCommandPrefix+".*.*", func(m *nats.Msg) {
		var body map[string]json.RawMessage
		_ = json.Unmarshal(m.Data, &body)
		var job string
		_ = json.Unmarshal(body["jobId"], &job)
		switch job {
		case "missing":
			_ = m.Respond([]byte(`{"error":"no job \"missing\"","code":"not_found"}`))
		case "done":
			_ = m.Respond([]byte(`{"error":"job done is completed: nothing to pause","code":"conflict"}`))
		case "plain":
			_ = m.Respond([]byte(`{"error":"refused"}`))
		case "micro":
			reply := nats.NewMsg(m.Reply)
			reply.Header.Set("Nats-Service-Error", "unprocessable")
			reply.Header.Set("Nats-Service-Error-Code", "422")
			_ = m.RespondMsg(reply)
		case "garbage":
			_ = m.Respond([]byte("not json"))
		default:
			b, _ := json.Marshal(echoRequest{Subject: m.Subject, Actor: m.Header.Get(ActorHeader), Body: body})
			_ = m.Respond(b)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.js.NC.Flush(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, method, path, body string
		status                   int
		subject                  string // of an echoed request
		wantBody                 map[string]string
		wantErr                  string
	}{
		{name: "create", method: http.MethodPost, path: "/api/v1/rollouts",
			body:   `{"spec":{"target":{"version":"2.0"},"deviceType":"sensor"},"start":true}`,
			status: http.StatusCreated, subject: "otawatch.rollout.cmd.create",
			wantBody: map[string]string{"spec": `{"target":{"version":"2.0"},"deviceType":"sensor"}`, "start": "true"}},
		{name: "list", method: http.MethodGet, path: "/api/v1/rollouts", status: http.StatusOK, subject: "otawatch.rollout.cmd.list",
			wantBody: map[string]string{}},
		{name: "show", method: http.MethodGet, path: "/api/v1/rollouts/job1", status: http.StatusOK, subject: "otawatch.rollout.cmd.show",
			wantBody: map[string]string{"jobId": `"job1"`}},
		{name: "pause with a reason", method: http.MethodPost, path: "/api/v1/rollouts/job1/pause", body: `{"reason":"night"}`,
			status: http.StatusOK, subject: "otawatch.rollout.cmd.pause",
			wantBody: map[string]string{"jobId": `"job1"`, "reason": `"night"`}},
		{name: "retry-failed", method: http.MethodPost, path: "/api/v1/rollouts/job1/retry-failed", status: http.StatusOK,
			subject: "otawatch.rollout.cmd.retry-failed", wantBody: map[string]string{"jobId": `"job1"`}},
		{name: "not found", method: http.MethodPost, path: "/api/v1/rollouts/missing/resume", status: http.StatusNotFound, wantErr: `no job "missing"`},
		{name: "conflict", method: http.MethodPost, path: "/api/v1/rollouts/done/pause", status: http.StatusConflict, wantErr: "nothing to pause"},
		{name: "refusal without code", method: http.MethodPost, path: "/api/v1/rollouts/plain/abort", status: http.StatusBadRequest, wantErr: "refused"},
		{name: "service error headers", method: http.MethodGet, path: "/api/v1/rollouts/micro", status: 422, wantErr: "unprocessable"},
		{name: "reply not json", method: http.MethodGet, path: "/api/v1/rollouts/garbage", status: http.StatusBadGateway, wantErr: "not a JSON object"},
		{name: "body not an object", method: http.MethodPost, path: "/api/v1/rollouts", body: `[1,2]`, status: http.StatusBadRequest, wantErr: "JSON object"},
		{name: "body job differs from path", method: http.MethodPost, path: "/api/v1/rollouts/job1/abort", body: `{"jobId":"job2"}`,
			status: http.StatusBadRequest, wantErr: "does not match"},
		{name: "hostile job id", method: http.MethodPost, path: "/api/v1/rollouts/a.b/pause", status: http.StatusBadRequest, wantErr: "job id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, b := h.do(t, tt.method, tt.path, tt.body, nil)
			if status != tt.status {
				t.Fatalf("status %d, want %d; body %s", status, tt.status, b)
			}
			if tt.wantErr != "" {
				if msg := errorOf(t, b); !strings.Contains(msg, tt.wantErr) {
					t.Fatalf("error %q, want it to contain %q", msg, tt.wantErr)
				}
				return
			}
			var got echoRequest
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("reply %s: %v", b, err)
			}
			// The API sends under its own connection's identity; the
			// token's user goes in the actor header.
			if want := tt.subject + "." + events.ConnIdentity(h.js.NC); got.Subject != want || got.Actor != "alice" {
				t.Errorf("request on %q by %q, want %q by alice", got.Subject, got.Actor, want)
			}
			if len(got.Body) != len(tt.wantBody) {
				t.Errorf("forwarded body %v, want %v", got.Body, tt.wantBody)
			}
			for k, v := range tt.wantBody {
				if string(got.Body[k]) != v {
					t.Errorf("forwarded %s = %s, want %s", k, got.Body[k], v)
				}
			}
		})
	}
}
