package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

func TestDevicesPagingAndFilters(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	var last uint64
	for _, d := range []struct{ typ, dev, status string }{
		{"cam", "c2", events.StatusCompleted},
		{"cam", "c1", events.StatusFailed},
		{"sensor", "s3", events.StatusInProgress},
		{"sensor", "s1", events.StatusCompleted},
		{"sensor", "s2", events.StatusCompleted},
	} {
		last = h.report(t, d.typ, d.dev, "1.0", d.status, 5, t0)
	}
	last = h.desire(t, "sensor", "s9", "job1", 1, "2.0", t0) // targeted, never reported
	last = h.presence(t, "sensor", "s2", events.PresencePotentiallyOffline, t0, t0.Add(11*time.Minute))
	h.waitShadow(t, last)

	ids := func(p devicePage) string {
		var s []string
		for _, d := range p.Devices {
			s = append(s, d.TypeID+"/"+d.DeviceID)
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		name, query string
		want        string
		total       int
		next        string
	}{
		{"first page", "?limit=2", "cam/c1,cam/c2", 6, "cam/c2"},
		{"second page", "?limit=2&after=cam/c2", "sensor/s1,sensor/s2", 6, "sensor/s2"},
		{"last page", "?limit=2&after=sensor/s2", "sensor/s3,sensor/s9", 6, ""},
		{"all", "", "cam/c1,cam/c2,sensor/s1,sensor/s2,sensor/s3,sensor/s9", 6, ""},
		{"by type", "?type=cam", "cam/c1,cam/c2", 2, ""},
		{"by status", "?status=completed", "cam/c2,sensor/s1,sensor/s2", 3, ""},
		{"by type and status", "?type=sensor&status=completed&limit=1", "sensor/s1", 2, "sensor/s1"},
		{"failed", "?status=failed", "cam/c1", 1, ""},
		{"offline", "?status=potentially_offline", "sensor/s2", 1, ""},
		{"online", "?status=online&type=sensor", "sensor/s1,sensor/s3", 2, ""},
		{"by job", "?job=job1", "sensor/s9", 1, ""},
		{"nothing matches", "?type=nope", "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p devicePage
			h.getJSON(t, "/api/v1/devices"+tt.query, http.StatusOK, &p)
			if got := ids(p); got != tt.want || p.Total != tt.total || p.Next != tt.next {
				t.Errorf("got %q total %d next %q, want %q total %d next %q", got, p.Total, p.Next, tt.want, tt.total, tt.next)
			}
		})
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?after=cam", "?after=cam/c.1", "?status=weird", "?type=a*"} {
		t.Run("bad "+q, func(t *testing.T) {
			status, b := h.do(t, http.MethodGet, "/api/v1/devices"+q, "", nil)
			if status != http.StatusBadRequest {
				t.Fatalf("status %d body %s, want 400", status, b)
			}
			errorOf(t, b)
		})
	}

	t.Run("one device", func(t *testing.T) {
		var d fleet.Device
		h.getJSON(t, "/api/v1/devices/cam/c1", http.StatusOK, &d)
		if d.Status != events.StatusFailed || d.ErrorCode != "E_FLASH" || d.Version != "1.0" {
			t.Errorf("device %+v, want failed 1.0 with E_FLASH", d)
		}
		status, b := h.do(t, http.MethodGet, "/api/v1/devices/cam/nope", "", nil)
		if status != http.StatusNotFound || !strings.Contains(errorOf(t, b), "cam/nope") {
			t.Errorf("unknown device: status %d body %s", status, b)
		}
	})

	t.Run("fleet", func(t *testing.T) {
		var m fleet.Metrics
		h.getJSON(t, "/api/v1/fleet", http.StatusOK, &m)
		want := fleet.Metrics{Devices: 5, Online: 4, PotentiallyOffline: 1, InProgress: 1, Completed: 2, Failed: 1,
			Finished: 3, SuccessRate: 2.0 / 3, AvgDuration: 5, P95Duration: 5}
		if m != want {
			t.Errorf("fleet\n got %+v\nwant %+v", m, want)
		}
	})
}

