package alerting

import (
	"context"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
)

// step is one input of a recorded history.
type step struct {
	at      time.Time
	rollout string // rollout event name, or "" for a shadow event
	wave    int
	target  string
	dev     string
	desired string // desired version, for a desired event
	version string
	status  string
	dur     float64
}

// history is a rollout of 40 devices in two waves with failures, slow
// updates, a rollback, devices that go silent and devices that come back,
// over 40 minutes: every default rule fires and resolves in it.
func history() []step {
	rng := rand.New(rand.NewSource(7))
	sec := func(s int) time.Time { return at(time.Duration(s) * time.Second) }
	var out []step
	// A fleet that already runs 4.1.5.
	for i := 1; i <= 40; i++ {
		out = append(out, step{at: sec(3 + i), dev: fmt.Sprintf("dev-%d", i), version: "4.1.5", status: events.StatusCompleted, dur: 50 + float64(rng.Intn(20))})
	}
	out = append(out,
		step{at: sec(61), rollout: "job_created", target: "4.2.1"},
		step{at: sec(62), rollout: "job_started"},
		step{at: sec(63), rollout: "wave_started", wave: 1},
	)
	wave := func(start, first, last, w int) {
		for i := first; i <= last; i++ {
			dev := fmt.Sprintf("dev-%d", i)
			t := start + (i - first)
			out = append(out, step{at: sec(t), dev: dev, desired: "4.2.1", wave: w})
			switch {
			case i%13 == 0: // silent after the desired state: stale
			case i%7 == 0: // fails
				out = append(out, step{at: sec(t + 20), dev: dev, version: "4.2.1", status: events.StatusInProgress},
					step{at: sec(t + 90), dev: dev, version: "4.1.5", status: events.StatusFailed, dur: 80})
			case i%11 == 0: // completes on the old version: mismatch
				out = append(out, step{at: sec(t + 20), dev: dev, version: "4.2.1", status: events.StatusInProgress},
					step{at: sec(t + 100), dev: dev, version: "4.1.5", status: events.StatusCompleted, dur: 100})
			case i%5 == 0: // slow
				out = append(out, step{at: sec(t + 20), dev: dev, version: "4.2.1", status: events.StatusInProgress},
					step{at: sec(t + 400), dev: dev, version: "4.2.1", status: events.StatusCompleted, dur: 380})
			default:
				d := 60 + rng.Intn(40)
				out = append(out, step{at: sec(t + 20), dev: dev, version: "4.2.1", status: events.StatusInProgress},
					step{at: sec(t + 20 + d), dev: dev, version: "4.2.1", status: events.StatusCompleted, dur: float64(d)})
			}
		}
	}
	wave(65, 1, 20, 1)
	out = append(out, step{at: sec(900), rollout: "wave_started", wave: 2})
	wave(905, 21, 40, 2)
	// Failed devices retry and succeed; a silent one comes back.
	out = append(out,
		step{at: sec(1500), dev: "dev-7", version: "4.2.1", status: events.StatusCompleted, dur: 70},
		step{at: sec(1510), dev: "dev-14", version: "4.2.1", status: events.StatusCompleted, dur: 75},
		step{at: sec(1520), dev: "dev-13", version: "4.2.1", status: events.StatusInProgress},
		step{at: sec(1530), dev: "dev-11", version: "4.2.1", status: events.StatusInProgress},
		// A slow device's next update is normal. (Silence does not resolve
		// its duration-anomaly: it finished, so it is idle, not offline.)
		step{at: sec(1540), dev: "dev-5", version: "4.2.1", status: events.StatusInProgress},
		step{at: sec(1600), dev: "dev-5", version: "4.2.1", status: events.StatusCompleted, dur: 60},
		step{at: sec(1700), rollout: "job_completed"},
	)
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// play publishes steps (as job1) to the running service r, ticking every
// tick of event time up to end; before each tick, beforeTick (if set) may
// act on the service. The service has handled every step and tick when it
// returns.
func (h *harness) play(r *running, steps []step, tick time.Duration, end time.Time, beforeTick func(time.Time)) {
	t := h.t
	t.Helper()
	next := 0
	var shadowSeq, rolloutSeq uint64
	for b := t0.Add(tick); !b.After(end); b = b.Add(tick) {
		for ; next < len(steps) && steps[next].at.Before(b); next++ {
			s := steps[next]
			switch {
			case s.rollout != "":
				rolloutSeq = h.rollout("job1", s.rollout, s.wave, s.target, s.at)
			case s.desired != "":
				shadowSeq = h.desired(s.dev, "job1", s.wave, s.desired, s.at)
			default:
				shadowSeq = h.report(s.dev, s.version, s.status, s.dur, s.at)
			}
			// Live, the two streams race; the history is recorded in one
			// order, so wait before switching streams.
			if next+1 < len(steps) && (steps[next+1].rollout != "") != (s.rollout != "") {
				r.waitShadow(t, shadowSeq)
				r.waitRollout(t, rolloutSeq)
			}
		}
		r.waitShadow(t, shadowSeq)
		r.waitRollout(t, rolloutSeq)
		if beforeTick != nil {
			beforeTick(b)
		}
		r.tick(t, b)
	}
	if next != len(steps) {
		t.Fatalf("published %d of %d steps", next, len(steps))
	}
}

// TestBacktestGivesTheLiveAlerts runs the live service over a history
// (ticking every 30 s of event time), then backtests the same rules over
// what the log recorded, and compares alert for alert.
func TestBacktestGivesTheLiveAlerts(t *testing.T) {
	const tick = 30 * time.Second
	h := newHarness(t)
	r := h.start(Config{TickInterval: tick})
	end := at(45 * time.Minute)
	h.play(r, history(), tick, end, nil)
	// The presence events the live ticks published are read back too.
	r.waitShadow(t, h.js.Count(t, events.StreamShadow))
	live := h.alerts("")
	r.stop(t)

	set, err := rules.LoadDefaults()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	trs, _, err := ruleeval.Backtest(ctx, h.js.JS, set, ruleeval.BacktestOptions{TickInterval: tick, To: end, OfflineAfter: 10 * time.Minute})
	if err != nil {
		t.Fatalf("backtest: %v", err)
	}
	var liveLines, backLines []string
	fired := map[string]bool{}
	for _, a := range live {
		liveLines = append(liveLines, fmt.Sprintf("%s %s %s %s", a.ID, a.Time.Sub(t0), a.Key, a.Message))
		fired[a.RuleID+" "+a.State] = true
	}
	for _, tr := range trs {
		backLines = append(backLines, fmt.Sprintf("%s %s %s %s", tr.ID(), tr.At.Sub(t0), tr.Alert.Key, tr.Alert.Message))
	}
	if strings.Join(liveLines, "\n") != strings.Join(backLines, "\n") {
		t.Errorf("backtest differs from live\nlive (%d):\n%s\nbacktest (%d):\n%s", len(liveLines), strings.Join(liveLines, "\n"),
			len(backLines), strings.Join(backLines, "\n"))
	}
	// The history is only a good test if it exercises every rule.
	for _, id := range set.IDs() {
		for _, state := range []string{events.AlertRaised, events.AlertResolved} {
			if !fired[id+" "+state] {
				t.Errorf("the history never %s %s", state, id)
			}
		}
	}
}
