package alerting

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// limitStreams applies byte limits to the existing streams, as a restart
// with a changed configuration does.
func (h *harness) limitStreams(limits map[string]int64) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, h.js.JS, events.StreamOptions{Replicas: 1, StreamMaxBytes: limits}); err != nil {
		h.t.Fatalf("ensure streams: %v", err)
	}
}

// fillNotify publishes 500-byte NOTIFY messages until the stream refuses
// one: it is then at its limit.
func (h *harness) fillNotify() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; ; i++ {
		_, err := h.js.JS.Publish(ctx, events.NotifySubject("slack", "sent"), bytes.Repeat([]byte("n"), 500),
			jetstream.WithMsgID(fmt.Sprintf("fill-%d", i)))
		if err != nil {
			if !strings.Contains(err.Error(), "maximum bytes exceeded") {
				h.t.Fatalf("fill NOTIFY: %v", err)
			}
			return
		}
		if i > 10_000 {
			h.t.Fatal("NOTIFY never filled")
		}
	}
}

func withHealth(health *svc.Health) func(*Service) {
	return func(s *Service) { s.deps.Health = health }
}

func streamsHealth(health *svc.Health) string {
	for _, st := range health.Status() {
		if st.Name == StreamFullHealth && st.Err != nil {
			return st.Err.Error()
		}
	}
	return ""
}

// TestStreamFullAlert: an audit stream at its byte limit raises the
// critical stream-full alert on the next tick and makes /readyz say why;
// a restart neither raises it again nor forgets it; once the limit is
// raised the next tick resolves it.
func TestStreamFullAlert(t *testing.T) {
	h := newHarness(t)
	const limit = 16 << 10
	h.limitStreams(map[string]int64{events.StreamNotify: limit})
	health := svc.NewHealth()
	r := h.startWith(Config{}, withHealth(health))

	r.tick(t, at(0))
	if got := h.alerts(StreamFullRule); len(got) != 0 {
		t.Fatalf("stream-full alerts with every stream nearly empty: %s", describe(got))
	}
	if why := streamsHealth(health); why != "" {
		t.Fatalf("streams not ready with every stream nearly empty: %s", why)
	}

	h.fillNotify()
	r.tick(t, at(time.Minute))
	got := h.waitAlerts(StreamFullRule, 1)
	a := got[0]
	if a.State != events.AlertRaised || a.Severity != "critical" || a.Key != "stream-full/NOTIFY" ||
		a.Labels["stream"] != events.StreamNotify || !a.StartsAt.Equal(at(time.Minute)) ||
		a.Subject != "alert.raised.critical.stream-full" || a.Value == nil || *a.Value < StreamFullRatio {
		t.Errorf("raised %s %+v, want critical stream-full/NOTIFY at 1m", a.Subject, a.AlertData)
	}
	if why := streamsHealth(health); !strings.HasPrefix(why, "NOTIFY stream is ") || !strings.Contains(why, "% full (") ||
		!strings.Contains(why, fmt.Sprintf("max_bytes %d", limit)) {
		t.Errorf("streams health %q, want NOTIFY's share of its limit %d", why, limit)
	}
	if !strings.Contains(h.log.String(), "stream full: alert raised") {
		t.Errorf("the raise was not logged")
	}

	// A restart reads the raised alert back: no second raise.
	r.stop(t)
	r = h.startWith(Config{}, withHealth(health))
	r.tick(t, at(2*time.Minute))
	if got := h.alerts(StreamFullRule); len(got) != 1 {
		t.Fatalf("after a restart with NOTIFY still full: %s, want the one raise", describe(got))
	}

	h.limitStreams(map[string]int64{events.StreamNotify: 100 * limit})
	r.tick(t, at(3*time.Minute))
	got = h.waitAlerts(StreamFullRule, 2)
	res := got[1]
	if res.State != events.AlertResolved || res.Key != a.Key || !res.StartsAt.Equal(a.StartsAt) ||
		res.EndsAt == nil || !res.EndsAt.Equal(at(3*time.Minute)) || res.Reason != events.ResolvedCleared {
		t.Errorf("resolved %+v, want stream-full/NOTIFY from 1m cleared at 3m", res.AlertData)
	}
	if why := streamsHealth(health); why != "" {
		t.Errorf("streams still not ready after the limit was raised: %s", why)
	}
	// No rule engine resolution of an alert it does not run.
	r.stop(t)
	r = h.startWith(Config{}, withHealth(health))
	r.tick(t, at(4*time.Minute))
	if got := h.alerts(StreamFullRule); len(got) != 2 {
		t.Errorf("after the resolve and a restart: %s, want raise and resolve only", describe(got))
	}
}
