package alerting

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

func TestFailedReportRaisesOneCriticalAlert(t *testing.T) {
	h := newHarness(t)
	r := h.start(Config{})
	h.report("d1", "4.2.1", events.StatusInProgress, 0, at(0))
	h.report("d1", "4.2.1", events.StatusFailed, 30, at(time.Minute))
	got := h.waitAlerts("device-failed", 1)
	// More events of the same device and of others must not raise it again.
	h.report("d1", "4.2.1", events.StatusFailed, 31, at(2*time.Minute))
	seq := h.report("d2", "4.2.1", events.StatusCompleted, 60, at(3*time.Minute))
	r.waitShadow(t, seq)
	got = h.alerts("")
	if len(got) != 1 {
		t.Fatalf("ALERTS = %s, want one device-failed raise", describe(got))
	}
	a := got[0]
	if a.State != events.AlertRaised || a.Severity != "critical" || a.Key != "device-failed/t/d1" || a.DeviceID != "d1" ||
		!a.StartsAt.Equal(at(time.Minute)) || !a.Time.Equal(at(time.Minute)) || a.Subject != "alert.raised.critical.device-failed" {
		t.Errorf("alert = %+v (subject %s)", a.AlertData, a.Subject)
	}
	if want := "t/d1 failed to update to 4.2.1 with error E_FLASH"; a.Message != want {
		t.Errorf("message %q, want %q", a.Message, want)
	}
	if a.ID != events.AlertEventID(a.Key, a.Severity, a.StartsAt, a.State) {
		t.Errorf("id %s is not the deterministic alert id", a.ID)
	}
}

func TestSuccessRateEscalatesAndResolves(t *testing.T) {
	h := newHarness(t)
	r := h.start(Config{})
	for i := 1; i <= 19; i++ {
		h.report(fmt.Sprintf("ok-%d", i), "2", events.StatusCompleted, 60, at(0))
	}
	// 19/21 = 90.5%: warning.
	h.report("bad-1", "1", events.StatusFailed, 10, at(1*time.Minute))
	h.report("bad-2", "1", events.StatusFailed, 10, at(1*time.Minute))
	h.waitAlerts("success-rate-low", 1)
	// 19/22 = 86.4%: critical.
	h.report("bad-3", "1", events.StatusFailed, 10, at(2*time.Minute))
	h.waitAlerts("success-rate-low", 3)
	// Recovery: 22/22.
	h.report("bad-1", "2", events.StatusCompleted, 70, at(3*time.Minute))
	h.report("bad-2", "2", events.StatusCompleted, 70, at(3*time.Minute))
	seq := h.report("bad-3", "2", events.StatusCompleted, 70, at(3*time.Minute))
	r.waitShadow(t, seq)
	got := h.alerts("success-rate-low")
	want := []string{
		"raised warning success-rate-low/fleet @1m0s",
		"resolved warning success-rate-low/fleet severity_changed@2m0s",
		"raised critical success-rate-low/fleet @2m0s",
		"resolved critical success-rate-low/fleet severity_changed@3m0s",
		"raised warning success-rate-low/fleet @3m0s",
		"resolved warning success-rate-low/fleet cleared@3m0s",
	}
	if describe(got) != strings.Join(want, "; ") {
		t.Errorf("success-rate-low events\n got %s\nwant %s", describe(got), strings.Join(want, "; "))
	}
	if got[0].Value == nil || *got[0].Value != 19.0/21 {
		t.Errorf("warning value = %v, want %v", got[0].Value, 19.0/21)
	}
	if n := r.svc.Status().Active; n != 0 {
		t.Errorf("%d alerts active after recovery, want 0", n)
	}
}

