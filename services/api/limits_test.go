package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// chunked hides a reader's length, so the request goes without a
// Content-Length and only reading finds the body too large.
type chunked struct{ io.Reader }

func TestBodyLimit(t *testing.T) {
	tests := []struct {
		name    string
		limit   conf.ByteSize // 0: the default
		size    int
		chunked bool
		// decodes: a body the rollout handler accepts, not one it refuses
		// for its unknown field "x"
		decodes bool
		status  int
		says    string
	}{
		{"2 MiB over the default", 0, 2 << 20, false, false, 413, "request body of 2097152 bytes is over the limit of 1048576 bytes (http.max_body_bytes)"},
		{"2 MiB chunked over the default", 0, 2 << 20, true, false, 413, "over the limit of 1048576 bytes (http.max_body_bytes)"},
		{"at the default", 0, 1 << 20, false, false, 400, `unknown field "x"`},
		{"over a configured 1 KiB", 1 << 10, 2 << 10, false, false, 413, "over the limit of 1024 bytes"},
		{"chunked over a configured 1 KiB", 1 << 10, 2 << 10, true, false, 413, "over the limit of 1024 bytes"},
		{"2 MiB under a configured 4 MiB", 4 << 20, 2 << 20, false, false, 400, `unknown field "x"`},
		{"2 MiB chunked under a configured 4 MiB", 4 << 20, 2 << 20, true, false, 400, `unknown field "x"`},
		// Read and decoded, but more than NATS carries to the rollout
		// service: 413 too, naming that limit.
		{"a valid 2 MiB body under a configured 4 MiB", 4 << 20, 2 << 20, false, true, 413, "over the NATS server's max payload of 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startAPI(t, harnessOpts{cfg: Config{MaxBodyBytes: tt.limit, TokensFile: writeTokens(t)}})
			// Under the limit the rollout handler reads the body and
			// refuses its unknown field "x" with 400; a body that decodes
			// goes on to NATS.
			body := `{"x":"` + strings.Repeat("x", tt.size-len(`{"x":""}`)) + `"}`
			if tt.decodes {
				body = `{"spec":{"id":"` + strings.Repeat("x", tt.size-len(`{"spec":{"id":""}}`)) + `"}}`
			}
			var r io.Reader = strings.NewReader(body)
			if tt.chunked {
				r = chunked{r}
			}
			req, err := http.NewRequest(http.MethodPost, h.base+"/api/v1/rollouts", r)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+opToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("POST %d bytes: %v", tt.size, err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("POST %d bytes: status %d, want %d; body %.300s", tt.size, resp.StatusCode, tt.status, b)
			}
			if tt.says != "" && !strings.Contains(errorOf(t, b), tt.says) {
				t.Errorf("error %q does not say %q", errorOf(t, b), tt.says)
			}
		})
	}
}

func TestStreamLimit(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{MaxStreams: 2, TokensFile: writeTokens(t)}})
	refused := func(t *testing.T, path string) {
		t.Helper()
		status, b := h.do(t, http.MethodGet, path, "", nil)
		if status != http.StatusServiceUnavailable {
			t.Fatalf("GET %s with every slot taken: status %d, want 503; body %s", path, status, b)
		}
		if msg := errorOf(t, b); !strings.Contains(msg, "all 2 are in use (http.max_streams)") {
			t.Errorf("error %q does not name the limit", msg)
		}
	}
	first := h.openSSE(t, eventsPath("alert.>"), nil)
	h.openSSE(t, sseBase, nil)
	if n := h.svc.streamSlots.inUse(); n != 2 {
		t.Fatalf("%d slots in use, want 2", n)
	}
	// The third stream of two, whatever its kind.
	refused(t, eventsPath("rollout.>"))
	refused(t, sseBase)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.base, "http")+"/api/v1/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + opToken}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("WebSocket with every slot taken: err %v, response %+v; want 503 with Retry-After", err, resp)
	}
	// Requests that are not streams are not limited, and a caller without
	// a token never takes a slot.
	if status, _ := h.do(t, http.MethodGet, "/api/v1/fleet", "", nil); status != http.StatusOK {
		t.Fatalf("GET /api/v1/fleet: status %d, want 200", status)
	}
	if status, _ := h.do(t, http.MethodGet, sseBase, "", http.Header{"Authorization": {"Bearer wrong"}}); status != http.StatusUnauthorized {
		t.Fatalf("a bad token: status %d, want 401", status)
	}

	// A stream that ends gives its slot back.
	first.resp.Body.Close()
	testutil.Eventually(t, 10*time.Second, func() bool { return h.svc.streamSlots.inUse() == 1 }, "the closed stream kept its slot")
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.base, "http")+"/api/v1/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + opToken}}, Subprotocols: []string{"otawatch.v1"}})
	if err != nil {
		t.Fatalf("WebSocket after a slot freed: %v (%+v)", err, resp)
	}
	c.CloseNow()
}

