package httpsend

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestPostClassifies(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		wantErr    bool
		retry      bool
		retryAfter time.Duration
	}{
		{name: "202 delivered", status: 202, body: `{"status":"success"}`},
		{name: "200 delivered", status: 200, body: "ok"},
		{name: "400 not retried", status: 400, body: "invalid_payload", wantErr: true},
		{name: "403 not retried", status: 403, body: "action_prohibited", wantErr: true},
		{name: "404 not retried", status: 404, wantErr: true},
		{name: "301 not followed nor retried", status: 301, header: map[string]string{"Location": "/elsewhere"}, wantErr: true},
		{name: "429 with seconds", status: 429, header: map[string]string{"Retry-After": "2"}, wantErr: true, retry: true, retryAfter: 2 * time.Second},
		{name: "429 without Retry-After", status: 429, wantErr: true, retry: true},
		{name: "429 with a date", status: 429, header: map[string]string{
			"Date": "Mon, 30 Nov 2026 12:00:00 GMT", "Retry-After": "Mon, 30 Nov 2026 12:00:30 GMT",
		}, wantErr: true, retry: true, retryAfter: 30 * time.Second},
		{name: "429 with more than the cap", status: 429, header: map[string]string{"Retry-After": "99999999999999"}, wantErr: true, retry: true, retryAfter: MaxRetryAfter},
		{name: "500 retried", status: 500, body: "rollup_error", wantErr: true, retry: true},
		{name: "503 with Retry-After", status: 503, header: map[string]string{"Retry-After": "7"}, wantErr: true, retry: true, retryAfter: 7 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					t.Errorf("redirect followed")
				}
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			res, err := Post(context.Background(), NewClient(), time.Minute, Request{URL: srv.URL + "/hook", Body: []byte("{}")})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if res.Status != tt.status || res.Retry != tt.retry || res.RetryAfter != tt.retryAfter || res.Answer != tt.body {
				t.Errorf("result = %+v, want status %d retry %v after %s answer %q", res, tt.status, tt.retry, tt.retryAfter, tt.body)
			}
		})
	}
}

func TestPostTransportErrors(t *testing.T) {
	const secret = "T000/B000/XXXXSECRET"
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-block:
		}
	}))
	defer slow.Close()
	defer close(block)
	untrusted := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	untrusted.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	untrusted.StartTLS()
	defer untrusted.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()

	tests := []struct {
		name    string
		url     string
		timeout time.Duration
		retry   bool
		is      error
	}{
		{name: "timeout retried", url: slow.URL, timeout: 200 * time.Millisecond, retry: true, is: context.DeadlineExceeded},
		{name: "connection refused retried", url: closed, timeout: time.Minute, retry: true},
		{name: "untrusted certificate not retried", url: untrusted.URL, timeout: time.Minute, retry: false},
		{name: "bad scheme not retried", url: "ftp://example.com", timeout: time.Minute, retry: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Post(context.Background(), NewClient(), tt.timeout, Request{URL: tt.url + "/services/" + secret})
			if err == nil {
				t.Fatal("no error")
			}
			if res.Retry != tt.retry {
				t.Errorf("retry = %v, want %v (err %v)", res.Retry, tt.retry, err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want it to be %v", err, tt.is)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows the URL's secret path: %v", err)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, value, date string
		want              time.Duration
	}{
		{name: "absent", want: 0},
		{name: "seconds", value: "2", want: 2 * time.Second},
		{name: "zero", value: "0", want: 0},
		{name: "negative", value: "-5", want: 0},
		{name: "garbage", value: "soon", want: 0},
		{name: "date against now", value: "Mon, 30 Nov 2026 12:01:00 GMT", want: time.Minute},
		{name: "date against the answer's Date", value: "Mon, 30 Nov 2026 13:00:10 GMT", date: "Mon, 30 Nov 2026 13:00:00 GMT", want: 10 * time.Second},
		{name: "date in the past", value: "Mon, 30 Nov 2026 11:00:00 GMT", want: 0},
		{name: "capped", value: "86400", want: MaxRetryAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.value != "" {
				h.Set("Retry-After", tt.value)
			}
			if tt.date != "" {
				h.Set("Date", tt.date)
			}
			if got := RetryAfter(h, now); got != tt.want {
				t.Errorf("RetryAfter(%q) = %s, want %s", tt.value, got, tt.want)
			}
		})
	}
}

func TestTrim(t *testing.T) {
	long := strings.Repeat("é", MaxAnswer) // 2 bytes a rune
	got := Trim(long)
	if len(got) > MaxAnswer+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("Trim kept %d bytes", len(got))
	}
	if strings.ContainsRune(strings.TrimSuffix(got, "…"), '\uFFFD') || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Errorf("Trim cut a rune")
	}
}

func TestEndpointHidesPath(t *testing.T) {
	if got := Endpoint("https://hooks.slack.com/services/T0/B0/secret?x=1"); got != "https://hooks.slack.com" {
		t.Errorf("Endpoint = %q", got)
	}
}
