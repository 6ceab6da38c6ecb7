package notify

import (
	"fmt"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	silences "github.com/otawatch/otawatch/services/internal/silence"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// A device alert is one notification after group_wait, and nothing more
// while it does not change; its resolution is one resolved notification
// with the same group key.
func TestAlertDeliveredOnceThenResolvedOnce(t *testing.T) {
	h := newHarness(t)
	s, _ := h.start()
	a := deviceAlert("d1", "job1", t0)
	h.publishAlert(a)
	waitAlerts(t, s, 1)

	h.clock.Advance(9 * time.Second)
	waitIdle(t, s)
	if got := len(h.fake.Delivered()); got != 0 {
		t.Fatalf("delivered %d before group_wait, want 0", got)
	}
	h.clock.Advance(time.Second)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Delivered()) == 1 }, "no delivery after group_wait")
	waitIdle(t, s)
	for i := 0; i < 5; i++ { // group_interval ticks: nothing changed
		h.clock.Advance(time.Minute)
		waitIdle(t, s)
	}
	first := h.fake.Delivered()
	if len(first) != 1 {
		t.Fatalf("delivered %d notifications for one unchanged alert, want 1", len(first))
	}
	if n := first[0]; n.Status != StatusFiring || len(n.Alerts) != 1 || n.Alerts[0].DeviceID != "d1" || n.Receiver != "pd" {
		t.Fatalf("first notification = %+v, want firing d1 to pd", n)
	}

	h.publishAlert(resolved(a, h.clock.Now()))
	testutil.Eventually(t, 10*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, al := range s.d.alerts {
			return al.resolved
		}
		return false
	}, "resolution not read")
	for i := 0; i < 3; i++ {
		h.clock.Advance(time.Minute)
		waitIdle(t, s)
	}
	got := h.fake.Delivered()
	if len(got) != 2 {
		t.Fatalf("delivered %d notifications, want 2 (firing, resolved)", len(got))
	}
	if got[1].Status != StatusResolved || got[1].GroupKey != got[0].GroupKey {
		t.Fatalf("second notification: status %q key %q, want resolved with key %q", got[1].Status, got[1].GroupKey, got[0].GroupKey)
	}
	if n, want := h.countNotify(events.TypeNotifySent), 2; n != want {
		t.Fatalf("NOTIFY holds %d sent events, want %d", n, want)
	}
	if n, want := h.countNotify(events.TypeNotifyAttempt), 2; n != want {
		t.Fatalf("NOTIFY holds %d attempt events, want %d", n, want)
	}
}

// 200 devices failing in one wave are one notification that lists them.
func TestStormIsOneGroupedNotification(t *testing.T) {
	h := newHarness(t)
	s, _ := h.start()
	for i := 0; i < 200; i++ {
		h.publishAlert(deviceAlert(fmt.Sprintf("d%03d", i), "job1", t0.Add(time.Duration(i)*time.Millisecond)))
	}
	waitAlerts(t, s, 200)
	h.clock.Advance(10 * time.Second)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Delivered()) >= 1 }, "no delivery")
	waitIdle(t, s)
	h.clock.Advance(time.Minute)
	waitIdle(t, s)
	got := h.fake.Delivered()
	if len(got) != 1 {
		t.Fatalf("delivered %d notifications for 200 failures in one wave, want 1", len(got))
	}
	if n := len(got[0].Alerts); n != 200 {
		t.Fatalf("the notification lists %d alerts, want 200", n)
	}
	if got[0].GroupLabels[LabelJob] != "job1" || got[0].GroupLabels[LabelWave] != "1" || got[0].CommonLabels[LabelRule] != "device-failed" {
		t.Fatalf("group labels %v, common labels %v", got[0].GroupLabels, got[0].CommonLabels)
	}
}

