package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

func TestHistogram(t *testing.T) {
	tests := []struct {
		name                string
		completed, failed   []float64
		width               float64
		wantComp, wantFail  []int
		wantCount           int
		wantAvg, wantMaxSec float64
	}{
		{name: "none", width: 1, wantComp: []int{}, wantFail: []int{}},
		{name: "seconds", completed: []float64{0, 1, 1.5, 2, 3}, failed: []float64{3},
			width: 1, wantComp: []int{2, 2, 1}, wantFail: []int{0, 0, 1}, wantCount: 6, wantAvg: 10.5 / 6, wantMaxSec: 3},
		// 127 s does not fit 24 bins of 5 s: bins of 10 s, 13 of them.
		{name: "minutes", completed: []float64{10, 11, 127}, failed: []float64{60},
			width: 10, wantComp: []int{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, wantFail: []int{0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0},
			wantCount: 4, wantAvg: 52, wantMaxSec: 127},
		// Beyond the widest bins: the last bin holds the rest.
		{name: "weeks", completed: []float64{1, 30 * 86400}, width: 86400,
			wantComp: append([]int{1}, append(make([]int, histogramBins-2), 1)...), wantFail: make([]int, histogramBins),
			wantCount: 2, wantAvg: (1 + 30*86400) / 2.0, wantMaxSec: 30 * 86400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := histogram("j", tt.completed, tt.failed)
			if h.Width != tt.width || !reflect.DeepEqual(h.Completed, tt.wantComp) || !reflect.DeepEqual(h.Failed, tt.wantFail) {
				t.Errorf("width %g completed %v failed %v, want %g %v %v", h.Width, h.Completed, h.Failed, tt.width, tt.wantComp, tt.wantFail)
			}
			if h.Count != tt.wantCount || h.Avg != tt.wantAvg || h.Max != tt.wantMaxSec {
				t.Errorf("count %d avg %g max %g, want %d %g %g", h.Count, h.Avg, h.Max, tt.wantCount, tt.wantAvg, tt.wantMaxSec)
			}
		})
	}
}

func TestRankVersions(t *testing.T) {
	counts := map[string]int{"2.0": 5, "1.0": 9, "1.5": 5}
	got := rankVersions(counts, "2.0")
	want := []versionCount{{"1.0", 9, false}, {"1.5", 5, false}, {"2.0", 5, true}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rankVersions = %+v, want %+v", got, want)
	}
	many := map[string]int{}
	total := 0
	for i := range maxVersions + 5 {
		many[fmt.Sprintf("v%02d", i)] = 100 - i
		total += 100 - i
	}
	got = rankVersions(many, "")
	sum := 0
	for _, v := range got {
		sum += v.Devices
	}
	if len(got) != maxVersions || got[len(got)-1].Version != versionOther || sum != total || got[0].Version != "v00" {
		t.Errorf("%d versions, last %+v, %d devices; want %d, the last %q, %d devices, v00 first", len(got), got[len(got)-1], sum, maxVersions, versionOther, total)
	}
}

