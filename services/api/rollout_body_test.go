package api

import (
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
)

// TestRolloutBodyStrict: a rollout body with a field the command does not
// know or use, an "actor", or data after the object is a 400 naming it,
// and never reaches the rollout service; a refusal the service makes of a
// body (code invalid) is a 400 too.
func TestRolloutBodyStrict(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}})
	var received atomic.Int32
	sub, err := h.js.NC.Subscribe(events.RolloutCommandPrefix+".*.*", func(m *nats.Msg) {
		received.Add(1)
		_ = m.Respond([]byte(`{"error":"create request: unknown field \"spec.later\"","code":"invalid"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.js.NC.Flush(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path, body string
		wantErr          string
	}{
		{"unknown field", "/api/v1/rollouts", `{"spec":{"id":"j1"},"force":true}`,
			`create request: unknown field "force"`},
		{"unknown spec field", "/api/v1/rollouts", `{"spec":{"id":"j1","wavez":3}}`,
			`create request: unknown field "spec.wavez"`},
		{"unknown target field", "/api/v1/rollouts", `{"spec":{"target":{"version":"2","sha":"x"}}}`,
			`create request: unknown field "spec.target.sha"`},
		{"a field in another case", "/api/v1/rollouts/job1/abort", `{"Reason":"x"}`,
			`abort request: unknown field "Reason"`},
		{"actor on create", "/api/v1/rollouts", `{"spec":{"id":"j1"},"actor":"root"}`,
			`create request: "actor" is taken from the caller's identity, not the body`},
		{"actor on pause", "/api/v1/rollouts/job1/pause", `{"actor":"root"}`,
			`pause request: "actor" is taken from the caller's identity, not the body`},
		{"field the command does not use", "/api/v1/rollouts/job1/start", `{"spec":{"id":"j1"}}`,
			`start request: field "spec" is not used by start (it takes jobId)`},
		{"reason on resume", "/api/v1/rollouts/job1/resume", `{"reason":"x"}`,
			`resume request: field "reason" is not used by resume (it takes jobId)`},
		{"trailing data", "/api/v1/rollouts/job1/abort", `{"reason":"x"} {"reason":"y"}`,
			`abort request: data after the JSON object at byte 14`},
		{"wrong type", "/api/v1/rollouts", `{"spec":{"waves":"3"}}`,
			`create request: field "spec.waves" is a JSON string, want int`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := received.Load()
			status, b := h.do(t, http.MethodPost, tt.path, tt.body, nil)
			if status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400; body %s", status, b)
			}
			if got := errorOf(t, b); got != tt.wantErr {
				t.Errorf("error\n got: %s\nwant: %s", got, tt.wantErr)
			}
			if n := received.Load() - before; n != 0 {
				t.Errorf("the rollout service received %d request(s), want none", n)
			}
		})
	}

	t.Run("the service's refusal of a body", func(t *testing.T) {
		status, b := h.do(t, http.MethodPost, "/api/v1/rollouts", `{"spec":{"id":"j1"}}`, nil)
		if status != http.StatusBadRequest || errorOf(t, b) != `create request: unknown field "spec.later"` {
			t.Errorf("status %d body %s, want 400 naming spec.later", status, b)
		}
		if received.Load() != 1 {
			t.Errorf("the rollout service received %d requests, want 1", received.Load())
		}
	})
}