// A receiver failing twice (retryable) and then answering gets the
// notification once, and NOTIFY records every attempt.
func TestRetriedUntilDeliveredOnce(t *testing.T) {
	h := newHarness(t)
	h.fake.fail = []Result{{Status: 503, Retry: true}, {Status: 502, Retry: true}}
	s, _ := h.start()
	h.publishAlert(deviceAlert("d1", "job1", t0))
	waitAlerts(t, s, 1)
	h.clock.Advance(10 * time.Second)
	for i := 0; i < 2; i++ {
		testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Calls()) == i+1 && s.retryWaits.Load() == 1 }, "no retry pending after failure %d", i+1)
		h.clock.Advance(2 * time.Second) // past retry_max (1s) with jitter
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Delivered()) == 1 }, "not delivered after two failures")
	waitIdle(t, s)
	h.clock.Advance(time.Minute)
	waitIdle(t, s)
	if n := len(h.fake.Delivered()); n != 1 {
		t.Fatalf("delivered %d times, want 1", n)
	}
	if n := len(h.fake.Calls()); n != 3 {
		t.Fatalf("%d calls, want 3", n)
	}
	for typ, want := range map[string]int{events.TypeNotifyAttempt: 3, events.TypeNotifyFailed: 2, events.TypeNotifySent: 1} {
		if n := h.countNotify(typ); n != want {
			t.Errorf("NOTIFY holds %d %s events, want %d", n, typ, want)
		}
	}
	var nd events.NotificationData
	if err := h.notifyEvents(events.TypeNotifySent)[0].DecodeData(&nd); err != nil {
		t.Fatal(err)
	}
	if nd.Attempt != 3 || nd.Code != 202 || nd.Answer == "" {
		t.Fatalf("sent event: attempt %d code %d answer %q, want attempt 3, code 202 and the answer", nd.Attempt, nd.Code, nd.Answer)
	}
}

// A 429 with Retry-After 2s is attempted again no sooner than 2s later,
// although the backoff alone would wait at most 1s.
func TestRetryAfterHonoured(t *testing.T) {
	h := newHarness(t)
	h.fake.fail = []Result{{Status: 429, Retry: true, RetryAfter: 2 * time.Second}}
	s, _ := h.start()
	h.publishAlert(deviceAlert("d1", "job1", t0))
	waitAlerts(t, s, 1)
	h.clock.Advance(10 * time.Second)
	testutil.Eventually(t, 10*time.Second, func() bool { return s.retryWaits.Load() == 1 }, "no retry pending after the 429")
	for i := 0; i < 30; i++ { // 3s in steps, so an early retry would show its time
		h.clock.Advance(100 * time.Millisecond)
		if len(h.fake.Calls()) == 2 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Delivered()) == 1 }, "not delivered after the 429")
	calls := h.fake.Calls()
	if gap := calls[1].at.Sub(calls[0].at); gap < 2*time.Second {
		t.Fatalf("second attempt %s after the 429, want at least the Retry-After 2s", gap)
	}
}

// Group by device, group_wait 0: a storm of 60 alerts is 60 notifications.
// The service is stopped the way a crash stops it (its context cancelled
// mid-storm) and restarted, and a third instance reads all of ALERTS and
// NOTIFY again: each group is delivered exactly once.
func TestRestartMidStormNoDuplicates(t *testing.T) {
	h := newHarness(t)
	h.cfg.Route.GroupBy = []string{LabelDevice}
	h.cfg.Route.GroupWait = dur(0)
	h.fake.delay = 3 * time.Millisecond
	s1, stop1 := h.start()
	const n = 60
	for i := 0; i < n; i++ {
		h.publishAlert(deviceAlert(fmt.Sprintf("d%03d", i), "job1", t0))
	}
	testutil.Eventually(t, 20*time.Second, func() bool { return len(h.fake.Delivered()) >= 10 }, "storm not under way")
	stop1()
	mid := len(h.fake.Delivered())
	if mid >= n {
		t.Logf("all %d delivered before the stop; the restart still must send none", mid)
	}
	_ = s1
	// The restart comes a minute later: a notification attempted before
	// it is still the one decided then (its Time, a receiver's
	// idempotency key, is unchanged).
	h.clock.Advance(time.Minute)

	s2, stop2 := h.start()
	testutil.Eventually(t, 30*time.Second, func() bool { return len(h.fake.Delivered()) >= n }, "after restart: %d of %d delivered", len(h.fake.Delivered()), n)
	waitIdle(t, s2)
	h.clock.Advance(5 * time.Minute)
	waitIdle(t, s2)
	stop2()

	s3, _ := h.start() // a full replay of ALERTS and NOTIFY
	h.clock.Advance(5 * time.Minute)
	waitIdle(t, s3)
	per := map[string]int{}
	for _, d := range h.fake.Delivered() {
		per[d.GroupKey]++
	}
	if len(per) != n {
		t.Fatalf("%d groups delivered, want %d", len(per), n)
	}
	for k, c := range per {
		if c != 1 {
			t.Errorf("group %s delivered %d times, want 1", k, c)
		}
	}
	decided := map[string]time.Time{}
	for _, c := range h.fake.Calls() {
		if at, ok := decided[c.n.GroupKey]; ok && !at.Equal(c.n.Time) {
			t.Errorf("group %s attempted as decided at %s and at %s, want one time", c.n.GroupKey, at, c.n.Time)
		}
		decided[c.n.GroupKey] = c.n.Time
	}
	t.Logf("delivered before the stop: %d, total calls %d", mid, len(h.fake.Calls()))
}