// TestStreamLimitDefault holds 512 streams open on the default limit's
// limiter and checks the 513th is refused with 503 and the 512 are not.
func TestStreamLimitDefault(t *testing.T) {
	s, err := New(Config{}, svc.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.MaxStreams != 512 || DefaultMaxStreams != 512 {
		t.Fatalf("default max_streams %d, want 512", s.cfg.MaxStreams)
	}
	release := make(chan struct{})
	srv := httptest.NewServer(s.streamSlots.limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})))
	defer srv.Close()
	defer close(release)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 1}}
	var wg sync.WaitGroup
	statuses := make(chan int, DefaultMaxStreams)
	for i := 0; i < DefaultMaxStreams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(srv.URL)
			if err != nil {
				statuses <- 0
				return
			}
			statuses <- resp.StatusCode
			go func() { _, _ = io.Copy(io.Discard, resp.Body); resp.Body.Close() }()
		}()
	}
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != http.StatusOK {
			t.Fatalf("one of the first 512 streams got %d, want 200", st)
		}
	}
	if n := s.streamSlots.inUse(); n != 512 {
		t.Fatalf("%d slots in use, want 512", n)
	}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != fmt.Sprint(streamRetryAfter) {
		t.Fatalf("the 513th stream: status %d, Retry-After %q; want 503 with Retry-After %d",
			resp.StatusCode, resp.Header.Get("Retry-After"), streamRetryAfter)
	}
}

