package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/otawatch/otawatch/services/internal/ops"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// syncBuffer is a log sink the server's goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAccessLogNamesTheTokenNotTheSecret: every request is logged with
// the name of the token that authenticated it, and neither a bearer token
// nor an access_token in the query reaches the log. The api's /metrics is
// the process's registry: what another part of the process registers there
// is on it.
func TestAccessLogNamesTheTokenNotTheSecret(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	var logBuf syncBuffer
	log := slog.New(slog.NewJSONHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := ops.NewRegistry()
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "otawatch_test_other_service_total", Help: "test"})
	other.Add(7)
	reg.MustRegister(other)
	s, err := New(Config{Listen: "127.0.0.1:0", TokensFile: writeTokens(t)},
		svc.Deps{Log: log, NC: js.NC, JS: js.JS, Health: svc.NewHealth(), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	testutil.Eventually(t, 10*time.Second, func() bool { return s.Addr() != "" }, "the service did not listen")
	base := "http://" + s.Addr()

	get := func(path, bearer string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/api/v1/fleet", opToken); code != http.StatusOK {
		t.Fatalf("fleet with the operator token: %d", code)
	}
	if code, _ := get("/api/v1/fleet?access_token="+roToken, ""); code != http.StatusOK {
		t.Fatalf("fleet with the read-only token in the query: %d", code)
	}
	if code, _ := get("/api/v1/fleet", "wrong-token-0123456789abcdef"); code != http.StatusUnauthorized {
		t.Fatalf("fleet with a wrong token: %d", code)
	}
	code, metrics := get("/metrics", "")
	if code != http.StatusOK || !strings.Contains(metrics, "otawatch_test_other_service_total 7") ||
		!strings.Contains(metrics, "otawatch_http_requests_total") || !strings.Contains(metrics, "go_goroutines") {
		t.Errorf("/metrics (%d) is not the process's registry with the api's metrics:\n%.2000s", code, metrics)
	}

	type line struct {
		Msg, Method, Path, Caller string
		Status                    int
		Bytes                     int64
	}
	var got []line
	testutil.Eventually(t, 5*time.Second, func() bool {
		got = got[:0]
		for _, l := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
			var ln line
			if json.Unmarshal([]byte(l), &ln) == nil && ln.Msg == "http request" {
				got = append(got, ln)
			}
		}
		return len(got) >= 3
	}, "fewer than 3 access log lines:\n%s", &logBuf)
	want := []struct {
		caller string
		status int
	}{{"alice", 200}, {"grafana", 200}, {"", 401}}
	for i, w := range want {
		g := got[i]
		if g.Method != "GET" || g.Path != "/api/v1/fleet" || g.Caller != w.caller || g.Status != w.status || g.Bytes == 0 {
			t.Errorf("line %d: %+v, want GET /api/v1/fleet caller %q status %d with bytes", i, g, w.caller, w.status)
		}
	}
	for _, secret := range []string{opToken, roToken, "wrong-token-0123456789abcdef"} {
		if strings.Contains(logBuf.String(), secret) {
			t.Errorf("the log holds a token:\n%s", logBuf.String())
		}
	}
}