// A silence keeps matching alerts from the receiver (recorded as
// suppressed); once it is expired, the next alert goes through.
func TestSilenceSuppressesUntilExpired(t *testing.T) {
	h := newHarness(t)
	h.cfg.Route.GroupBy = []string{LabelDevice}
	s, _ := h.start()
	sil := events.SilenceData{ID: "s1", Matchers: []string{`job="job1"`}, StartsAt: t0, EndsAt: t0.Add(time.Hour),
		CreatedBy: "test", Comment: "maintenance"}
	ev, err := silences.CreatedEvent(sil, t0)
	if err != nil {
		t.Fatal(err)
	}
	h.publish(events.SilenceSubject(events.SilenceCreated), ev)
	testutil.Eventually(t, 10*time.Second, func() bool { return s.Status().Silences == 1 }, "silence not read")

	h.publishAlert(deviceAlert("d1", "job1", t0))
	waitAlerts(t, s, 1)
	h.clock.Advance(10 * time.Second)
	waitIdle(t, s)
	testutil.Eventually(t, 10*time.Second, func() bool { return h.countNotify(events.TypeNotifySuppressed) == 1 }, "no suppressed event")
	if n := len(h.fake.Calls()); n != 0 {
		t.Fatalf("%d deliveries of a silenced alert, want 0", n)
	}
	var sd events.SuppressedData
	if err := h.notifyEvents(events.TypeNotifySuppressed)[0].DecodeData(&sd); err != nil {
		t.Fatal(err)
	}
	if sd.Reason != events.SuppressedSilence || sd.SilenceID != "s1" || sd.DeviceID != "d1" {
		t.Fatalf("suppressed = %+v, want d1 by silence s1", sd)
	}

	ex, err := silences.ExpiredEvent(events.SilenceExpiredData{ID: "s1", At: h.clock.Now(), By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	h.publish(events.SilenceSubject(events.SilenceExpired), ex)
	testutil.Eventually(t, 10*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.d.silences["s1"].expired != nil
	}, "expiry not read")
	h.publishAlert(deviceAlert("d2", "job1", h.clock.Now()))
	waitAlerts(t, s, 2)
	h.clock.Advance(10 * time.Second)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Delivered()) == 1 }, "after expiry: the next alert (d2) not delivered")
	waitIdle(t, s)
	h.clock.Advance(time.Minute) // d1's group ticks: no longer silenced
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Delivered()) == 2 }, "after expiry: d1 not delivered at its group's tick")
	devs := map[string]bool{}
	for _, d := range h.fake.Delivered() {
		devs[d.Alerts[0].DeviceID] = true
	}
	if !devs["d1"] || !devs["d2"] {
		t.Fatalf("delivered devices %v, want d1 and d2", devs)
	}
}

// A critical success-rate-low of a job mutes that job's per-device
// warnings while it is raised, not another job's.
func TestInhibition(t *testing.T) {
	h := newHarness(t)
	h.cfg.Route.GroupBy = []string{"..."}
	s, _ := h.start()
	src := events.AlertData{Key: "success-rate-low/fleet", RuleID: "success-rate-low", Severity: "critical",
		State: events.AlertRaised, JobID: "job1", StartsAt: t0}
	warn := func(dev, job string) events.AlertData {
		return events.AlertData{Key: "duration-anomaly/gw/" + dev, RuleID: "duration-anomaly", Severity: "warning",
			State: events.AlertRaised, TypeID: "gw", DeviceID: dev, JobID: job, StartsAt: t0}
	}
	h.publishAlert(src)
	h.publishAlert(warn("d1", "job1"))
	h.publishAlert(warn("d2", "job2"))
	waitAlerts(t, s, 3)
	h.clock.Advance(10 * time.Second)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Delivered()) == 2 }, "want 2 deliveries, got %d", len(h.fake.Delivered()))
	waitIdle(t, s)
	got := map[string]bool{}
	for _, d := range h.fake.Delivered() {
		got[d.Alerts[0].Key] = true
	}
	if !got[src.Key] || !got["duration-anomaly/gw/d2"] || got["duration-anomaly/gw/d1"] {
		t.Fatalf("delivered %v, want the critical and job2's warning only", got)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return h.countNotify(events.TypeNotifySuppressed) == 1 }, "no suppressed event")

	// The source resolves: the warning goes through at the next tick.
	h.publishAlert(resolved(src, h.clock.Now()))
	testutil.Eventually(t, 10*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		al := s.d.alerts[events.NotifyAlertID(src)]
		return al == nil || al.resolved
	}, "resolution not read")
	h.clock.Advance(time.Minute)
	testutil.Eventually(t, 10*time.Second, func() bool {
		for _, d := range h.fake.Delivered() {
			if d.Alerts[0].Key == "duration-anomaly/gw/d1" {
				return true
			}
		}
		return false
	}, "job1's warning not delivered after the inhibiting alert resolved")
}

