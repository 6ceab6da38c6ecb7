package api

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// eventsPath is GET /api/v1/events with the filters.
func eventsPath(subjects ...string) string {
	return "/api/v1/events?" + url.Values{"subject": subjects}.Encode()
}

func TestFleetEventsStreamAndResume(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}})
	old := h.report(t, "sensor", "d0", "1.0", events.StatusCompleted, 10, t0)

	// Without a start: new events only, of the filter only.
	c := h.openSSE(t, eventsPath("shadow.reported.sensor.>"), nil)
	c.none(t, 200*time.Millisecond)
	s1 := h.report(t, "sensor", "d1", "1.0", events.StatusInProgress, 0, t0)
	h.report(t, "gateway", "g1", "1.0", events.StatusInProgress, 0, t0)      // another type
	h.desire(t, "sensor", "d1", "job1", 1, "2.0", t0.Add(time.Minute))       // another kind
	time.Sleep(500 * time.Millisecond)                                       // past the server's timeouts
	s2 := h.report(t, "sensor", "d2", "1.0", events.StatusCompleted, 10, t0) // another device of the type
	for _, want := range []uint64{s1, s2} {
		seq, e := decodeSSE(t, c.next(t))
		if seq != want || e.Type != events.TypeShadowReported {
			t.Fatalf("got seq %d (%s), want %d", seq, e.Type, want)
		}
	}
	c.none(t, 200*time.Millisecond)
	c.resp.Body.Close()

	// A reconnecting subscriber resumes right after its Last-Event-ID.
	s3 := h.report(t, "sensor", "d3", "1.0", events.StatusFailed, 10, t0)
	r := h.openSSE(t, eventsPath("shadow.reported.sensor.>"), http.Header{"Last-Event-Id": {strconv.FormatUint(s2, 10)}})
	if seq, _ := decodeSSE(t, r.next(t)); seq != s3 {
		t.Fatalf("resumed at %d, want %d (the first after %d)", seq, s3, s2)
	}
	r.none(t, 200*time.Millisecond)

	// ?since=0 is the whole history of the filter.
	a := h.openSSE(t, eventsPath("shadow.reported.sensor.>")+"&since=0", nil)
	for _, want := range []uint64{old, s1, s2, s3} {
		if seq, _ := decodeSSE(t, a.next(t)); seq != want {
			t.Fatalf("since=0: seq %d, want %d", seq, want)
		}
	}

	// Two filters of one stream; ids are SHADOW sequences.
	m := h.openSSE(t, eventsPath("shadow.desired.>", "device.presence.sensor.*"), nil)
	d := h.desire(t, "sensor", "d4", "job2", 1, "2.0", t0)
	p := h.presence(t, "sensor", "d4", events.PresencePotentiallyOffline, t0, t0.Add(11*time.Minute))
	h.report(t, "sensor", "d4", "2.0", events.StatusCompleted, 10, t0)
	for _, want := range []uint64{d, p} {
		if seq, _ := decodeSSE(t, m.next(t)); seq != want {
			t.Fatalf("two filters: seq %d, want %d", seq, want)
		}
	}
	m.none(t, 200*time.Millisecond)
}

func TestFleetEventsOtherStreams(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	ro := h.openSSE(t, eventsPath("rollout.job7.>"), nil)
	al := h.openSSE(t, eventsPath("alert.raised.>"), nil)
	publish := func(subject, typ string) uint64 {
		e, err := events.New(events.IdentityID("t", subject), "test", typ, "x", t0, map[string]string{"k": "v"})
		if err != nil {
			t.Fatal(err)
		}
		return h.publish(t, subject, e)
	}
	publish(events.RolloutSubject("job6", "job_paused"), events.TypeRolloutJobPaused)
	r := publish(events.RolloutSubject("job7", "job_paused"), events.TypeRolloutJobPaused)
	publish(events.AlertSubject("resolved", "critical", "device-failed"), events.TypeAlertResolved)
	a := publish(events.AlertSubject("raised", "critical", "device-failed"), events.TypeAlertRaised)
	if seq, e := decodeSSE(t, ro.next(t)); seq != r || e.Type != events.TypeRolloutJobPaused {
		t.Fatalf("rollout stream: seq %d (%s), want %d", seq, e.Type, r)
	}
	if seq, e := decodeSSE(t, al.next(t)); seq != a || e.Type != events.TypeAlertRaised {
		t.Fatalf("alert stream: seq %d (%s), want %d", seq, e.Type, a)
	}
	ro.none(t, 100*time.Millisecond)
	al.none(t, 100*time.Millisecond)
}