// TestSnapshotCharts checks the chart fields of the dashboard's push
// against events stored on the log: the active job's durations, the
// devices per version, and the timeline with its gate and pause moments.
func TestSnapshotCharts(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	roll := func(name string, d events.RolloutData, when time.Time) {
		t.Helper()
		typ := "io.otawatch.rollout." + name + ".v1"
		e, err := events.New(events.IdentityID("ro", d.JobID, name, when.String()), events.SourceRollout, typ, d.JobID, when, d)
		if err != nil {
			t.Fatal(err)
		}
		h.publish(t, events.RolloutSubject(d.JobID, name), e)
	}
	fw := events.DesiredFirmware{Version: "2.0", Checksum: "sha256:2.0", URL: "https://fw.example/2.0"}
	old := events.DesiredFirmware{Version: "1.9", Checksum: "sha256:1.9", URL: "https://fw.example/1.9"}
	// An older finished job, then the one running now.
	roll("job_created", events.RolloutData{JobID: "old", Target: &old}, at(-100))
	roll("job_completed", events.RolloutData{JobID: "old"}, at(-90))
	roll("job_created", events.RolloutData{JobID: "job1", Target: &fw}, at(0))
	roll("job_started", events.RolloutData{JobID: "job1", Plan: &events.RolloutPlan{Waves: [][]events.DeviceRef{{{TypeID: "sensor", DeviceID: "d1"}}, {{TypeID: "sensor", DeviceID: "d2"}}}}}, at(0))
	roll("wave_started", events.RolloutData{JobID: "job1", Wave: 1}, at(1))
	roll("wave_gated", events.RolloutData{JobID: "job1", Wave: 1, Gate: &events.GateDecision{Passed: true, Reason: "3 of 3 completed"}}, at(5))
	roll("wave_completed", events.RolloutData{JobID: "job1", Wave: 1}, at(6))
	roll("wave_started", events.RolloutData{JobID: "job1", Wave: 2}, at(6))
	roll("job_paused", events.RolloutData{JobID: "job1", Wave: 2, Reason: "night", By: events.ByOperator, Actor: "alice"}, at(7))

	for i, d := range []struct {
		dev, version, status string
		dur                  float64
	}{
		{"d1", "2.0", events.StatusCompleted, 30}, {"d2", "2.0", events.StatusCompleted, 45},
		{"d3", "1.0", events.StatusFailed, 12}, {"d4", "1.0", events.StatusCompleted, 0},
	} {
		h.desire(t, "sensor", d.dev, "job1", 1+i/2, "2.0", at(1))
		h.report(t, "sensor", d.dev, d.version, d.status, d.dur, at(2))
	}
	// A device of the old job, and one no job targets: in the versions,
	// not in the histogram.
	h.desire(t, "sensor", "d5", "old", 1, "1.9", at(-99))
	h.report(t, "sensor", "d5", "1.9", events.StatusCompleted, 500, at(-98))
	last := h.report(t, "sensor", "d6", "1.0", events.StatusCompleted, 0, at(2))
	h.waitShadow(t, last)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.base, "http")+"/api/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	var s snapshot
	for s.Seq < last || len(s.Timelines) < 2 {
		s = readSnapshot(t, ctx, c)
	}
	if s.ActiveJob != "job1" {
		t.Errorf("active job %q, want the paused job1 (newer than the completed one)", s.ActiveJob)
	}
	wantVersions := []versionCount{{"1.0", 3, false}, {"2.0", 2, true}, {"1.9", 1, false}}
	if !reflect.DeepEqual(s.Versions, wantVersions) {
		t.Errorf("versions %+v, want %+v", s.Versions, wantVersions)
	}
	// d1, d2 completed in 30 and 45 s; d3 failed after 12 s; d4 reports
	// 1.0 completed, which is not job1's target, so it has not finished.
	if d := s.Durations; d == nil || d.JobID != "job1" || d.Count != 3 || d.Width != 2 || d.Max != 45 ||
		sumInts(d.Completed) != 2 || sumInts(d.Failed) != 1 || d.Completed[14] != 1 || d.Completed[22] != 1 || d.Failed[5] != 1 {
		t.Errorf("durations %+v, want job1's 30 s and 45 s completed and 12 s failed in 2 s bins", s.Durations)
	}
	tl := s.Timelines[0]
	want := jobTimeline{JobID: "job1", Created: at(0), Started: at(0), WaveCount: 2,
		Waves: []waveSpan{{Wave: 1, Started: at(1), Gated: at(5), GateReason: "3 of 3 completed", Completed: at(6)}, {Wave: 2, Started: at(6)}},
		Marks: []timelineMark{{Time: at(7), Event: "paused", Reason: "night", Actor: "alice"}}}
	if !reflect.DeepEqual(tl, want) {
		t.Errorf("timeline\n %+v, want\n %+v", tl, want)
	}
	if s.Timelines[1].JobID != "old" || !s.Timelines[1].Finished.Equal(at(-90)) {
		t.Errorf("second timeline %+v, want the old job, finished at %s", s.Timelines[1], at(-90))
	}
}

func sumInts(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}