// A standby behind the lease takes over when the active instance stops,
// rebuilds from NOTIFY what was sent, re-sends nothing, and delivers what
// is new.
func TestStandbyTakesOverWithoutResending(t *testing.T) {
	h := newHarness(t)
	h.cfg.Route.GroupBy = []string{LabelDevice}
	active, stopActive := h.start()
	standby, _ := h.run()
	testutil.Eventually(t, 10*time.Second, func() bool { return standby.Status().Standby }, "second instance is not standing by")

	h.publishAlert(deviceAlert("d1", "job1", t0))
	waitAlerts(t, active, 1)
	h.clock.Advance(10 * time.Second)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Delivered()) == 1 }, "active instance did not deliver")
	waitIdle(t, active)

	stopActive()
	testutil.Eventually(t, 20*time.Second, func() bool { return standby.Status().CaughtUp }, "standby did not take over")
	if standby.Status().Standby {
		t.Fatal("the instance that took over still says standby")
	}
	h.clock.Advance(10 * time.Minute) // group_wait and group_intervals of the rebuilt group
	waitIdle(t, standby)
	if n := len(h.fake.Delivered()); n != 1 {
		t.Fatalf("after takeover %d deliveries, want still 1", n)
	}
	h.publishAlert(deviceAlert("d2", "job1", h.clock.Now()))
	waitAlerts(t, standby, 2)
	h.clock.Advance(10 * time.Second)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Delivered()) == 2 }, "new alert not delivered after takeover")
	if d := h.fake.Delivered()[1]; d.Alerts[0].DeviceID != "d2" {
		t.Fatalf("second delivery is about %s, want d2", d.Alerts[0].DeviceID)
	}
}

// A digest route notifies its group once a day at its time, with every
// alert of the period: those still firing and those that resolved.
func TestDigestOnceADay(t *testing.T) {
	h := newHarness(t)
	h.cfg.Route = &Route{Receiver: "pd", GroupBy: []string{}, DigestAt: "08:00", TimeZone: "UTC"}
	df := &digestFake{fakeNotifier: h.fake}
	h.cfg.Receivers[0].n = df
	s, _ := h.start()
	info := func(dev string) events.AlertData {
		return events.AlertData{Key: "version-mismatch/gw/" + dev, RuleID: "version-mismatch", Severity: "info",
			State: events.AlertRaised, TypeID: "gw", DeviceID: dev, StartsAt: t0}
	}
	h.publishAlert(info("d1"))
	h.publishAlert(info("d2"))
	h.publishAlert(resolved(info("d2"), t0.Add(time.Minute)))
	testutil.Eventually(t, 10*time.Second, func() bool { return s.Status().AlertsSeq == 3 }, "alerts not read")
	h.clock.Advance(21 * time.Hour) // 07:00 the next day
	waitIdle(t, s)
	if n := len(h.fake.Calls()); n != 0 {
		t.Fatalf("%d notifications before the digest time, want 0", n)
	}
	h.clock.Advance(time.Hour)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Delivered()) == 1 }, "no digest at 08:00")
	waitIdle(t, s)
	d := h.fake.Delivered()[0]
	if len(d.Alerts) != 2 || d.Status != StatusFiring {
		t.Fatalf("digest: status %s with %d alerts, want firing with d1 (firing) and d2 (resolved)", d.Status, len(d.Alerts))
	}
	if at := h.fake.Calls()[0].at; !at.Equal(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)) {
		t.Fatalf("digest sent at %s, want 08:00 the next day", at)
	}
	h.clock.Advance(24 * time.Hour)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(h.fake.Delivered()) == 2 }, "no second digest")
	if d := h.fake.Delivered()[1]; len(d.Alerts) != 1 || d.Alerts[0].DeviceID != "d1" {
		t.Fatalf("second digest lists %d alerts, want d1 only", len(d.Alerts))
	}
	df.mu.Lock()
	defer df.mu.Unlock()
	first := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	if len(df.sinces) != 2 || !df.sinces[0].IsZero() || !df.sinces[1].Equal(first) {
		t.Fatalf("digests rendered from %v, want the zero time then the first digest's %s", df.sinces, first)
	}
}