func TestSilentTargetedDeviceGoesStaleAndLeavesTheRate(t *testing.T) {
	h := newHarness(t)
	r := h.start(Config{})
	h.rollout("j1", "job_created", 0, "4.2.1", at(0))
	h.rollout("j1", "job_started", 0, "", at(0))
	rseq := h.rollout("j1", "wave_started", 1, "", at(0))
	h.desired("d1", "j1", 1, "4.2.1", at(0))
	h.report("d1", "4.2.1", events.StatusInProgress, 0, at(30*time.Second))
	// bad-*: failed, and sent the target again (a retry) at 30s: they owe
	// a report from then.
	for i := 1; i <= 3; i++ {
		h.report(fmt.Sprintf("bad-%d", i), "4.1.0", events.StatusFailed, 10, at(0))
		h.desired(fmt.Sprintf("bad-%d", i), "j1", 1, "4.2.1", at(30*time.Second))
	}
	var seq uint64
	for i := 1; i <= 20; i++ {
		seq = h.report(fmt.Sprintf("ok-%d", i), "4.2.1", events.StatusCompleted, 60, at(2*time.Minute))
	}
	r.waitShadow(t, seq)
	r.waitRollout(t, rseq)
	// 20/23 = 87%: critical, while every device is online.
	h.waitAlerts("success-rate-low", 1)

	// 10 minutes of tick time: nothing is stale yet at 10m (d1 reported and
	// bad-* were sent their retry at 30s), and at 10m40s they are. ok-*
	// finished: they are idle, however long they are silent.
	r.tick(t, at(10*time.Minute))
	if got := h.alerts("stale-shadow"); len(got) != 0 {
		t.Fatalf("stale-shadow before 10 minutes of silence: %s", describe(got))
	}
	r.tick(t, at(10*time.Minute+40*time.Second))
	stale := h.waitAlerts("stale-shadow", 4)
	want := "raised warning stale-shadow/t/bad-1 @10m40s; raised warning stale-shadow/t/bad-2 @10m40s; " +
		"raised warning stale-shadow/t/bad-3 @10m40s; raised warning stale-shadow/t/d1 @10m40s"
	if describe(stale) != want || stale[3].JobID != "j1" {
		t.Errorf("stale-shadow\n got %s\nwant %s", describe(stale), want)
	}
	var offline []string
	for _, ev := range h.shadowEvents(events.TypeDevicePresence) {
		var d events.DevicePresenceData
		if err := ev.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		if d.State != events.PresencePotentiallyOffline || ev.Source != events.SourceAlerting || !ev.Time.Equal(at(10*time.Minute+40*time.Second)) {
			t.Errorf("presence event %+v at %s", d, ev.Time)
		}
		offline = append(offline, d.DeviceID)
	}
	if strings.Join(offline, ",") != "bad-1,bad-2,bad-3,d1" {
		t.Errorf("presence events for %v, want bad-1..3 and d1", offline)
	}
	// The failed devices left the denominator: 20/20.
	rate := h.waitAlerts("success-rate-low", 2)
	if last := rate[len(rate)-1]; last.State != events.AlertResolved || !last.Time.Equal(at(10*time.Minute+40*time.Second)) {
		t.Errorf("success-rate-low = %s, want resolved at the tick", describe(rate))
	}
	// Their presence events come back from SHADOW and change nothing.
	r.waitShadow(t, seq+4)
	r.tick(t, at(11*time.Minute))
	if got := h.shadowEvents(events.TypeDevicePresence); len(got) != 4 {
		t.Errorf("%d presence events after another tick, want still 4", len(got))
	}
	// d1 reports again: the stale alert resolves with that report.
	seq = h.report("d1", "4.2.1", events.StatusCompleted, 700, at(12*time.Minute))
	r.waitShadow(t, seq)
	stale = h.waitAlerts("stale-shadow", 5)
	if stale[4].State != events.AlertResolved || stale[4].DeviceID != "d1" || !stale[4].Time.Equal(at(12*time.Minute)) {
		t.Errorf("stale-shadow = %s, want d1's resolved at 12m", describe(stale))
	}
	// A day later: d1 and ok-* finished, so no presence event and no stale
	// alert for them; bad-* stay where they were.
	r.tick(t, at(24*time.Hour))
	if got := h.shadowEvents(events.TypeDevicePresence); len(got) != 4 {
		t.Errorf("%d presence events a day later, want still 4", len(got))
	}
	if got := h.alerts("stale-shadow"); len(got) != 5 {
		t.Errorf("stale-shadow a day later = %s, want nothing new", describe(got))
	}
}

const ruleV1 = `id: version-nine
severity: info
condition: device.version == "9"
message: '{{.device.deviceId}} runs 9'
`