func TestWhoami(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}})
	tests := []struct {
		name, auth string
		status     int
		want       string
	}{
		{"operator", "Bearer " + opToken, http.StatusOK, `{"name":"alice","role":"operator","operator":true}`},
		{"read-only", "Bearer " + roToken, http.StatusOK, `{"name":"grafana","role":"read-only","operator":false}`},
		{"no token", "", http.StatusUnauthorized, ""},
		{"bad token", "Bearer not-a-token-0123456789", http.StatusUnauthorized, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := http.Header{"Authorization": {tt.auth}}
			if tt.auth == "" {
				hdr = http.Header{"Authorization": {""}}
				h.token = ""
				defer func() { h.token = opToken }()
			}
			status, b := h.do(t, http.MethodGet, "/api/v1/whoami", "", hdr)
			if status != tt.status || (tt.want != "" && strings.TrimSpace(string(b)) != tt.want) {
				t.Errorf("status %d body %s, want %d %s", status, b, tt.status, tt.want)
			}
		})
	}

	anon := startAPI(t, harnessOpts{})
	status, b := anon.do(t, http.MethodGet, "/api/v1/whoami", "", nil)
	if status != http.StatusOK || strings.TrimSpace(string(b)) != `{"name":"anonymous","role":"operator","operator":true}` {
		t.Errorf("anonymous: status %d body %s, want an anonymous operator", status, b)
	}
}

// TestWebSocketTokenSubprotocol: the dashboard's way to send its token.
func TestWebSocketTokenSubprotocol(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}})
	wsURL := "ws" + strings.TrimPrefix(h.base, "http") + "/api/v1/ws"
	tokenProto := func(tok string) string { return wsTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(tok)) }
	tests := []struct {
		name      string
		protocols []string
		status    int // of a refused handshake; 0: accepted
	}{
		{"read-only token", []string{wsProtocol, tokenProto(roToken)}, 0},
		{"operator token first", []string{tokenProto(opToken), wsProtocol}, 0},
		{"unknown token", []string{wsProtocol, tokenProto("nobody-0123456789abcdef")}, http.StatusUnauthorized},
		{"not base64url", []string{wsProtocol, wsTokenPrefix + "a+b/c"}, http.StatusUnauthorized},
		{"no token", []string{wsProtocol}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{Subprotocols: tt.protocols})
			if tt.status != 0 {
				if err == nil || resp == nil || resp.StatusCode != tt.status {
					t.Fatalf("dial: err %v resp %v, want %d", err, resp, tt.status)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.CloseNow()
			// The server selects the plain protocol: the token is never
			// echoed back.
			if c.Subprotocol() != wsProtocol {
				t.Errorf("selected subprotocol %q, want %q", c.Subprotocol(), wsProtocol)
			}
			readSnapshot(t, ctx, c)
		})
	}
}

func BenchmarkDashboardCharts(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			st := fleet.New()
			for i := range n {
				dev := fmt.Sprintf("d%06d", i)
				e, _ := events.New(dev+"-d", events.SourceRollout, events.TypeShadowDesired, dev, t0,
					events.ShadowDesiredData{TypeID: "sensor", DeviceID: dev, JobID: "job1", Wave: 1 + i/100,
						Firmware: events.DesiredFirmware{Version: "2.0", Checksum: "sha256:2.0", URL: "https://fw.example/2.0"}})
				if _, err := st.Apply(uint64(2*i+1), e); err != nil {
					b.Fatal(err)
				}
				fw := events.Firmware{Version: fmt.Sprintf("1.%d", i%7), Status: events.StatusCompleted, Timestamp: t0, UpdateDuration: float64(i % 300)}
				if i%3 == 0 {
					fw.Version = "2.0"
				}
				e, _ = events.New(dev+"-r", events.SourceBridge, events.TypeShadowReported, dev, t0.Add(time.Minute),
					events.ShadowReportedData{TypeID: "sensor", DeviceID: dev, Firmware: fw})
				if _, err := st.Apply(uint64(2*i+2), e); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				c := charts(st, "job1", "2.0")
				if c.durations.Count == 0 {
					b.Fatal("no durations")
				}
			}
		})
	}
}