func TestAlertsFold(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	pub := func(d events.AlertData, min int) {
		e, err := events.New(events.AlertEventID(d.Key, d.Severity, d.StartsAt, d.State), events.SourceAlerting,
			events.AlertEventType(d.State), d.Key, at(min), d)
		if err != nil {
			t.Fatal(err)
		}
		h.publish(t, events.AlertSubject(d.State, d.Severity, d.RuleID), e)
	}
	raise := func(key, rule, sev string, start, min int) {
		pub(events.AlertData{Key: key, RuleID: rule, Severity: sev, State: events.AlertRaised, Message: rule + " fired", StartsAt: at(start)}, min)
	}
	resolve := func(key, rule, sev string, start, min int, reason string) {
		pub(events.AlertData{Key: key, RuleID: rule, Severity: sev, State: events.AlertResolved, StartsAt: at(start), Reason: reason}, min)
	}
	raise("device-failed/sensor/d1", "device-failed", "critical", 0, 0)
	raise("device-failed/sensor/d2", "device-failed", "critical", 1, 1)
	resolve("device-failed/sensor/d1", "device-failed", "critical", 0, 2, events.ResolvedCleared)
	// Escalation: the warning resolves and a critical of the same key is
	// raised.
	raise("success-rate-low/fleet", "success-rate-low", "warning", 3, 4)
	resolve("success-rate-low/fleet", "success-rate-low", "warning", 3, 5, events.ResolvedSeverityChanged)
	raise("success-rate-low/fleet", "success-rate-low", "critical", 5, 5)
	// An event from an older or foreign writer: no key, no state in the
	// data; the subject and the type say the rest.
	e, err := events.New("foreign-1", "someone/else", "io.otawatch.alert.raised.v1", "", at(6),
		map[string]string{"typeId": "sensor", "deviceId": "d7"})
	if err != nil {
		t.Fatal(err)
	}
	h.publish(t, events.AlertSubject("raised", "warning", "stale-shadow"), e)

	var got struct {
		Alerts []alertView `json:"alerts"`
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		h.getJSON(t, "/api/v1/alerts", http.StatusOK, &got)
		return len(got.Alerts) == 3 && got.Alerts[0].Key == "stale-shadow/sensor/d7"
	}, "want 3 active alerts, got %+v", &got)
	want := []struct {
		key, sev string
		since    time.Time
	}{
		{"stale-shadow/sensor/d7", "warning", at(6)},
		{"success-rate-low/fleet", "critical", at(5)},
		{"device-failed/sensor/d2", "critical", at(1)},
	}
	for i, w := range want {
		a := got.Alerts[i]
		if a.Key != w.key || a.Severity != w.sev || !a.Since.Equal(w.since) {
			t.Errorf("alert %d = %s %s since %s, want %s %s since %s", i, a.Key, a.Severity, a.Since, w.key, w.sev, w.since)
		}
	}
	if got.Alerts[2].Message != "device-failed fired" || got.Alerts[2].Rule != "device-failed" {
		t.Errorf("alert %+v lacks its rule and message", got.Alerts[2])
	}
}

func TestUnknownRoutesAnswerJSON(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/api/v1/nothing", http.StatusNotFound},
		{http.MethodDelete, "/api/v1/fleet", http.StatusMethodNotAllowed},
		{http.MethodPost, "/api/v1/rollouts/job1/explode", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			status, b := h.do(t, tt.method, tt.path, "", nil)
			if status != tt.status {
				t.Fatalf("status %d, want %d; body %s", status, tt.status, b)
			}
			errorOf(t, b)
		})
	}
}