func TestRuleFileEditTakesEffectWithoutRestart(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "custom.yaml")
	if err := os.WriteFile(file, []byte(ruleV1), 0o644); err != nil {
		t.Fatal(err)
	}
	r := h.start(Config{RulesDir: dir, ReloadInterval: 20 * time.Millisecond})
	seq := h.report("d1", "8", events.StatusCompleted, 60, at(0))
	r.waitShadow(t, seq)
	h.report("d2", "9", events.StatusCompleted, 60, at(time.Minute))
	h.waitAlerts("version-nine", 1)

	// An edit on disk: the rule now looks for version 10.
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(ruleV1, `"9"`, `"10"`)), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return r.svc.Status().Reloads >= 1 }, "rules not reloaded")
	h.report("d3", "10", events.StatusCompleted, 60, at(2*time.Minute))
	seq = h.report("d4", "9", events.StatusCompleted, 60, at(2*time.Minute))
	r.waitShadow(t, seq)
	got := h.waitAlerts("version-nine", 2)
	if len(got) != 2 || got[1].DeviceID != "d3" {
		t.Fatalf("after the edit: %s, want a raise for d3 only", describe(got))
	}

	// A broken edit is refused with file, rule and position; the old rule
	// keeps running.
	broken := strings.ReplaceAll(ruleV1, `device.version == "9"`, `device.version == "10" &&`)
	if err := os.WriteFile(file, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	want := file + ":3:37: rule version-nine: Syntax error"
	testutil.Eventually(t, 10*time.Second, func() bool { return strings.Contains(r.svc.Status().ReloadError, want) },
		"broken rule not refused with %q", want)
	if !strings.Contains(h.log.String(), "rule refused; the old rules keep running") {
		t.Errorf("the refusal was not logged:\n%s", h.log.String())
	}
	seq = h.report("d5", "10", events.StatusCompleted, 60, at(3*time.Minute))
	r.waitShadow(t, seq)
	got = h.waitAlerts("version-nine", 3)
	if len(got) != 3 || got[2].DeviceID != "d5" {
		t.Errorf("after the broken edit: %s, want the old rule to raise for d5", describe(got))
	}
	// Deleting the rule resolves its alerts.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	got = h.waitAlerts("version-nine", 5)
	for _, a := range got[3:] {
		if a.State != events.AlertResolved || a.Reason != events.ResolvedRuleRemoved {
			t.Errorf("after removing the rule: %s, want rule_removed resolutions", describe(got))
		}
	}
}

func TestReloadOnRequest(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "custom.yaml")
	if err := os.WriteFile(file, []byte(ruleV1), 0o644); err != nil {
		t.Fatal(err)
	}
	// Polling is slow here: only Reload (SIGHUP) can pick the edit up in time.
	r := h.start(Config{RulesDir: dir, ReloadInterval: time.Hour})
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(ruleV1, "version-nine", "version-nine-b")), 0o644); err != nil {
		t.Fatal(err)
	}
	r.svc.Reload()
	testutil.Eventually(t, 10*time.Second, func() bool {
		st := r.svc.Status()
		return st.Reloads == 1 && len(st.Rules) == 1 && st.Rules[0] == "version-nine-b"
	}, "Reload did not load the edited rule: %+v", r.svc.Status())
}

func TestRestartNeitherRepeatsNorForgetsAlerts(t *testing.T) {
	tests := []struct {
		name  string
		crash bool // stop without the final snapshot
		// periodic: wait for a periodic snapshot, then crash: the restart
		// reads the snapshot and the alerts after it.
		periodic bool
		restored bool
	}{
		{name: "clean stop resumes from the snapshot", restored: true},
		{name: "crash without a snapshot rebuilds from the log", crash: true},
		{name: "crash after a periodic snapshot", crash: true, periodic: true, restored: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := Config{}
			if tt.periodic {
				cfg.SnapshotInterval = time.Second
			}
			r := h.startWith(cfg, func(s *Service) { s.crashOnStop = tt.crash })
			h.report("d1", "2", events.StatusFailed, 10, at(0))
			h.waitAlerts("device-failed", 1)
			if tt.periodic {
				testutil.Eventually(t, 10*time.Second, func() bool { return r.svc.Status().Snapshots >= 1 }, "no periodic snapshot")
			}
			// After the snapshot: a raise the restart must learn from ALERTS.
			seq := h.report("d2", "2", events.StatusFailed, 10, at(0))
			h.waitAlerts("device-failed", 2)
			r.waitShadow(t, seq)
			r.stop(t)

			// While it is down: d1 recovers, d3 fails.
			h.report("d1", "2", events.StatusCompleted, 60, at(time.Minute))
			seq = h.report("d3", "2", events.StatusFailed, 10, at(2*time.Minute))
			r2 := h.start(Config{})
			r2.waitShadow(t, seq)
			if got := r2.svc.Status().Restored; got != tt.restored {
				t.Errorf("restored from a snapshot = %v, want %v", got, tt.restored)
			}
			got := h.waitAlerts("device-failed", 4)
			want := "raised critical device-failed/t/d1 @0s; raised critical device-failed/t/d2 @0s; " +
				"resolved critical device-failed/t/d1 cleared@1m0s; raised critical device-failed/t/d3 @2m0s"
			if describe(got) != want {
				t.Errorf("ALERTS\n got %s\nwant %s", describe(got), want)
			}
			// d2's alert is still known to be active: its recovery resolves it.
			seq = h.report("d2", "2", events.StatusCompleted, 60, at(3*time.Minute))
			r2.waitShadow(t, seq)
			got = h.waitAlerts("device-failed", 5)
			if len(got) != 5 || got[4].Key != "device-failed/t/d2" || got[4].State != events.AlertResolved {
				t.Errorf("ALERTS after d2 recovers: %s", describe(got))
			}
			if n := r2.svc.Status().Active; n != 1 {
				t.Errorf("%d active alerts, want 1 (d3)", n)
			}
		})
	}
}