func TestFleetEventsRefusals(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}})
	tests := []struct {
		name     string
		subjects []string
		extra    string
		status   int
		names    string
	}{
		{"no subject", nil, "", 400, "?subject= is required"},
		{"JetStream API", []string{"$JS.API.>"}, "", 400, "token 1"},
		{"inboxes", []string{"_INBOX.>"}, "", 400, "outside the subjects served"},
		{"internal", []string{"otawatch.>"}, "", 400, "outside the subjects served"},
		{"KV", []string{"$KV.lease.>"}, "", 400, "token 1"},
		{"everything", []string{">"}, "", 400, "starts with a wildcard"},
		{"every root", []string{"*.>"}, "", 400, "starts with a wildcard"},
		{"a wildcard root", []string{"*.presence.>"}, "", 400, "starts with a wildcard"},
		{"notify", []string{"notify.>"}, "", 400, "outside the subjects served"},
		{"rejected", []string{"rejected.>"}, "", 400, "outside the subjects served"},
		{"root without tokens", []string{"rollout"}, "", 400, "outside the subjects served"},
		{"short of the root", []string{"shadow.reported"}, "", 400, "outside the subjects served"},
		{"gt not last", []string{"shadow.>.d1"}, "", 400, "only be the last token"},
		{"empty token", []string{"shadow..x.>"}, "", 400, "token 2"},
		{"space", []string{"shadow.reported.a b.>"}, "", 400, "has a space"},
		{"two streams", []string{"shadow.reported.>", "rollout.>"}, "", 400, "streams SHADOW and ROLLOUT"},
		{"overlap", []string{"shadow.reported.>", "shadow.*.sensor.>"}, "", 400, "overlap"},
		{"same twice", []string{"alert.>", "alert.>"}, "", 400, "overlap"},
		{"too many", []string{"alert.a.>", "alert.b.>", "alert.c.>", "alert.d.>", "alert.e.>", "alert.f.>", "alert.g.>", "alert.h.>", "alert.i.>", "alert.j.>", "alert.k.>", "alert.l.>", "alert.m.>", "alert.n.>", "alert.o.>", "alert.p.>", "alert.q.>"}, "", 400, "at most 16"},
		{"bad Last-Event-ID", []string{"alert.>"}, "&lastEventId=x", 400, "Last-Event-ID"},
		{"bad since", []string{"alert.>"}, "&since=soon", 400, "since"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := eventsPath(tt.subjects...) + tt.extra
			status, b := h.do(t, http.MethodGet, path, "", nil)
			if status != tt.status {
				t.Fatalf("GET %s: status %d, want %d; body %s", path, status, tt.status, b)
			}
			if msg := errorOf(t, b); !strings.Contains(msg, tt.names) {
				t.Errorf("GET %s: error %q does not say %q", path, msg, tt.names)
			}
		})
	}
	t.Run("no token", func(t *testing.T) {
		status, _ := h.do(t, http.MethodGet, eventsPath("alert.>"), "", http.Header{"Authorization": {"Bearer wrong"}})
		if status != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", status)
		}
	})
	t.Run("read-only token streams", func(t *testing.T) {
		h.token = roToken
		defer func() { h.token = opToken }()
		h.openSSE(t, eventsPath("shadow.*.sensor.>"), nil)
	})
}

func TestEventStreamOf(t *testing.T) {
	tests := []struct {
		subject, stream string
	}{
		{"shadow.reported.>", events.StreamShadow},
		{"shadow.>", events.StreamShadow},
		{"shadow.*.sensor.d1", events.StreamShadow},
		{"device.presence.>", events.StreamShadow},
		{"device.>", events.StreamShadow},
		{"device.*.sensor.*", events.StreamShadow},
		{"rollout.>", events.StreamRollout},
		{"rollout.job1.wave_started", events.StreamRollout},
		{"alert.raised.critical.device-failed", events.StreamAlerts},
		{"alert.*.*.stale-shadow", events.StreamAlerts},
		{"shadow.desired", ""},
		{"device.online.>", ""},
		{"*.presence.>", ""}, // a wildcard root: rollout.presence.> too
		{"*.*.sensor.d1", ""},
		{">", ""},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			got, err := eventStreamOf(tt.subject)
			if tt.stream == "" {
				if err == nil {
					t.Fatalf("accepted for %s, want refused", got)
				}
				return
			}
			if err != nil || got != tt.stream {
				t.Fatalf("got %q, %v; want %s", got, err, tt.stream)
			}
		})
	}
}

func TestFiltersOverlap(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"a.b", "a.b", true},
		{"a.>", "a.b.c", true},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.b", "a.c", false},
		{"shadow.reported.>", "shadow.desired.>", false},
		{"shadow.*.x.>", "shadow.reported.y.>", false},
		{"shadow.*.x.>", "shadow.reported.*.d", true},
	}
	for _, tt := range tests {
		if got := filtersOverlap(tt.a, tt.b); got != tt.want {
			t.Errorf("filtersOverlap(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := filtersOverlap(tt.b, tt.a); got != tt.want {
			t.Errorf("filtersOverlap(%q, %q) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}

// FuzzEventStreamOf: whatever a client sends, an accepted filter reads one
// of the served streams, and its first token is a served root: no
// "$JS", "$KV", "_INBOX" or "otawatch" filter gets through.
func FuzzEventStreamOf(f *testing.F) {
	for _, s := range []string{"shadow.>", "device.presence.*.*", "rollout.j.>", "alert.>", ">", "$JS.API.>", "_INBOX.x", "otawatch.>", "a..b", "*.>"} {
		f.Add(s)
	}
	served := map[string]bool{events.StreamShadow: true, events.StreamRollout: true, events.StreamAlerts: true}
	roots := map[string]bool{"shadow": true, "device": true, "rollout": true, "alert": true}
	f.Fuzz(func(t *testing.T, subject string) {
		stream, err := eventStreamOf(subject)
		if err != nil {
			return
		}
		if !served[stream] {
			t.Fatalf("%q accepted for stream %q", subject, stream)
		}
		first, _, _ := strings.Cut(subject, ".")
		if !roots[first] {
			t.Fatalf("%q accepted with first token %q", subject, first)
		}
		for _, tok := range strings.Split(subject, ".") {
			if tok == "" {
				t.Fatalf("%q accepted with an empty token", subject)
			}
		}
	})
}
