package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestFoldRejectsWhatItCannotApply: a SHADOW message that is not an
// envelope and an event whose data the fleet fold refuses each end on
// REJECTED (rejected.api) with the stream, sequence and reason, /metrics
// counts them, and the next event is applied.
func TestFoldRejectsWhatItCannotApply(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	ctx := context.Background()
	if _, err := h.js.JS.Publish(ctx, events.ShadowReportedSubject("sensor", "junk"), []byte("not an envelope")); err != nil {
		t.Fatal(err)
	}
	bad, err := events.New("bad-data", events.SourceBridge, events.TypeShadowReported, "d-bad", t0, "a string, not report data")
	if err != nil {
		t.Fatal(err)
	}
	h.publish(t, events.ShadowReportedSubject("sensor", "d-bad"), bad)
	h.waitShadow(t, h.report(t, "sensor", "d-after", "2.0", events.StatusCompleted, 10, t0))

	var dev map[string]any
	h.getJSON(t, "/api/v1/devices/sensor/d-after", http.StatusOK, &dev)
	testutil.Eventually(t, 10*time.Second, func() bool { return h.js.Count(t, events.StreamRejected) == 2 },
		"REJECTED holds %d records, want 2", h.js.Count(t, events.StreamRejected))
	want := map[uint64]string{1: "decode event", 2: "decode"}
	for _, m := range h.js.Events(t, events.StreamRejected) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		var d events.RejectedData
		if err := ev.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		if m.Subject != events.RejectedSubject(RejectedSource) || d.Source != RejectedSource || d.Stream != events.StreamShadow || ev.Source != events.SourceAPI {
			t.Errorf("record on %s: source %q stream %q event source %q, want rejected.api, api, SHADOW, %s",
				m.Subject, d.Source, d.Stream, ev.Source, events.SourceAPI)
		}
		w, ok := want[d.StreamSeq]
		if !ok || !strings.Contains(d.Reason, w) {
			t.Errorf("record of SHADOW seq %d: reason %q, want one with %q", d.StreamSeq, d.Reason, w)
		}
		delete(want, d.StreamSeq)
	}
	_, body := h.do(t, http.MethodGet, "/metrics", "", nil)
	if line := `otawatch_api_events_rejected_total{stream="SHADOW"} 2`; !strings.Contains(string(body), line) {
		t.Errorf("/metrics lacks %q", line)
	}
}

// TestNewRefusesBadConfig: New validates the section and lists every
// problem, keyed as in the file, in one *conf.Error.
func TestNewRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // keys
	}{
		{"defaults", Config{}, nil},
		{"every problem at once", Config{Listen: "nope", ReadTimeout: -time.Second, MaxStreams: -1, MaxBodyBytes: -1},
			[]string{"http.listen", "http.read_timeout", "http.max_body_bytes", "http.max_streams"}},
		{"public without tokens", Config{Listen: "0.0.0.0:8080"}, []string{"http.tokens_file"}},
		{"half a TLS pair", Config{TLS: conf.TLSServer{CertFile: "/nonexistent/cert.pem"}}, []string{"http.tls.cert_file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, svc.Deps{})
			var ce *conf.Error
			if tt.want == nil {
				if err != nil {
					t.Fatalf("New: %v, want nil", err)
				}
				return
			}
			if !errors.As(err, &ce) {
				t.Fatalf("New: %v (%T), want a *conf.Error", err, err)
			}
			var got []string
			for _, p := range ce.Problems {
				got = append(got, p.Key)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("problems %v, want keys %v", ce.Problems, tt.want)
			}
		})
	}
}
