package alerting

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
)

// TestRestartRestoresAlertsWhereTheyWereComputed: the service crashes
// (no final snapshot) after it raised device-failed for a device whose
// in_progress report came before its failed one. The restart must not
// replay that in_progress report under the alert raised later (which
// resolved the alert of a device still failed), must keep the alert's id
// (its recovery resolves it), and must publish what the crash lost: a
// whole turn's alert, or the second alert of a turn whose first one was
// stored.
func TestRestartRestoresAlertsWhereTheyWereComputed(t *testing.T) {
	// fleetOf reports n completed devices at 0s (success-rate-low needs
	// 20 finished devices).
	fleetOf := func(h *harness, n int) {
		for i := range n {
			h.report(fmt.Sprintf("ok%02d", i), "2", events.StatusCompleted, 60, at(0))
		}
	}
	// staleD1 has a tick raise stale-shadow for d1 at 10m30s.
	staleD1 := func(h *harness, r *running) {
		h.targetD1(r)
		r.tick(t, at(10*time.Minute+30*time.Second))
		h.waitAlerts("stale-shadow", 1)
	}
	tests := []struct {
		name string
		// before runs with the first instance, which then crashes.
		before func(h *harness, r *running)
		// lose is the alert event the crash lost (nil: none).
		lose func(ev events.Event) bool
		// down runs while no instance runs (nil: nothing).
		down func(h *harness)
		// after runs with the restarted instance; its last event's
		// alerts mark the end of ALERTS.
		after  func(h *harness) uint64
		want   string
		active int
	}{
		{
			name: "crash before any snapshot",
			before: func(h *harness, r *running) {
				h.report("d1", "2", events.StatusInProgress, 0, at(0))
				r.waitShadow(t, h.report("d1", "2", events.StatusFailed, 10, at(time.Minute)))
				h.waitAlerts("device-failed", 1)
			},
			// Reported while it is down: after the last recorded alert,
			// so its alert is published, not replayed silently.
			down: func(h *harness) { h.report("d3", "2", events.StatusFailed, 10, at(3*time.Minute)) },
			after: func(h *harness) uint64 {
				return h.report("d1", "2", events.StatusCompleted, 60, at(4*time.Minute))
			},
			want: "raised critical device-failed/t/d1 @1m0s; raised critical device-failed/t/d3 @3m0s; " +
				"resolved critical device-failed/t/d1 cleared@4m0s",
			active: 1,
		},
		{
			name: "crash after a snapshot older than the alert",
			before: func(h *harness, r *running) {
				r.waitShadow(t, h.report("d0", "2", events.StatusCompleted, 60, at(0)))
				r.snapshot(t)
				h.report("d1", "2", events.StatusInProgress, 0, at(30*time.Second))
				r.waitShadow(t, h.report("d1", "2", events.StatusFailed, 10, at(time.Minute)))
				h.waitAlerts("device-failed", 1)
			},
			after: func(h *harness) uint64 {
				return h.report("d1", "2", events.StatusCompleted, 60, at(4*time.Minute))
			},
			want:   "raised critical device-failed/t/d1 @1m0s; resolved critical device-failed/t/d1 cleared@4m0s",
			active: 0,
		},
		{
			name: "the crash lost a whole turn's alert",
			before: func(h *harness, r *running) {
				h.report("d1", "2", events.StatusFailed, 10, at(0))
				h.report("d2", "2", events.StatusInProgress, 0, at(0))
				h.waitAlerts("device-failed", 1)
				r.waitShadow(t, h.report("d2", "2", events.StatusFailed, 10, at(time.Minute)))
			},
			lose: func(ev events.Event) bool { return ev.Subject == "device-failed/t/d2" },
			after: func(h *harness) uint64 {
				return h.report("d1", "2", events.StatusCompleted, 60, at(4*time.Minute))
			},
			want: "raised critical device-failed/t/d1 @0s; raised critical device-failed/t/d2 @1m0s; " +
				"resolved critical device-failed/t/d1 cleared@4m0s",
			active: 1,
		},
		{
			// d20's failure raises device-failed and, as the 20th
			// finished device, success-rate-low (18 of 20 completed) in
			// one turn; the crash stored the first and lost the second.
			name: "the crash lost the second alert of a turn",
			before: func(h *harness, r *running) {
				fleetOf(h, 18)
				h.report("d19", "2", events.StatusFailed, 10, at(0))
				h.report("d20", "2", events.StatusInProgress, 0, at(0))
				r.waitShadow(t, h.report("d20", "2", events.StatusFailed, 10, at(time.Minute)))
				h.waitAlerts("device-failed", 2)
			},
			lose: func(ev events.Event) bool { return ev.Subject == "success-rate-low/fleet" },
			after: func(h *harness) uint64 {
				return h.report("d19", "2", events.StatusCompleted, 60, at(4*time.Minute))
			},
			want: "raised critical device-failed/t/d19 @0s; raised critical device-failed/t/d20 @1m0s; " +
				"raised warning success-rate-low/fleet @1m0s; " +
				"resolved critical device-failed/t/d19 cleared@4m0s; resolved warning success-rate-low/fleet cleared@4m0s",
			active: 1,
		},
		{
			// stale-shadow raised by a tick, which a replay of the log
			// does not compute again, then a later turn's alert.
			name: "a tick's alert before the last recorded turn",
			before: func(h *harness, r *running) {
				staleD1(h, r)
				h.report("d2", "2", events.StatusFailed, 10, at(11*time.Minute))
				h.waitAlerts("device-failed", 1)
			},
			after: func(h *harness) uint64 {
				return h.report("d1", "4.2.1", events.StatusInProgress, 0, at(12*time.Minute))
			},
			want: "raised warning stale-shadow/t/d1 @10m30s; raised critical device-failed/t/d2 @11m0s; " +
				"resolved warning stale-shadow/t/d1 cleared@12m0s",
			active: 1,
		},
		{
			name: "a tick's alert is the last recorded turn",
			before: func(h *harness, r *running) {
				staleD1(h, r)
			},
			// After the tick's position: published, not replayed silently.
			down: func(h *harness) { h.report("d3", "2", events.StatusFailed, 10, at(11*time.Minute)) },
			after: func(h *harness) uint64 {
				return h.report("d1", "4.2.1", events.StatusInProgress, 0, at(12*time.Minute))
			},
			want: "raised warning stale-shadow/t/d1 @10m30s; raised critical device-failed/t/d3 @11m0s; " +
				"resolved warning stale-shadow/t/d1 cleared@12m0s",
			active: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			r := h.startWith(Config{SnapshotInterval: time.Hour}, func(s *Service) {
				s.crashOnStop, s.loseAlert = true, tt.lose
			})
			tt.before(h, r)
			r.stop(t)
			if tt.down != nil {
				tt.down(h)
			}

			r2 := h.start(Config{})
			last := tt.after(h)
			r2.waitShadow(t, last)
			n := strings.Count(tt.want, ";") + 1
			got := h.waitAlerts("", n)
			if describe(got) != tt.want {
				t.Errorf("ALERTS\n got %s\nwant %s", describe(got), tt.want)
			}
			if a := r2.svc.Status().Active; a != tt.active {
				t.Errorf("%d active alerts, want %d", a, tt.active)
			}
		})
	}
}

