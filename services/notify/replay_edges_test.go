package notify

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// publishRaw stores b on subject as it is, envelope or not.
func (h *harness) publishRaw(subject string, b []byte) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.js.JS.Publish(ctx, subject, b); err != nil {
		h.t.Fatalf("publish %s: %v", subject, err)
	}
}

// publishEvent stores an event of type typ with data on subject.
func (h *harness) publishEvent(subject, id, source, typ string, at time.Time, data any) {
	h.t.Helper()
	ev, err := events.New(id, source, typ, "test", at, data)
	if err != nil {
		h.t.Fatal(err)
	}
	h.publish(subject, ev)
}

// replayed replays h's log through h's configuration with receiver pd
// refusing any call, failing the test on an error.
func (h *harness) replayed(ctx context.Context, o ReplayOptions, route *Route) *ReplayResult {
	h.t.Helper()
	cfg := h.cfg
	cfg.Receivers = []*testReceiver{{Name: "pd", n: refusingNotifier{h.t}}}
	if route != nil {
		cfg.Route = route
	}
	res, err := Replay(ctx, h.js.JS, cfg, testLog(h.t), o)
	if err != nil {
		h.t.Fatalf("Replay: %v", err)
	}
	return res
}

// TestReplayTakesRecordedOutcomesAndCountsUnreadable records one
// notification refused for good (400) and one delivered after a
// retryable failure, then stores what Replay cannot use: a NOTIFY
// message that is no envelope, an attempt without a notification id, a
// suppression whose data does not decode, an ALERTS message that is no
// envelope and an alert the service refuses (no key). The replay
// decides both notifications with the outcome NOTIFY records (failed,
// sent), reads the attempts made, and counts the five as unreadable.
func TestReplayTakesRecordedOutcomesAndCountsUnreadable(t *testing.T) {
	h := newHarness(t)
	h.fake.fail = []Result{{Status: 400}, {Status: 503, Retry: true}}
	s, stop := h.start()
	h.clock.Advance(time.Second)
	h.publishAlert(deviceAlert("d1", "job1", h.clock.Now()))
	waitAlerts(t, s, 1)
	h.clock.Advance(10 * time.Second) // group_wait: job1 refused for good
	testutil.Eventually(t, 30*time.Second, func() bool { return s.Status().Failed == 1 }, "job1's refusal not recorded: %+v", s.Status())
	waitIdle(t, s)
	h.publishAlert(deviceAlert("d2", "job2", h.clock.Now()))
	waitAlerts(t, s, 2)
	h.clock.Advance(10 * time.Second) // group_wait: job2 fails, retryable
	testutil.Eventually(t, 30*time.Second, func() bool { return len(h.fake.Calls()) == 2 && s.retryWaits.Load() == 1 }, "no retry pending for job2")
	h.clock.Advance(2 * time.Second) // past retry_max (1s) with jitter
	testutil.Eventually(t, 30*time.Second, func() bool { return s.Status().Sent == 1 }, "job2 not delivered: %+v", s.Status())
	waitIdle(t, s)
	end := h.clock.Now()
	stop()

	h.publishRaw(events.NotifySubject("pd", events.NotifySent), []byte("not an event"))
	h.publishEvent(events.NotifySubject("pd", events.NotifyAttempt), "no-id", events.SourceNotify, events.TypeNotifyAttempt, end,
		events.NotificationData{Receiver: "pd", Attempt: 1})
	h.publishEvent(events.NotifySubject("pd", events.NotifySuppressed), "bad-suppressed", events.SourceNotify, events.TypeNotifySuppressed, end,
		"not an object")
	h.publishRaw(events.AlertSubject(events.AlertRaised, "critical", "device-failed"), []byte("{"))
	h.publishEvent(events.AlertSubject(events.AlertRaised, "critical", "device-failed"), "no-key", events.SourceAlerting, events.TypeAlertRaised, end,
		events.AlertData{State: events.AlertRaised, Severity: "critical", RuleID: "device-failed", StartsAt: end})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := h.replayed(ctx, ReplayOptions{From: t0, To: end, EventTime: true}, nil)
	if res.Unreadable != 5 || res.Alerts != 3 {
		t.Errorf("replay: %d unreadable and %d alert events, want 5 and 3 (the refused alert is replayed)", res.Unreadable, res.Alerts)
	}
	want := map[string]struct {
		outcome  string
		attempts int
	}{"job1": {OutcomeFailed, 1}, "job2": {OutcomeSent, 2}}
	jobOf := func(nd events.NotificationData) string {
		for job := range want {
			if strings.Contains(nd.GroupKey, job) {
				return job
			}
		}
		return nd.GroupKey
	}
	if len(res.Recorded) != len(want) {
		t.Fatalf("recorded %d notifications, want %d: %+v", len(res.Recorded), len(want), res.Recorded)
	}
	for _, r := range res.Recorded {
		if w := want[jobOf(r.Data)]; r.Outcome != w.outcome || r.Attempts != w.attempts {
			t.Errorf("recorded %s: outcome %q after %d attempts, want %q after %d", r.Data.GroupKey, r.Outcome, r.Attempts, w.outcome, w.attempts)
		}
	}
	if len(res.Notifications) != len(want) {
		t.Fatalf("decided %d notifications, want %d: %+v", len(res.Notifications), len(want), res.Notifications)
	}
	for _, n := range res.Notifications {
		if w := want[jobOf(n.Data)]; n.Outcome != w.outcome {
			t.Errorf("decided %s: outcome %q, want %q", n.Data.GroupKey, n.Outcome, w.outcome)
		}
	}
	if !res.Diff.Same() || res.Diff.Matched != len(want) {
		t.Errorf("diff: %d matched, want %d; %+v", res.Diff.Matched, len(want), res.Diff)
	}
}

