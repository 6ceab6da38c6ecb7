package projector

import (
	"context"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestStats: the live projector counts the rows ClickHouse accepted and
// the batches it wrote, by stream (what /metrics shows).
func TestStats(t *testing.T) {
	e := newEnv(t)
	e.publish(
		report("gateway", "dev-1", "4.2.1", events.StatusCompleted, t0, 100, ""),
		report("gateway", "dev-2", "4.2.1", events.StatusCompleted, t0, 100, ""),
		report("gateway", "dev-3", "4.2.1", events.StatusFailed, t0, 0, "E_FLASH"),
	)
	s, err := New(e.cfg, e.deps())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	// Three reports: three rows of shadow_events and three of
	// device_firmware (one device each), however they were batched.
	testutil.Eventually(t, 60*time.Second, func() bool { return s.Stats()[events.StreamShadow].Rows == 6 },
		"SHADOW rows never reached 6: %+v", s.Stats())
	st := s.Stats()[events.StreamShadow]
	if st.Batches < 1 || st.Batches > 3 || st.Rejected != 0 {
		t.Errorf("SHADOW stats %+v, want 1 to 3 batches and nothing rejected", st)
	}
	if st := s.Stats()[events.StreamRollout]; st != (StreamStats{}) {
		t.Errorf("ROLLOUT stats %+v, want zero", st)
	}
}
