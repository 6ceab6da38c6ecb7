package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

const sseBase = "/api/v0002/device/types/sensor/devices/d1/events/shadow"

// decodeSSE checks an event's data is the envelope stored at its id.
func decodeSSE(t *testing.T, ev sseEvent) (uint64, events.Event) {
	t.Helper()
	seq, err := strconv.ParseUint(ev.ID, 10, 64)
	if err != nil {
		t.Fatalf("event id %q is not a stream sequence", ev.ID)
	}
	e, err := events.Decode([]byte(ev.Data))
	if err != nil {
		t.Fatalf("event data %q: %v", ev.Data, err)
	}
	return seq, e
}

func TestShadowEventsStreamAndResume(t *testing.T) {
	// Short server timeouts: the stream must outlive them.
	h := startAPI(t, harnessOpts{cfg: Config{ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}})
	s1 := h.report(t, "sensor", "d1", "1.0", events.StatusCompleted, 10, t0)
	h.report(t, "sensor", "d2", "1.0", events.StatusCompleted, 10, t0) // another device: never on d1's stream
	s2 := h.desire(t, "sensor", "d1", "job1", 1, "2.0", t0.Add(time.Minute))
	h.report(t, "other", "d1", "1.0", events.StatusCompleted, 10, t0) // same device id, other type

	c := h.openSSE(t, sseBase+"?since=0", nil)
	for _, want := range []struct {
		seq uint64
		typ string
	}{{s1, events.TypeShadowReported}, {s2, events.TypeShadowDesired}} {
		seq, e := decodeSSE(t, c.next(t))
		if seq != want.seq || e.Type != want.typ {
			t.Fatalf("got seq %d type %s, want seq %d type %s", seq, e.Type, want.seq, want.typ)
		}
	}
	// Live: past the server's read and write timeouts.
	time.Sleep(500 * time.Millisecond)
	s3 := h.report(t, "sensor", "d1", "2.0", events.StatusInProgress, 0, t0.Add(2*time.Minute))
	s4 := h.presence(t, "sensor", "d1", events.PresencePotentiallyOffline, t0.Add(2*time.Minute), t0.Add(13*time.Minute))
	for _, want := range []uint64{s3, s4} {
		if seq, _ := decodeSSE(t, c.next(t)); seq != want {
			t.Fatalf("live event seq %d, want %d", seq, want)
		}
	}
	c.resp.Body.Close()

	// A reconnecting client resumes right after its Last-Event-ID.
	r := h.openSSE(t, sseBase, http.Header{"Last-Event-Id": {strconv.FormatUint(s3, 10)}})
	if seq, e := decodeSSE(t, r.next(t)); seq != s4 || e.Type != events.TypeDevicePresence {
		t.Fatalf("resumed at seq %d (%s), want %d", seq, e.Type, s4)
	}
	r.none(t, 200*time.Millisecond)
	s5 := h.report(t, "sensor", "d1", "2.0", events.StatusCompleted, 60, t0.Add(3*time.Minute))
	if seq, _ := decodeSSE(t, r.next(t)); seq != s5 {
		t.Fatalf("after resume: seq %d, want %d", seq, s5)
	}

	// Without a start: the latest event of each kind, then live.
	l := h.openSSE(t, sseBase, nil)
	got := map[uint64]bool{}
	for i := 0; i < 3; i++ {
		seq, _ := decodeSSE(t, l.next(t))
		got[seq] = true
	}
	if want := map[uint64]bool{s2: true, s4: true, s5: true}; len(got) != 3 || !got[s2] || !got[s4] || !got[s5] {
		t.Fatalf("latest per kind: got seqs %v, want %v", got, want)
	}
	l.none(t, 200*time.Millisecond)

	// ?since=TIME starts at the first event stored at or after it.
	ts := h.openSSE(t, sseBase+"?since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339), nil)
	ts.none(t, 200*time.Millisecond)
	s6 := h.report(t, "sensor", "d1", "2.1", events.StatusInProgress, 0, t0.Add(4*time.Minute))
	if seq, _ := decodeSSE(t, ts.next(t)); seq != s6 {
		t.Fatalf("since a future time: seq %d, want %d", seq, s6)
	}
}

func TestShadowEventsHeartbeat(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{SSEHeartbeat: 50 * time.Millisecond}})
	c := h.openSSE(t, sseBase, nil)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case line := <-c.comments:
			if line == ": heartbeat" {
				return
			}
		case <-deadline:
			t.Fatal("no heartbeat comment on an idle stream")
		}
	}
}