// TestReplayClock replays two alerts of two jobs, one at +1s and one at
// +2m by their event times, stored a moment apart now. On stored times
// without bounds the clock starts at the first one and what is due at
// the last (group_wait 0) is decided, each notification at its alert's
// stored time. On event times from +5s to +1m the clock still starts at
// the first alert (the live service got it then), decides its group at
// +11s (group_wait 10s), and replays nothing after +1m.
func TestReplayClock(t *testing.T) {
	h := newHarness(t)
	h.publishAlert(deviceAlert("d1", "job1", t0.Add(time.Second)))
	h.publishAlert(deviceAlert("d2", "job2", t0.Add(2*time.Minute)))
	var stored []time.Time
	for _, m := range h.js.Events(t, events.StreamAlerts) {
		stored = append(stored, m.Time)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	now := *h.cfg.Route
	now.GroupWait = dur(0)
	res := h.replayed(ctx, ReplayOptions{}, &now)
	var decided []time.Time
	for _, n := range res.Notifications {
		decided = append(decided, n.Data.DecidedAt)
	}
	if res.Alerts != 2 || len(decided) != 2 || !decided[0].Equal(stored[0]) || !decided[1].Equal(stored[1]) {
		t.Errorf("stored times, no bounds: %d alerts, decided at %v; want 2, at the stored times %v", res.Alerts, decided, stored)
	}
	if len(res.Diff.Extra) != 2 {
		t.Errorf("stored times, no bounds: %d extra, want both (NOTIFY records none)", len(res.Diff.Extra))
	}

	res = h.replayed(ctx, ReplayOptions{From: t0.Add(5 * time.Second), To: t0.Add(time.Minute), EventTime: true}, nil)
	decided = decided[:0]
	for _, n := range res.Notifications {
		decided = append(decided, n.Data.DecidedAt)
	}
	if want := t0.Add(11 * time.Second); res.Alerts != 1 || len(decided) != 1 || !decided[0].Equal(want) {
		t.Errorf("event times +5s..+1m: %d alerts, decided at %v; want 1, at %v", res.Alerts, decided, want)
	}
}

// cancellingPreviewer cancels the replay's context when it renders.
type cancellingPreviewer struct {
	refusingNotifier
	cancel context.CancelFunc
}

func (c cancellingPreviewer) Preview(*Notification, bool, time.Time) (string, error) {
	c.cancel()
	return "cancelled", nil
}

// TestReplayErrors: a receiver that cannot be built, a context that ends
// while the inputs are handed to the service, and each stream missing
// end the replay with an error (naming the receiver or stream), and no
// result.
func TestReplayErrors(t *testing.T) {
	h := newHarness(t)
	for _, at := range []time.Duration{time.Second, 30 * time.Second, 40 * time.Second} {
		h.publishAlert(deviceAlert("d"+at.String(), "job1", t0.Add(at)))
	}
	replay := func(ctx context.Context, n Notifier) (*ReplayResult, error) {
		cfg := h.cfg
		cfg.Receivers = []*testReceiver{{Name: "pd", n: n}}
		return Replay(ctx, h.js.JS, cfg, testLog(t), ReplayOptions{EventTime: true})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if res, err := replay(ctx, nil); err == nil || !strings.Contains(err.Error(), `build receiver "pd"`) || res != nil {
		t.Errorf("no receiver: %v, %v; want the error building pd", res, err)
	}

	// The flush at +11s renders, and cancels, while the clock moves to
	// the alert at +30s: the alert at +40s is not handed over.
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	if res, err := replay(cctx, cancellingPreviewer{refusingNotifier{t}, ccancel}); !errors.Is(err, context.Canceled) || res != nil {
		t.Errorf("cancelled: %v, %v; want context.Canceled", res, err)
	}

	// A server with no streams: NOTIFY, read first, is missing; then
	// ALERTS.
	bare := testutil.StartJetStream(t, testutil.JetStreamOptions{NoStreams: true})
	for _, stream := range []string{events.StreamNotify, events.StreamAlerts} {
		cfg := h.cfg
		cfg.Receivers = []*testReceiver{{Name: "pd", n: refusingNotifier{t}}}
		if res, err := Replay(ctx, bare.JS, cfg, testLog(t), ReplayOptions{}); err == nil || !strings.Contains(err.Error(), stream) || res != nil {
			t.Errorf("no %s: %v, %v; want an error naming it", stream, res, err)
		}
		for _, sc := range events.StreamConfigs(events.StreamOptions{Replicas: 1}) {
			if sc.Name == stream {
				if _, err := bare.JS.CreateStream(ctx, sc); err != nil {
					t.Fatalf("create %s: %v", stream, err)
				}
			}
		}
	}
}
