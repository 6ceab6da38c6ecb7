package alerting

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// rulesLoaded reads the rule sets recorded on ALERTS.
func (h *harness) rulesLoaded() []events.RulesLoadedData {
	h.t.Helper()
	var out []events.RulesLoadedData
	for _, m := range h.js.Events(h.t, events.StreamAlerts) {
		if m.Subject != events.SubjectRulesLoaded {
			continue
		}
		ev, err := events.Decode(m.Data)
		if err != nil {
			h.t.Fatal(err)
		}
		d, err := events.DecodeRulesLoaded(ev)
		if err != nil {
			h.t.Fatalf("ALERTS seq %d: %v", m.Sequence, err)
		}
		out = append(out, d)
	}
	return out
}

func names(as []ruleeval.RecordedAlert) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Alert.State+" "+a.Alert.Key)
	}
	return out
}

// TestReplayGivesTheRecordedAlerts runs the live service over a rollout
// with failures, silent and slow devices (every default rule fires and
// resolves), from a rules directory whose device-failed message is changed
// half way (a reload). Replaying the recorded history through the rule
// sets recorded on ALERTS gives every alert event exactly; it still does
// after the directory on disk is changed again; replaying with one rule set
// for the whole history (--rules) reports the alerts the reload changed,
// and a rules directory with a stricter success-rate-low threshold reports
// that alert's difference.
func TestReplayGivesTheRecordedAlerts(t *testing.T) {
	const tick = 30 * time.Second
	original, live, stricter := t.TempDir(), t.TempDir(), t.TempDir()
	testutil.WriteRules(t, original, "", "", "")
	testutil.WriteRules(t, live, "", "", "")
	testutil.WriteRules(t, stricter, "success-rate-low.yaml", "successRate < 0.95", "successRate < 0.99")

	h := newHarness(t)
	r := h.start(Config{TickInterval: tick, RulesDir: live})
	end := at(45 * time.Minute)
	reloadAt := at(900 * time.Second) // before wave 2
	h.play(r, history(), tick, end, func(b time.Time) {
		if !b.Equal(reloadAt) {
			return
		}
		testutil.WriteRules(t, live, "device-failed.yaml", "failed to update to", "FAILED the update to")
		r.svc.Reload()
		testutil.Eventually(t, 30*time.Second, func() bool { return r.svc.Status().Reloads >= 1 }, "the rules were not reloaded")
	})
	r.waitShadow(t, h.js.Count(t, events.StreamShadow))
	recorded := h.alerts("")
	r.stop(t)

	sets := h.rulesLoaded()
	if len(sets) != 2 || sets[0].Reason != events.RulesLoadedStart || sets[1].Reason != events.RulesLoadedReload ||
		sets[0].ShadowSeq != 0 || sets[1].ShadowSeq == 0 || sets[0].Dir != live ||
		!strings.Contains(sets[1].Files[0].Text+sets[1].Files[1].Text+sets[1].Files[2].Text, "FAILED the update to") {
		t.Fatalf("rules_loaded records: %+v, want the start's and the reload's", sets)
	}
	// A restart with the rules unchanged records nothing more.
	r = h.start(Config{TickInterval: tick, RulesDir: live})
	r.stop(t)
	if n := len(h.rulesLoaded()); n != 2 {
		t.Errorf("%d rules_loaded records after a restart with the same rules, want 2", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	replay := func(rulesDir string) *ruleeval.Comparison {
		t.Helper()
		c, err := Replay(ctx, h.js.JS, Config{TickInterval: tick}, ReplayOptions{From: t0, To: end, RulesDir: rulesDir})
		if err != nil {
			t.Fatalf("replay (rules %q): %v", rulesDir, err)
		}
		return c
	}

	// The directory on disk now holds other rules: the replay runs the
	// recorded ones all the same.
	testutil.WriteRules(t, live, "", "", "")
	c := replay("")
	if !c.Diff.Same() || c.Diff.Matched != len(recorded) || len(c.Recorded) != len(recorded) {
		t.Errorf("replay with the recorded rules: %d matched of %d recorded, missing %q, extra %d, different %d",
			c.Diff.Matched, len(recorded), names(c.Diff.Missing), len(c.Diff.Extra), len(c.Diff.Different))
		for _, d := range c.Diff.Different {
			t.Logf("different %s: %s", d.Recorded.Alert.Key, strings.Join(d.Fields, "; "))
		}
	}
	if len(c.RuleSets) != 2 {
		t.Errorf("the replay ran %d recorded rule sets, want 2", len(c.RuleSets))
	}

	// One rule set for the whole history: the device-failed alerts
	// raised after the reload differ, by their message, and nothing else.
	c = replay(original)
	if c.Diff.Same() {
		t.Fatal("replaying the first rule set over the whole history found no difference")
	}
	if len(c.Diff.Missing)+len(c.Diff.Extra) > 0 {
		t.Errorf("the first rule set: missing %q, extra %d: want only different messages", names(c.Diff.Missing), len(c.Diff.Extra))
	}
	for _, d := range c.Diff.Different {
		if d.Recorded.Alert.RuleID != "device-failed" || d.Recorded.Time.Before(reloadAt) ||
			len(d.Fields) != 1 || !strings.HasPrefix(d.Fields[0], "message: ") || !strings.Contains(d.Fields[0], "FAILED the update to") {
			t.Errorf("the first rule set: %s at %s differs in %q, want only the message of a device-failed raised after the reload",
				d.Recorded.Alert.Key, d.Recorded.Time.Sub(t0), d.Fields)
		}
	}

	// A stricter success-rate-low: that alert differs.
	c = replay(stricter)
	if c.Diff.Same() {
		t.Fatal("replaying a stricter success-rate-low found no difference")
	}
	seen := false
	for _, d := range c.Diff.Different {
		seen = seen || d.Recorded.Alert.Key == "success-rate-low/fleet"
	}
	for _, tr := range c.Diff.Extra {
		seen = seen || tr.Alert.Key == "success-rate-low/fleet"
	}
	if !seen {
		t.Errorf("the stricter rules' differences do not name success-rate-low/fleet: missing %q, extra %d, different %d",
			names(c.Diff.Missing), len(c.Diff.Extra), len(c.Diff.Different))
	}
	for _, m := range c.Diff.Missing {
		if m.Alert.RuleID != "success-rate-low" {
			t.Errorf("the stricter rules miss %s", m.Alert.Key)
		}
	}
}
