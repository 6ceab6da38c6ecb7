package notify

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	silences "github.com/otawatch/otawatch/services/internal/silence"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// refusingNotifier fails the test if anything calls it: a replay sends
// nothing.
type refusingNotifier struct{ t *testing.T }

func (r refusingNotifier) Notify(_ context.Context, n *Notification) (Result, error) {
	r.t.Errorf("the replay called receiver %s for group %s", n.Receiver, n.GroupKey)
	return Result{}, nil
}

// TestReplayDecidesWhatWasRecorded runs the live service on the fake
// clock through a failing wave (grouped, paced by group_wait and
// group_interval), a silence, an inhibition and the resolves, then replays
// ALERTS and the silences through the same configuration on the events'
// times: it decides exactly the notifications and suppressions NOTIFY
// records, calling no receiver. Without the inhibition rule, the replay
// names the notification and the suppression that differ.
func TestReplayDecidesWhatWasRecorded(t *testing.T) {
	h := newHarness(t)
	s, stop := h.start()
	sil := events.SilenceData{ID: "s1", Matchers: []string{`device="d9"`}, StartsAt: t0, EndsAt: t0.Add(time.Hour), CreatedBy: "test"}
	ev, err := silences.CreatedEvent(sil, t0)
	if err != nil {
		t.Fatal(err)
	}
	h.publish(events.SilenceSubject(events.SilenceCreated), ev)
	testutil.Eventually(t, 10*time.Second, func() bool { return s.Status().Silences == 1 }, "silence not read")

	// alerts counts the ALERTS events published; publish waits until the
	// service has read them.
	alerts := 0
	publish := func(as ...events.AlertData) []events.AlertData {
		for _, a := range as {
			h.publishAlert(a)
		}
		alerts += len(as)
		testutil.Eventually(t, 10*time.Second, func() bool { return s.Status().AlertsSeq == uint64(alerts) }, "ALERTS not read to %d", alerts)
		return as
	}
	// step moves the clock and waits until what it started is recorded.
	step := func(d time.Duration) {
		h.clock.Advance(d)
		waitIdle(t, s)
	}
	h.clock.Advance(time.Second)
	wave := publish(deviceAlert("d1", "job1", h.clock.Now()), deviceAlert("d2", "job1", h.clock.Now()), deviceAlert("d9", "job1", h.clock.Now()))
	step(10 * time.Second) // group_wait: [d1 d2], d9 silenced
	h.clock.Advance(20 * time.Second)
	wave = append(wave, publish(deviceAlert("d3", "job1", h.clock.Now()))...)
	step(40 * time.Second) // group_interval: [d1 d2 d3]
	h.clock.Advance(9 * time.Second)
	publish(resolved(wave[0], h.clock.Now()))
	step(time.Minute) // d1 resolved
	srl := events.AlertData{Key: "success-rate-low/fleet", RuleID: "success-rate-low", Severity: "critical", State: events.AlertRaised,
		JobID: "job1", Message: "fleet success rate 80%", StartsAt: h.clock.Now()}
	slow := events.AlertData{Key: "duration-anomaly/gw/d5", RuleID: "duration-anomaly", Severity: "warning", State: events.AlertRaised,
		TypeID: "gw", DeviceID: "d5", JobID: "job1", Wave: 1, Message: "d5 slow", StartsAt: h.clock.Now()}
	publish(srl, slow)
	step(10 * time.Second) // success-rate-low notified, d5 inhibited
	h.clock.Advance(10 * time.Second)
	for _, a := range []events.AlertData{wave[1], wave[2], wave[3], srl, slow} {
		publish(resolved(a, h.clock.Now()))
	}
	for range 3 {
		step(time.Minute)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		st := s.Status()
		return st.Attempts > 0 && st.Attempts == st.Sent && st.Suppressed == 2
	}, "deliveries not recorded: %+v", s.Status())
	end := h.clock.Now()
	stop()
	sent := h.notifyEvents(events.TypeNotifySent)
	if len(sent) < 5 {
		t.Fatalf("the live run sent %d notifications, want the wave's, the resolves' and success-rate-low's", len(sent))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := h.cfg
	cfg.Receivers = []*testReceiver{{Name: "pd", n: refusingNotifier{t}}}
	res, err := Replay(ctx, h.js.JS, cfg, testLog(t), ReplayOptions{From: t0, To: end, EventTime: true})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if !res.Diff.Same() || res.Diff.Matched != len(sent) || len(res.Notifications) != len(sent) || res.Diff.SuppressedMatched != 2 {
		t.Errorf("replay: %d of %d sent matched, %d decided, %d of 2 suppressions; missing %d, extra %d, different %d, suppressed missing %d, extra %d",
			res.Diff.Matched, len(sent), len(res.Notifications), res.Diff.SuppressedMatched,
			len(res.Diff.Missing), len(res.Diff.Extra), len(res.Diff.Different), len(res.Diff.SuppressedMissing), len(res.Diff.SuppressedExtra))
	}
	for _, n := range res.Notifications {
		t.Logf("decided at +%s: %s %s", n.Data.DecidedAt.Sub(t0), n.Kind(), n.Text)
		if n.Outcome != OutcomeSent || !strings.Contains(n.Text, strings.ToUpper(n.Data.Status)) {
			t.Errorf("decided %s %s: outcome %q, text %q", n.Data.GroupKey, n.Data.Status, n.Outcome, n.Text)
		}
	}
	if res.Alerts != alerts || res.Silences != 1 {
		t.Errorf("replayed %d alert events and %d silences, want %d and 1", res.Alerts, res.Silences, alerts)
	}

	// Without inhibition d5's warning is notified, not suppressed.
	cfg.InhibitRules = []InhibitRule{}
	res, err = Replay(ctx, h.js.JS, cfg, testLog(t), ReplayOptions{From: t0, To: end, EventTime: true})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if res.Diff.Same() || len(res.Diff.SuppressedMissing) != 1 || res.Diff.SuppressedMissing[0].Data.Reason != events.SuppressedInhibited ||
		res.Diff.SuppressedMissing[0].Data.DeviceID != "d5" {
		t.Fatalf("replay without inhibition: suppressed missing %+v, want d5's inhibition", res.Diff.SuppressedMissing)
	}
	named := false
	for _, x := range res.Diff.Extra {
		named = named || strings.Contains(x.Text, "duration-anomaly/gw/d5")
	}
	if !named || len(res.Diff.Missing) != 0 {
		t.Errorf("replay without inhibition: extra %d (naming d5: %v), missing %d; want d5's notifications extra only",
			len(res.Diff.Extra), named, len(res.Diff.Missing))
	}
}