func TestHostileIDsAre400(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	long := strings.Repeat("x", events.MaxIDLen+1)
	tests := []struct {
		name, typeID, deviceID, names string
	}{
		{"dot in device", "sensor", "a.b", "device id"},
		{"star device", "sensor", "*", "device id"},
		{"gt device", "sensor", "%3E", "device id"},
		{"space in type", "sen%20sor", "d1", "type id"},
		{"slash in device", "sensor", "a%2Fb", "device id"},
		{"too long type", long, "d1", "type id"},
		{"unicode device", "sensor", "d%C3%A9", "device id"},
		{"wildcard in both", "*", "*", "type id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{
				"/api/v0002/device/types/" + tt.typeID + "/devices/" + tt.deviceID + "/events/shadow",
				"/api/v0002/device/types/" + tt.typeID + "/devices/" + tt.deviceID + "/shadow/delta",
				"/api/v1/devices/" + tt.typeID + "/" + tt.deviceID,
			} {
				status, b := h.do(t, http.MethodGet, path, "", nil)
				if status != http.StatusBadRequest {
					t.Fatalf("GET %s: status %d, want 400; body %s", path, status, b)
				}
				if msg := errorOf(t, b); !strings.Contains(msg, tt.names) {
					t.Errorf("GET %s: error %q does not name the %s", path, msg, tt.names)
				}
			}
		})
	}
	for _, q := range []string{"?since=yesterday", "?since=-1"} {
		status, b := h.do(t, http.MethodGet, sseBase+q, "", nil)
		if status != http.StatusBadRequest || !strings.Contains(errorOf(t, b), "since") {
			t.Errorf("GET %s: status %d body %s, want 400 about since", q, status, b)
		}
	}
	status, b := h.do(t, http.MethodGet, sseBase, "", http.Header{"Last-Event-Id": {"abc"}})
	if status != http.StatusBadRequest || !strings.Contains(errorOf(t, b), "Last-Event-ID") {
		t.Errorf("bad Last-Event-ID: status %d body %s, want 400 about it", status, b)
	}
}

func TestShadowDelta(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	min := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	path := func(dev string) string { return "/api/v0002/device/types/sensor/devices/" + dev + "/shadow/delta" }
	target := func(v string) *events.DeltaFirmware {
		return &events.DeltaFirmware{Version: v, Checksum: "sha256:" + v, URL: "https://fw.example/" + v, JobID: "job1"}
	}

	// d-none: reported, never targeted.
	h.report(t, "sensor", "d-none", "1.0", events.StatusCompleted, 10, min(0))
	// d-behind: targeted 2.0, still on 1.0.
	h.report(t, "sensor", "d-behind", "1.0", events.StatusCompleted, 10, min(0))
	h.desire(t, "sensor", "d-behind", "job1", 1, "2.0", min(1))
	// d-installing: reports 2.0 in progress.
	h.desire(t, "sensor", "d-installing", "job1", 1, "2.0", min(1))
	h.report(t, "sensor", "d-installing", "2.0", events.StatusInProgress, 0, min(2))
	// d-failed: the update failed.
	h.desire(t, "sensor", "d-failed", "job1", 1, "2.0", min(1))
	h.report(t, "sensor", "d-failed", "1.0", events.StatusFailed, 30, min(3))
	// d-sync: completed the target.
	h.desire(t, "sensor", "d-sync", "job1", 1, "2.0", min(1))
	h.report(t, "sensor", "d-sync", "2.0", events.StatusCompleted, 60, min(4))
	// d-desired-only: targeted, never reported (offline since).
	last := h.desire(t, "sensor", "d-desired-only", "job1", 2, "2.0", min(5))
	h.waitShadow(t, last)

	tests := []struct {
		dev      string
		want     *events.DeltaFirmware
		wantTime time.Time
	}{
		{"d-none", nil, min(0)},
		{"d-behind", target("2.0"), min(1)},
		{"d-installing", target("2.0"), min(2)},
		{"d-failed", target("2.0"), min(3)},
		{"d-sync", nil, min(4)},
		{"d-desired-only", target("2.0"), min(5)},
	}
	for _, tt := range tests {
		t.Run(tt.dev, func(t *testing.T) {
			var raw json.RawMessage
			h.getJSON(t, path(tt.dev), http.StatusOK, &raw)
			var got events.ShadowDelta
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			if (got.State.Firmware == nil) != (tt.want == nil) || got.State.Firmware != nil && *got.State.Firmware != *tt.want {
				t.Errorf("firmware delta = %+v, want %+v (body %s)", got.State.Firmware, tt.want, raw)
			}
			if tt.want == nil && !strings.Contains(string(raw), `"state":{}`) {
				t.Errorf("in sync: body %s, want \"state\":{}", raw)
			}
			if !got.Timestamp.Equal(tt.wantTime) {
				t.Errorf("timestamp %s, want %s", got.Timestamp, tt.wantTime)
			}
		})
	}

	t.Run("unknown device", func(t *testing.T) {
		status, b := h.do(t, http.MethodGet, path("nobody"), "", nil)
		if status != http.StatusNotFound || !strings.Contains(errorOf(t, b), "sensor/nobody") {
			t.Fatalf("status %d body %s, want 404 naming the device", status, b)
		}
	})

	t.Run("a new target reopens the delta", func(t *testing.T) {
		seq := h.desire(t, "sensor", "d-sync", "job2", 1, "3.0", min(10))
		h.waitShadow(t, seq)
		var got events.ShadowDelta
		h.getJSON(t, path("d-sync"), http.StatusOK, &got)
		want := events.DeltaFirmware{Version: "3.0", Checksum: "sha256:3.0", URL: "https://fw.example/3.0", JobID: "job2"}
		if got.State.Firmware == nil || *got.State.Firmware != want {
			t.Fatalf("delta %+v, want %+v", got.State.Firmware, want)
		}
	})

	t.Run("an aborted job asks for nothing", func(t *testing.T) {
		rollout := func(typ string, at time.Time, d events.RolloutData) uint64 {
			t.Helper()
			e, err := events.New(events.IdentityID("ro", d.JobID, typ), events.SourceRollout, typ, d.JobID, at, d)
			if err != nil {
				t.Fatal(err)
			}
			return h.publish(t, events.RolloutSubject(d.JobID, events.RolloutEventName(typ)), e)
		}
		waitRollout := func(seq uint64) {
			t.Helper()
			f := h.svc.folds[1]
			testutil.Eventually(t, 10*time.Second, func() bool { return f.Applied() >= seq },
				"the read model did not apply ROLLOUT up to %d", seq)
		}
		spec := &events.RolloutSpec{ID: "job3", Target: events.DesiredFirmware{Version: "4.0"}}
		waitRollout(rollout(events.TypeRolloutJobCreated, min(20), events.RolloutData{JobID: "job3", Spec: spec, Target: &spec.Target}))
		h.report(t, "sensor", "d-aborted", "1.0", events.StatusCompleted, 10, min(20))
		h.waitShadow(t, h.desire(t, "sensor", "d-aborted", "job3", 1, "4.0", min(21)))
		var got events.ShadowDelta
		h.getJSON(t, path("d-aborted"), http.StatusOK, &got)
		if got.State.Firmware == nil || got.State.Firmware.Version != "4.0" {
			t.Fatalf("running job: delta %+v, want 4.0", got.State.Firmware)
		}
		waitRollout(rollout(events.TypeRolloutJobAborted, min(22), events.RolloutData{JobID: "job3", Reason: "bad build", By: events.ByOperator}))
		var raw json.RawMessage
		h.getJSON(t, path("d-aborted"), http.StatusOK, &raw)
		if !strings.Contains(string(raw), `"state":{}`) {
			t.Errorf("aborted job: body %s, want \"state\":{}", raw)
		}
	})
}

