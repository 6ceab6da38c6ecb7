package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// readSnapshot reads the next push.
func readSnapshot(t *testing.T, ctx context.Context, c *websocket.Conn) snapshot {
	t.Helper()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read websocket: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("message type %v, want text", typ)
	}
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("push %s: %v", b, err)
	}
	return s
}

func TestWebSocketPushesAfterAnEvent(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(h.base, "http") + "/api/v1/ws"

	if _, resp, err := websocket.Dial(ctx, wsURL, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dial without a token: err %v resp %v, want 401", err, resp)
	}
	c, _, err := websocket.Dial(ctx, wsURL+"?access_token="+roToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()

	first := readSnapshot(t, ctx, c)
	if first.Fleet.Devices != 0 {
		t.Fatalf("first push: %d devices, want 0", first.Fleet.Devices)
	}
	h.desire(t, "sensor", "d1", "job1", 1, "2.0", t0)
	h.desire(t, "sensor", "d2", "job1", 1, "2.0", t0)
	h.report(t, "sensor", "d1", "2.0", events.StatusCompleted, 42, t0.Add(time.Minute))
	h.report(t, "sensor", "d2", "1.0", events.StatusFailed, 7, t0.Add(time.Minute))

	// Pushes come on change; read until one shows both reports.
	var s snapshot
	for s.Fleet.Devices != 2 || s.Fleet.Failed != 1 {
		s = readSnapshot(t, ctx, c)
	}
	if s.Fleet.Completed != 1 || s.Fleet.SuccessRate != 0.5 || s.Seq != 4 || !s.Ready {
		t.Errorf("fleet %+v seq %d ready %v, want 1 completed, rate 0.5, seq 4, ready", s.Fleet, s.Seq, s.Ready)
	}
	// A job's waves come from its plan (job_started on ROLLOUT): desired
	// events alone make none (TestDashboardWavesFollowThePlan has waves).
	if len(s.Waves) != 0 {
		t.Errorf("waves %+v, want none without a job_started", s.Waves)
	}
	if len(s.Recent) != 4 || s.Recent[0].Seq != 4 || s.Recent[0].DeviceID != "d2" || !strings.Contains(s.Recent[0].Text, "failed") {
		t.Errorf("recent %+v, want 4 events, newest d2's failure first", s.Recent)
	}
	var shadow *streamStat
	for i := range s.Streams {
		if s.Streams[i].Name == events.StreamShadow {
			shadow = &s.Streams[i]
		}
	}
	if shadow == nil {
		t.Errorf("streams %+v lack SHADOW", s.Streams)
	}
}

func TestDashboardPage(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	status, b := h.do(t, http.MethodGet, "/", "", nil)
	if status != http.StatusOK || !strings.Contains(string(b), "/api/v1/ws") || !strings.Contains(string(b), "<title>otawatch") {
		t.Fatalf("GET /: status %d, page without the WebSocket client (%d bytes)", status, len(b))
	}
	for _, ext := range []string{"http://", "https://", "//cdn"} {
		if strings.Contains(string(b), "src=\""+ext) || strings.Contains(string(b), "href=\""+ext) {
			t.Errorf("the page loads something from another origin (%s)", ext)
		}
	}
}

func TestMetricsExposeFleetGauges(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	h.startJob(t, "job1", 0, [][]events.DeviceRef{{{TypeID: "sensor", DeviceID: "d1"}}}, t0)
	h.rollout(t, "devices_sent", events.RolloutData{JobID: "job1", Devices: []events.DeviceRef{{TypeID: "sensor", DeviceID: "d1"}}}, t0)
	h.desire(t, "sensor", "d1", "job1", 1, "2.0", t0)
	h.report(t, "sensor", "d1", "2.0", events.StatusCompleted, 30, t0.Add(time.Minute))
	h.report(t, "sensor", "d2", "1.0", events.StatusFailed, 3, t0.Add(time.Minute))
	last := h.report(t, "sensor", "d3", "2.0", events.StatusInProgress, 0, t0.Add(time.Minute))
	h.waitShadow(t, last)
	h.do(t, http.MethodGet, "/api/v1/fleet", "", nil)

	// Stream counts are cached a few seconds: wait for the cache to see
	// every event rather than assert on a stale scrape.
	var text string
	testutil.Eventually(t, 3*streamInfoTTL, func() bool {
		_, b := h.do(t, http.MethodGet, "/metrics", "", nil)
		text = string(b)
		return strings.Contains(text, `otawatch_stream_messages{stream="SHADOW"} 4`+"\n")
	}, "SHADOW's message count not in /metrics")
	for _, want := range []string{
		"otawatch_fleet_devices 3\n",
		"otawatch_fleet_devices_online 3\n",
		`otawatch_fleet_devices_by_status{status="completed"} 1` + "\n",
		`otawatch_fleet_devices_by_status{status="failed"} 1` + "\n",
		`otawatch_fleet_devices_by_status{status="in_progress"} 1` + "\n",
		"otawatch_fleet_update_success_rate 0.5\n",
		"otawatch_fleet_update_duration_avg_seconds 30\n",
		`otawatch_rollout_wave_devices{job="job1",state="completed",wave="1"} 1` + "\n",
		`otawatch_api_fold_sequence{stream="SHADOW"} 4` + "\n",
		`otawatch_api_fold_caught_up{stream="SHADOW"} 1` + "\n",
		`otawatch_http_requests_total{code="200",method="GET",route="/api/v1/fleet"} 1` + "\n",
		`otawatch_alerts_active{severity="critical"} 0` + "\n",
		"go_goroutines ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
}

func TestStopEndsOpenStreams(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	sse := h.openSSE(t, sseBase+"?since=0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.base, "http")+"/api/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	readSnapshot(t, ctx, ws)

	h.stop() // fails the test unless Run returns nil
	for range sse.events {
		// drain until the server ends the stream
	}
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			if websocket.CloseStatus(err) != websocket.StatusGoingAway {
				t.Errorf("websocket ended with %v, want a going-away close", err)
			}
			break
		}
	}
}