// TestAlertEventsCarryTheirPosition: every alert event the rules cause
// says where in SHADOW and ROLLOUT it was computed and what the turn was;
// a restart places it by that.
func TestAlertEventsCarryTheirPosition(t *testing.T) {
	h := newHarness(t)
	r := h.start(Config{})
	_, rseq := h.targetD1(r)
	seq := h.report("d2", "2", events.StatusFailed, 10, at(0))
	r.waitShadow(t, seq)
	r.tick(t, at(10*time.Minute+30*time.Second)) // d1 is stale
	h.waitAlerts("stale-shadow", 1)
	h.waitAlerts("device-failed", 1)
	want := map[string]position{
		"device-failed/t/d2": {shadow: seq, rollout: rseq, cause: causeShadow},
		"stale-shadow/t/d1":  {shadow: seq, rollout: rseq, cause: causeTick},
	}
	for _, m := range h.js.Events(t, events.StreamAlerts) {
		ev, err := events.Decode(m.Data)
		if err != nil || ev.Type == events.TypeRulesLoaded {
			continue
		}
		p, err := positionOf(m.Header)
		if err != nil || p != want[ev.Subject] {
			t.Errorf("%s: position %+v (%v), want %+v", ev.Subject, p, err, want[ev.Subject])
		}
	}
}

func TestPositionOf(t *testing.T) {
	tests := []struct {
		name string
		hdr  nats.Header
		want position
		err  string
	}{
		{name: "written by the service", hdr: position{shadow: 7, rollout: 2, cause: causeTick}.header(),
			want: position{shadow: 7, rollout: 2, cause: causeTick}},
		{name: "none (stored before positions were)", hdr: nil},
		{name: "unknown cause", hdr: nats.Header{headerCause: {"cron"}}, err: `header Otawatch-Alert-Cause: unknown cause "cron"`},
		{name: "bad sequence", hdr: nats.Header{headerCause: {causeShadow}, headerShadowSeq: {"x"}, headerRolloutSeq: {"1"}},
			err: "header Otawatch-Shadow-Seq: "},
		{name: "missing sequence", hdr: nats.Header{headerCause: {causeShadow}, headerShadowSeq: {"3"}},
			err: "header Otawatch-Rollout-Seq: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := positionOf(tt.hdr)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