func TestConfigLimitsAndTLS(t *testing.T) {
	ca := testutil.NewTestCA(t)
	cert, key := ca.Server("api")
	tests := []struct {
		name string
		yaml string
		env  []string
		keys []string // the keys with problems
		want func(Config) bool
	}{
		{name: "defaults", yaml: "http: {}\n",
			want: func(c Config) bool { return c.MaxBodyBytes == 1<<20 && c.MaxStreams == 512 && !c.TLS.Enabled() }},
		{name: "set", yaml: "http:\n  max_body_bytes: 2MiB\n  max_streams: 64\n  tls:\n    cert_file: " + cert + "\n    key_file: " + key + "\n",
			want: func(c Config) bool { return c.MaxBodyBytes == 2<<20 && c.MaxStreams == 64 && c.TLS.Enabled() }},
		{name: "from the environment", yaml: "http: {}\n",
			env:  []string{"OTAWATCH_HTTP_MAX_BODY_BYTES=4KiB", "OTAWATCH_HTTP_MAX_STREAMS=8", "OTAWATCH_HTTP_TLS_CERT_FILE=" + cert, "OTAWATCH_HTTP_TLS_KEY_FILE=" + key},
			want: func(c Config) bool { return c.MaxBodyBytes == 4<<10 && c.MaxStreams == 8 && c.TLS.KeyFile == key }},
		{name: "negative body limit", yaml: "http:\n  max_body_bytes: -1\n", keys: []string{"http.max_body_bytes"}},
		{name: "negative stream limit", yaml: "http:\n  max_streams: -5\n", keys: []string{"http.max_streams"}},
		{name: "cert without key", yaml: "http:\n  tls:\n    cert_file: " + cert + "\n", keys: []string{"http.tls.cert_file"}},
		{name: "missing cert", yaml: "http:\n  tls:\n    cert_file: /nonexistent/cert.pem\n    key_file: " + key + "\n", keys: []string{"http.tls.cert_file"}},
		{name: "client CA without TLS", yaml: "http:\n  tls:\n    client_ca_file: " + ca.CAFile + "\n", keys: []string{"http.tls.client_ca_file"}},
		{name: "old flat key", yaml: "http:\n  tls_cert_file: " + cert + "\n", keys: []string{"http.tls_cert_file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c struct {
				HTTP Config `yaml:"http"`
			}
			err := conf.Decode("otawatch.yaml", []byte(tt.yaml), tt.env, &c)
			var got []string
			if ce, ok := err.(*conf.Error); ok {
				for _, p := range ce.Problems {
					got = append(got, p.Key)
				}
			} else if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.keys) {
				t.Fatalf("problems at %v (%v), want one each at %v", got, err, tt.keys)
			}
			if tt.want != nil && !tt.want(c.HTTP) {
				t.Fatalf("decoded %+v", c.HTTP)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	ca := testutil.NewTestCA(t)
	cert, key := ca.Server("api")
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t), TLS: conf.TLSServer{CertFile: cert, KeyFile: key}}})
	pem, err := os.ReadFile(ca.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	base := "https://" + h.svc.Addr()

	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("Authorization", "Bearer "+opToken)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	h.report(t, "sensor", "d1", "1.0", events.StatusCompleted, 10, t0)
	h.waitShadow(t, 1)
	resp, b := get("/api/v1/fleet")
	var m struct{ Devices int }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &m) != nil || m.Devices != 1 || resp.TLS == nil {
		t.Fatalf("GET /api/v1/fleet over TLS: %d %s (tls %v); want 200 with 1 device", resp.StatusCode, b, resp.TLS != nil)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2 over TLS", resp.Proto)
	}

	// The body limit holds over HTTP/2 as well.
	breq, _ := http.NewRequest(http.MethodPost, base+"/api/v1/rollouts", strings.NewReader(strings.Repeat("x", 2<<20)))
	breq.Header.Set("Authorization", "Bearer "+opToken)
	bresp, err := client.Do(breq)
	if err != nil {
		t.Fatalf("POST 2 MiB over TLS: %v", err)
	}
	bresp.Body.Close()
	if bresp.StatusCode != http.StatusRequestEntityTooLarge || bresp.ProtoMajor != 2 {
		t.Fatalf("POST 2 MiB over TLS: %s %d, want HTTP/2 413", bresp.Proto, bresp.StatusCode)
	}

	// An event stream over TLS (HTTP/2) delivers as over HTTP.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+eventsPath("shadow.reported.>")+"&since=0", nil)
	req.Header.Set("Authorization", "Bearer "+opToken)
	sresp, err := client.Do(req)
	if err != nil || sresp.StatusCode != http.StatusOK {
		t.Fatalf("SSE over TLS: %v %v", err, sresp)
	}
	defer sresp.Body.Close()
	buf := make([]byte, 4096)
	var got bytes.Buffer
	for !strings.Contains(got.String(), "id: 1\n") {
		n, err := sresp.Body.Read(buf)
		if err != nil {
			t.Fatalf("SSE over TLS: read %q then %v", got.String(), err)
		}
		got.Write(buf[:n])
	}

	// Plain HTTP on the TLS port is refused; a client that does not trust
	// the CA fails the handshake.
	presp, err := http.Get("http://" + h.svc.Addr() + "/healthz")
	if err == nil {
		presp.Body.Close()
		if presp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP on the TLS port: status %d, want 400", presp.StatusCode)
		}
	}
	if _, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/healthz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client without the CA: %v, want a certificate error", err)
	}
}

func TestTLSBadFilesFailRun(t *testing.T) {
	// New refuses it (it validates the section); Run checks again.
	s, err := New(Config{Listen: "127.0.0.1:0", TLS: conf.TLSServer{CertFile: "/nonexistent/cert.pem", KeyFile: "/nonexistent/key.pem"}}, svc.Deps{})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = s.Run(ctx)
	}
	if err == nil || !strings.Contains(err.Error(), "http.tls") || !strings.Contains(err.Error(), "/nonexistent/cert.pem") {
		t.Fatalf("Run with missing TLS files: %v, want an error naming http.tls and the file", err)
	}
}