func TestPoisonGoesToRejected(t *testing.T) {
	h := newHarness(t)
	r := h.start(Config{})
	tests := []struct {
		name   string
		data   []byte
		reason string
	}{
		{name: "not an envelope", data: []byte("{not json"), reason: "invalid event"},
		{name: "data of the wrong shape", data: []byte(`{"specversion":"1.0","id":"x1","source":"s","type":"io.otawatch.shadow.reported.v1","time":"2026-03-01T08:00:00Z","data":"nope"}`), reason: "decode io.otawatch.shadow.reported.v1 data of event x1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.js.Count(t, events.StreamRejected)
			seq := h.publishRaw(events.ShadowReportedSubject("t", "x"), tt.data, "")
			r.waitShadow(t, seq)
			testutil.Eventually(t, 10*time.Second, func() bool { return h.js.Count(t, events.StreamRejected) > before }, "nothing on REJECTED")
			msgs := h.js.Events(t, events.StreamRejected)
			m := msgs[len(msgs)-1]
			ev, err := events.Decode(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			var d events.RejectedData
			if err := ev.DecodeData(&d); err != nil {
				t.Fatal(err)
			}
			if m.Subject != "rejected.alerting" || d.Source != "alerting" || d.Stream != events.StreamShadow || d.StreamSeq != seq ||
				string(d.Raw) != string(tt.data) || !strings.Contains(d.Reason, tt.reason) ||
				d.Size != int64(len(tt.data)) || len(d.SHA256) != 64 {
				t.Errorf("rejected %s: %+v", m.Subject, d)
			}
		})
	}
	// The service goes on.
	seq := h.report("d1", "2", events.StatusFailed, 1, at(0))
	r.waitShadow(t, seq)
	h.waitAlerts("device-failed", 1)
}

// TestRestartResolvesATickAlertAfterTheSnapshot: a tick raised stale-shadow
// for a device that never reported (so no presence event records it) after
// the last snapshot, then the service crashed. Replaying SHADOW cannot
// bring that alert back; folding ALERTS does, so the device's first report
// resolves it.
func TestRestartResolvesATickAlertAfterTheSnapshot(t *testing.T) {
	h := newHarness(t)
	r := h.startWith(Config{SnapshotInterval: time.Hour}, func(s *Service) { s.crashOnStop = true })
	h.targetD1(r)
	r.snapshot(t)
	r.tick(t, at(10*time.Minute+30*time.Second))
	h.waitAlerts("stale-shadow", 1)
	r.stop(t)

	r2 := h.start(Config{})
	if !r2.svc.Status().Restored || r2.svc.Status().Active != 1 {
		t.Fatalf("after restart: %+v, want restored with 1 active alert", r2.svc.Status())
	}
	seq := h.report("d1", "4.2.1", events.StatusInProgress, 0, at(12*time.Minute))
	r2.waitShadow(t, seq)
	got := h.waitAlerts("stale-shadow", 2)
	if len(got) != 2 || got[1].State != events.AlertResolved || got[1].Key != "stale-shadow/t/d1" {
		t.Errorf("stale-shadow = %s, want raised then resolved", describe(got))
	}
}

// TestStandbyTakesOver: two alerting instances on one log. One is active
// and raises the alert of a failed report; the other stands by and reads
// nothing. When the active one stops, the standby takes over from its
// snapshot, raises the next alert and does not raise the first again.
func TestStandbyTakesOver(t *testing.T) {
	h := newHarness(t)
	cfg := Config{LeaseTTL: 2 * time.Second}
	a := h.start(cfg)

	// The second instance: started without waiting for it to catch up,
	// since a standby does not.
	b := h.launch(cfg)
	testutil.Eventually(t, 10*time.Second, func() bool { return b.svc.Status().Standby },
		"second instance not standing by: %+v", b.svc.Status())

	seq := h.report("dev-1", "2.0.0", events.StatusFailed, 30, at(time.Minute))
	a.waitShadow(t, seq)
	h.waitAlerts("device-failed", 1)
	if st := b.svc.Status(); st.ShadowSeq != 0 || st.CaughtUp {
		t.Fatalf("the standby read the log: %+v", st)
	}

	a.stop(t)
	testutil.Eventually(t, 10*time.Second, func() bool { st := b.svc.Status(); return !st.Standby && st.CaughtUp },
		"standby did not take over: %+v", b.svc.Status())
	seq = h.report("dev-2", "2.0.0", events.StatusFailed, 30, at(2*time.Minute))
	b.waitShadow(t, seq)
	got := h.waitAlerts("device-failed", 2)
	time.Sleep(200 * time.Millisecond) // a repeated first alert would be published by now
	if got = h.alerts("device-failed"); len(got) != 2 {
		t.Fatalf("ALERTS after the takeover: %s, want one alert per device", describe(got))
	}
}
