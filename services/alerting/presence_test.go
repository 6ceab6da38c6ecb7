package alerting

import (
	"fmt"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// brokerPresence publishes what the bridge stores from a device's presence
// topic (its will "offline", or "online" on connect).
func (h *harness) brokerPresence(dev, state string, when time.Time) uint64 {
	h.t.Helper()
	ev, err := events.New(events.PresenceMessageID("t", dev, state, when), events.SourceBridge, events.TypeDevicePresence,
		events.DevicePresenceSubject("t", dev), when, events.DevicePresenceData{TypeID: "t", DeviceID: dev, State: state})
	if err != nil {
		h.t.Fatal(err)
	}
	return h.publish(events.DevicePresenceSubject("t", dev), ev)
}

// A rollout's 20 devices finish (17 completed, 3 failed: 85%, critical)
// and then say nothing for a day, as devices that report on change do.
// Hourly ticks write no presence event, raise no stale-shadow, and the
// rate stays over all 20: the critical alert is neither resolved nor
// changed.
func TestFinishedFleetSilentForADay(t *testing.T) {
	h := newHarness(t)
	r := h.start(Config{})
	h.rollout("j1", "job_created", 0, "4.2.1", at(0))
	h.rollout("j1", "job_started", 0, "", at(0))
	rseq := h.rollout("j1", "wave_started", 1, "", at(0))
	var seq uint64
	for i := 1; i <= 20; i++ {
		dev := fmt.Sprintf("d%02d", i)
		h.desired(dev, "j1", 1, "4.2.1", at(0))
		h.report(dev, "4.2.1", events.StatusInProgress, 0, at(time.Minute))
		if i <= 3 {
			seq = h.report(dev, "4.1.5", events.StatusFailed, 90, at(3*time.Minute))
		} else {
			seq = h.report(dev, "4.2.1", events.StatusCompleted, 120, at(3*time.Minute))
		}
	}
	r.waitShadow(t, seq)
	r.waitRollout(t, rseq)
	for hour := 1; hour <= 24; hour++ {
		r.tick(t, at(time.Duration(hour)*time.Hour))
	}
	if got := h.shadowEvents(events.TypeDevicePresence); len(got) != 0 {
		t.Errorf("%d presence events for a finished fleet silent for a day, want 0", len(got))
	}
	if got := h.alerts("stale-shadow"); len(got) != 0 {
		t.Errorf("stale-shadow for finished devices: %s", describe(got))
	}
	got := h.alerts("success-rate-low")
	if len(got) != 1 || got[0].State != events.AlertRaised || got[0].Severity != "critical" || got[0].Value == nil || *got[0].Value != 0.85 {
		t.Fatalf("success-rate-low = %s, want one critical raise at 85%% that a silent day does not resolve", describe(got))
	}
	if n := r.svc.Status().Active; n != 4 {
		t.Errorf("%d alerts active after the day, want the rate alert and 3 device-failed", n)
	}
}

// A device sent a desired state (a retry after its failure) that stays
// silent for 10 minutes is potentially offline: one presence event, and
// it leaves the rate. Its next report brings it back, and its next
// failure counts again.
func TestDeviceSilentAfterADeltaLeavesTheRateUntilItReports(t *testing.T) {
	h := newHarness(t)
	r := h.start(Config{})
	for i := 1; i <= 19; i++ {
		h.report(fmt.Sprintf("ok-%d", i), "2", events.StatusCompleted, 60, at(0))
	}
	h.report("bad-1", "1", events.StatusFailed, 10, at(0))
	h.report("bad-2", "1", events.StatusFailed, 10, at(0))
	seq := h.desired("bad-1", "j1", 1, "2", at(time.Minute))
	r.waitShadow(t, seq)
	h.waitAlerts("success-rate-low", 1) // 19/21: warning

	r.tick(t, at(10*time.Minute+30*time.Second)) // quiet for 9m30s since its desired state
	if got := h.shadowEvents(events.TypeDevicePresence); len(got) != 0 {
		t.Fatalf("presence events before 10 minutes of silence: %d", len(got))
	}
	r.tick(t, at(11*time.Minute+30*time.Second))
	pres := h.shadowEvents(events.TypeDevicePresence)
	if len(pres) != 1 || pres[0].Subject != events.DevicePresenceSubject("t", "bad-1") || pres[0].Source != events.SourceAlerting {
		t.Fatalf("presence events %+v, want one potentially_offline for bad-1", pres)
	}
	// 19/20 = 95%: resolved at the tick.
	rate := h.waitAlerts("success-rate-low", 2)
	if rate[1].State != events.AlertResolved || !rate[1].Time.Equal(at(11*time.Minute+30*time.Second)) {
		t.Fatalf("success-rate-low = %s, want resolved at 11m30s", describe(rate))
	}
	r.tick(t, at(20*time.Minute))
	if got := h.shadowEvents(events.TypeDevicePresence); len(got) != 1 {
		t.Errorf("%d presence events after another tick, want 1: one per transition", len(got))
	}

	// Back with its next report; a failure counts in the rate again.
	h.report("bad-1", "2", events.StatusInProgress, 0, at(21*time.Minute))
	seq = h.report("bad-1", "1", events.StatusFailed, 30, at(22*time.Minute))
	r.waitShadow(t, seq)
	rate = h.waitAlerts("success-rate-low", 3)
	if rate[2].State != events.AlertRaised || !rate[2].Time.Equal(at(22*time.Minute)) {
		t.Errorf("success-rate-low = %s, want raised again at 22m", describe(rate))
	}
	r.tick(t, at(24*time.Hour))
	if got := h.shadowEvents(events.TypeDevicePresence); len(got) != 1 {
		t.Errorf("%d presence events a day later, want 1", len(got))
	}
}

// A device whose will the broker publishes is offline at once, without a
// tick, and leaves the rate; "online" brings it back. While the broker
// says it is online, silence does not make it potentially offline.
func TestWillMessageTakesADeviceOfflineAtOnce(t *testing.T) {
	h := newHarness(t)
	r := h.start(Config{})
	for i := 1; i <= 19; i++ {
		h.report(fmt.Sprintf("ok-%d", i), "2", events.StatusCompleted, 60, at(0))
	}
	h.report("bad-1", "1", events.StatusFailed, 10, at(0))
	h.brokerPresence("bad-2", events.PresenceOnline, at(0))
	seq := h.report("bad-2", "1", events.StatusFailed, 10, at(0))
	r.waitShadow(t, seq)
	h.waitAlerts("success-rate-low", 1) // 19/21: warning

	seq = h.brokerPresence("bad-2", events.PresenceOffline, at(5*time.Minute))
	r.waitShadow(t, seq)
	rate := h.waitAlerts("success-rate-low", 2)
	if rate[1].State != events.AlertResolved || !rate[1].Time.Equal(at(5*time.Minute)) {
		t.Fatalf("success-rate-low = %s, want resolved by the will at 5m", describe(rate))
	}
	seq = h.brokerPresence("bad-2", events.PresenceOnline, at(8*time.Minute))
	r.waitShadow(t, seq)
	rate = h.waitAlerts("success-rate-low", 3)
	if rate[2].State != events.AlertRaised || !rate[2].Time.Equal(at(8*time.Minute)) {
		t.Errorf("success-rate-low = %s, want raised again when it is online at 8m", describe(rate))
	}

	// Sent a desired state while the broker says it is online, and silent
	// for an hour: no guess from silence.
	seq = h.desired("bad-2", "j1", 1, "2", at(9*time.Minute))
	r.waitShadow(t, seq)
	r.tick(t, at(time.Hour))
	for _, ev := range h.shadowEvents(events.TypeDevicePresence) {
		if ev.Source == events.SourceAlerting {
			t.Errorf("alerting wrote presence event %s for a device the broker says is online", ev.Subject)
		}
	}
}