func TestReadyzReflectsHealth(t *testing.T) {
	// No streams yet: the read model cannot follow SHADOW.
	h := startAPI(t, harnessOpts{noStreams: true})
	type readyz struct {
		Ready    bool              `json:"ready"`
		NotReady []componentStatus `json:"notReady"`
	}
	var r readyz
	h.getJSON(t, "/readyz", http.StatusServiceUnavailable, &r)
	if r.Ready || len(r.NotReady) != 1 || r.NotReady[0].Name != HealthComponent || r.NotReady[0].Reason == "" {
		t.Fatalf("readyz %+v, want the api not ready with a reason", r)
	}
	status, _ := h.do(t, http.MethodGet, "/healthz", "", nil)
	if status != http.StatusOK {
		t.Fatalf("healthz %d while not ready, want 200: alive is not ready", status)
	}

	if err := events.EnsureStreams(t.Context(), h.js.JS, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		status, _ := h.do(t, http.MethodGet, "/readyz", "", nil)
		return status == http.StatusOK
	}, "readyz did not turn 200 once the streams exist")

	h.health.Set("projector", errorString("clickhouse 127.0.0.1:9000 unreachable"))
	h.health.Set("bridge", nil)
	h.getJSON(t, "/readyz", http.StatusServiceUnavailable, &r)
	if len(r.NotReady) != 1 || r.NotReady[0] != (componentStatus{Name: "projector", Reason: "clickhouse 127.0.0.1:9000 unreachable"}) {
		t.Fatalf("readyz %+v, want only the projector with its reason", r)
	}
	h.health.Set("projector", nil)
	var ok map[string]any
	h.getJSON(t, "/readyz", http.StatusOK, &ok)
	if ok["ready"] != true {
		t.Fatalf("readyz %v, want ready", ok)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

func TestRecentAndJobsFold(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	mk := func(id, typ string, d events.RolloutData, min int) events.Event {
		e, err := events.New(id, events.SourceRollout, typ, d.JobID, t0.Add(time.Duration(min)*time.Minute), d)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	fw := &events.DesiredFirmware{Version: "2.0"}
	h.publish(t, events.RolloutSubject("job1", "job_created"), mk("r1", events.TypeRolloutJobCreated, events.RolloutData{JobID: "job1", Target: fw}, 0))
	plan := &events.RolloutPlan{Waves: [][]events.DeviceRef{{{TypeID: "t", DeviceID: "a"}}, {{TypeID: "t", DeviceID: "b"}}}}
	h.publish(t, events.RolloutSubject("job1", "job_started"), mk("r2", events.TypeRolloutJobStarted, events.RolloutData{JobID: "job1", Plan: plan}, 1))
	h.publish(t, events.RolloutSubject("job1", "wave_started"), mk("r3", events.TypeRolloutWaveStarted, events.RolloutData{JobID: "job1", Wave: 1}, 1))
	h.publish(t, events.RolloutSubject("job1", "job_paused"), mk("r4", events.TypeRolloutJobPaused, events.RolloutData{JobID: "job1", Reason: "failures 30% > 10%"}, 2))

	testutil.Eventually(t, 10*time.Second, func() bool {
		h.svc.model.mu.RLock()
		defer h.svc.model.mu.RUnlock()
		j := h.svc.model.jobs["job1"]
		return j != nil && j.Status == "paused"
	}, "job1 not folded to paused")
	h.svc.model.mu.RLock()
	j := *h.svc.model.jobs["job1"]
	recent := h.svc.model.recentEvents()
	h.svc.model.mu.RUnlock()
	if j.Target == nil || j.Target.Version != "2.0" || j.Wave != 1 || j.WaveCount != 2 || j.Reason != "failures 30% > 10%" || !j.Created.Equal(t0) {
		t.Errorf("job %+v", j)
	}
	if len(recent) != 4 || recent[0].Seq != 4 || recent[3].Seq != 1 {
		b, _ := json.Marshal(recent)
		t.Errorf("recent events not newest first: %s", b)
	}
}

func TestRecentRing(t *testing.T) {
	m := newModel()
	for i := 1; i <= recentCap+7; i++ {
		m.pushRecent(recentEvent{Seq: uint64(i)})
		got := m.recentEvents()
		wantLen := min(i, recentCap)
		if len(got) != wantLen || got[0].Seq != uint64(i) || got[len(got)-1].Seq != uint64(i-wantLen+1) {
			t.Fatalf("after %d pushes: len %d, first %d, last %d", i, len(got), got[0].Seq, got[len(got)-1].Seq)
		}
	}
}

func TestReadyzWhenNATSIsDown(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	testutil.Eventually(t, 10*time.Second, func() bool {
		status, _ := h.do(t, http.MethodGet, "/readyz", "", nil)
		return status == http.StatusOK
	}, "not ready on a healthy server")
	h.js.Server.Shutdown()
	var r struct {
		NotReady []componentStatus `json:"notReady"`
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		status, b := h.do(t, http.MethodGet, "/readyz", "", nil)
		if status != http.StatusServiceUnavailable {
			return false
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		return len(r.NotReady) == 1 && r.NotReady[0].Name == HealthComponent && strings.Contains(r.NotReady[0].Reason, "nats")
	}, "readyz does not report the lost NATS connection: %+v", &r)
}
