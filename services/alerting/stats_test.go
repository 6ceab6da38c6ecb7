package alerting

import (
	"maps"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestStatusCountsAlerts: the alert events this process stored, by state
// and severity (what /metrics shows as otawatch_alerting_alerts_total).
func TestStatusCountsAlerts(t *testing.T) {
	h := newHarness(t)
	r := h.start(Config{})
	h.report("d1", "4.2.1", events.StatusFailed, 30, at(0))
	h.report("d2", "4.2.1", events.StatusFailed, 30, at(0))
	h.waitAlerts("device-failed", 2)
	seq := h.report("d1", "4.2.1", events.StatusCompleted, 60, at(time.Minute))
	r.waitShadow(t, seq)
	h.waitAlerts("device-failed", 3)
	want := map[string]uint64{"critical": 1}
	testutil.Eventually(t, 10*time.Second, func() bool { return maps.Equal(r.svc.Status().Resolved, want) },
		"resolved = %v, want %v", r.svc.Status().Resolved, want)
	// Two devices failed: two critical raises (success-rate-low may
	// raise and resolve too); every event on ALERTS is counted once.
	st := r.svc.Status()
	if st.Raised["critical"] < 2 {
		t.Errorf("raised = %v, want at least 2 critical", st.Raised)
	}
	var total uint64
	for _, m := range []map[string]uint64{st.Raised, st.Resolved} {
		for _, n := range m {
			total += n
		}
	}
	if got := uint64(len(h.alerts(""))); total != got {
		t.Errorf("raised %v and resolved %v: %d, but ALERTS holds %d events", st.Raised, st.Resolved, total, got)
	}
}
