package alerting

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestNewRefusesBadConfig: New applies the defaults, validates, and
// returns a *conf.Error with every problem under its key.
func TestNewRefusesBadConfig(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	deps := svc.Deps{NC: js.NC, JS: js.JS}
	tests := []struct {
		name string
		cfg  Config
		keys []string // nil: accepted
	}{
		{name: "defaults", cfg: Config{}},
		{name: "one problem", cfg: Config{EvalTimeout: time.Microsecond}, keys: []string{"alerting.eval_timeout"}},
		{
			name: "every problem at once",
			cfg: Config{
				RulesDir: t.TempDir() + "/missing", OfflineAfter: time.Millisecond, ReloadInterval: time.Millisecond,
				SnapshotInterval: time.Millisecond, SnapshotBucket: "a.b",
			},
			keys: []string{"alerting.offline_after", "alerting.reload_interval", "alerting.rules_dir",
				"alerting.snapshot_bucket", "alerting.snapshot_interval", "alerting.tick_interval"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, deps)
			if tt.keys == nil {
				if err != nil {
					t.Fatalf("New: %v, want nil", err)
				}
				return
			}
			var ce *conf.Error
			if !errors.As(err, &ce) {
				t.Fatalf("New: %v (%T), want a *conf.Error", err, err)
			}
			var keys []string
			for _, p := range ce.Problems {
				keys = append(keys, p.Key)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, tt.keys) {
				t.Errorf("problems under %q, want %q\n%v", keys, tt.keys, err)
			}
		})
	}
}

// TestTicksRunOnTheServiceClock: ticks are scheduled on svc.Deps.Clock,
// at multiples of tick_interval, and take their time from it: a device
// that owes a report and is silent for more than offline_after by that
// clock raises stale-shadow at the tick's time, with no Tick call.
func TestTicksRunOnTheServiceClock(t *testing.T) {
	h := newHarness(t)
	r := h.start(Config{TickInterval: 5 * time.Minute})
	h.targetD1(r)
	for n := 1; n <= 3; n++ {
		// The loop arms the next tick after each one: wait for it, so
		// every 5 minutes of the clock is one tick.
		testutil.Eventually(t, 10*time.Second, func() bool { return h.clock.Pending() == 1 }, "tick %d not armed", n)
		h.clock.Advance(5 * time.Minute)
		testutil.Eventually(t, 10*time.Second, func() bool { return r.svc.Status().Ticks == n },
			"ticks = %d after %d x 5m of the clock, want %d", r.svc.Status().Ticks, n, n)
	}
	// At 10m d1 has been silent for exactly offline_after; at 15m for
	// longer.
	got := h.waitAlerts("stale-shadow", 1)
	if len(got) != 1 || got[0].State != events.AlertRaised || got[0].Key != "stale-shadow/t/d1" || !got[0].Time.Equal(at(15*time.Minute)) {
		t.Errorf("stale-shadow = %s, want d1's raised at 15m0s", describe(got))
	}
}

// TestRestartRejectsAnAlertsMessageThatDoesNotDecode: the ALERTS fold of
// a restart goes through the consume loop, so a message there that does
// not decode is recorded on REJECTED with the reason, and the fold goes
// on to the alerts after it.
func TestRestartRejectsAnAlertsMessageThatDoesNotDecode(t *testing.T) {
	h := newHarness(t)
	r := h.startWith(Config{}, func(s *Service) { s.crashOnStop = true })
	seq := h.report("d1", "2", events.StatusFailed, 10, at(0))
	r.waitShadow(t, seq)
	h.waitAlerts("device-failed", 1)
	r.stop(t) // no snapshot: the restart folds ALERTS from the start
	bad := []byte("{not json")
	badSeq := h.publishRaw(events.AlertSubject(events.AlertRaised, "critical", "device-failed"), bad, "")
	h.publishRaw(events.AlertSubject(events.AlertRaised, "critical", "device-failed"), bad, "") // and one after it
	good := h.report("d2", "2", events.StatusFailed, 10, at(time.Minute))

	r2 := h.start(Config{})
	r2.waitShadow(t, good)
	msgs := h.js.Events(t, events.StreamRejected)
	if len(msgs) != 2 {
		t.Fatalf("REJECTED holds %d records, want the 2 bad ALERTS messages", len(msgs))
	}
	ev, err := events.Decode(msgs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	var d events.RejectedData
	if err := ev.DecodeData(&d); err != nil {
		t.Fatal(err)
	}
	if msgs[0].Subject != "rejected.alerting" || d.Stream != events.StreamAlerts || d.StreamSeq != badSeq ||
		string(d.Raw) != string(bad) || !strings.Contains(d.Reason, "decode event") {
		t.Errorf("rejected %s: %+v", msgs[0].Subject, d)
	}
	if st := r2.svc.Status(); st.Rejected != 2 {
		t.Errorf("Status().Rejected = %d, want 2", st.Rejected)
	}
	// The fold went on: d1's raise is known (not raised again), d2's is new.
	var raised []string
	for _, m := range h.js.Events(t, events.StreamAlerts) {
		if ev, err := events.Decode(m.Data); err == nil {
			var a events.AlertData
			if ev.DecodeData(&a) == nil && a.RuleID == "device-failed" {
				raised = append(raised, a.State+" "+a.DeviceID)
			}
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return r2.svc.Status().Active == 2 }, "active alerts %d, want 2", r2.svc.Status().Active)
	if want := []string{"raised d1"}; !slices.Equal(raised[:1], want) || slices.Contains(raised[1:], "raised d1") {
		t.Errorf("device-failed on ALERTS: %q, want d1 raised once", raised)
	}
}