func TestParseStreamStart(t *testing.T) {
	tests := []struct {
		name, lastID, since string
		wantSeq             uint64
		wantPolicy          jetstream.DeliverPolicy
		wantErr             bool
	}{
		{name: "last event id", lastID: "41", wantSeq: 42},
		{name: "last event id wins over since", lastID: "7", since: "100", wantSeq: 8},
		{name: "since sequence", since: "0", wantSeq: 1},
		{name: "since time", since: "2026-11-25T12:00:00Z"},
		{name: "neither: the default policy", since: "", wantPolicy: jetstream.DeliverNewPolicy},
		{name: "bad id", lastID: "x", wantErr: true},
		{name: "negative id", lastID: "-3", wantErr: true},
		{name: "bad since", since: "soon", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStreamStart(tt.lastID, tt.since, jetstream.DeliverNewPolicy)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got.seq != tt.wantSeq {
				t.Errorf("seq = %d, want %d", got.seq, tt.wantSeq)
			}
			if tt.wantPolicy != 0 && got.policy != tt.wantPolicy {
				t.Errorf("policy = %v, want %v", got.policy, tt.wantPolicy)
			}
		})
	}
}

func FuzzParseStreamStart(f *testing.F) {
	for _, s := range [][2]string{{"1", ""}, {"", "0"}, {"", "2026-11-25T12:00:00Z"}, {"", ""}, {"18446744073709551615", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, lastID, since string) {
		got, err := parseStreamStart(lastID, since, jetstream.DeliverLastPerSubjectPolicy)
		if err != nil {
			return
		}
		if n, perr := strconv.ParseUint(strings.TrimSpace(lastID), 10, 64); lastID != "" && (perr != nil || got.seq != n+1) {
			t.Fatalf("Last-Event-ID %q accepted as %+v; want the next sequence", lastID, got)
		}
		if got.policy == jetstream.DeliverByStartSequencePolicy && got.seq == 0 {
			t.Fatalf("a start by sequence at 0 would replay everything: %+v", got)
		}
	})
}
