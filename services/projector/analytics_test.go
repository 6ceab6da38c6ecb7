package projector

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// analyticsFixture is a job of two waves over eight devices, with retries,
// failures, a device still installing, one that never reports, and one
// outside the job.
func analyticsFixture() []published {
	const job = "job-2025-07"
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	var evs []published
	for i := 1; i <= 4; i++ {
		evs = append(evs, desired("gateway", fmt.Sprintf("dev-%02d", i), job, 1, "4.2.1", at(0)))
	}
	evs = append(evs,
		report("gateway", "dev-01", "4.2.1", events.StatusInProgress, at(1), 0, ""),
		report("gateway", "dev-01", "4.2.1", events.StatusCompleted, at(3), 100, ""),
		report("gateway", "dev-02", "4.2.1", events.StatusInProgress, at(1), 0, ""),
		report("gateway", "dev-02", "4.2.1", events.StatusFailed, at(2), 30, "E_CHECKSUM"),
		report("gateway", "dev-02", "4.2.1", events.StatusCompleted, at(5), 120, ""),
		report("gateway", "dev-03", "4.2.1", events.StatusCompleted, at(2), 90, ""),
		report("gateway", "dev-04", "4.2.1", events.StatusFailed, at(6), 300, "E_TIMEOUT"),
		report("gateway", "dev-04", "4.2.1", events.StatusFailed, at(12), 310, "E_TIMEOUT"),
	)
	for i := 5; i <= 8; i++ {
		evs = append(evs, desired("gateway", fmt.Sprintf("dev-%02d", i), job, 2, "4.2.1", at(20)))
	}
	evs = append(evs,
		report("gateway", "dev-05", "4.2.1", events.StatusCompleted, at(22), 110, ""),
		report("gateway", "dev-06", "4.2.1", events.StatusFailed, at(23), 40, "E_CHECKSUM"),
		report("gateway", "dev-07", "4.2.1", events.StatusInProgress, at(21), 0, ""),
		report("gateway", "dev-99", "4.1.5", events.StatusCompleted, at(24), 50, ""),
	)
	return evs
}

// historyOf is the expected device-history answer, from the fixture.
func historyOf(t *testing.T, evs []published, typeID, deviceID string) []string {
	want, _ := expectShadow(t, evs)
	var out []string
	for _, r := range want {
		if r.TypeID != typeID || r.DeviceID != deviceID {
			continue
		}
		out = append(out, strings.Join([]string{
			fmt.Sprint(r.Seq), r.EventTime.Format("2006-01-02 15:04:05"), r.DeviceTime.Format("2006-01-02 15:04:05"),
			r.Version, r.PreviousVersion, r.Status, strconv.FormatFloat(r.Duration, 'f', -1, 64), r.ErrorCode, r.JobID, fmt.Sprint(r.Wave),
		}, "\t"))
	}
	return out
}

// TestAnalyticsQueries runs every query of README.md on the fixture
// and checks its answer; then replays the log into the same database (every
// row written twice) and checks the answers did not change.
func TestAnalyticsQueries(t *testing.T) {
	e := newEnv(t)
	evs := analyticsFixture()
	e.publish(evs...)
	e.start(hooks{})
	c := e.conn()
	waitRows(t, c, 12, "SELECT count() FROM shadow_events FINAL")
	waitRows(t, c, 8, "SELECT count() FROM device_events FINAL")
	waitRows(t, c, uint64(len(evs)), "SELECT max(stream_seq) FROM device_firmware")

	tests := []struct {
		name string
		want []string
	}{
		{"success-rate", []string{
			"job-2025-07\t1\t3\t1\t0.75",
			"job-2025-07\t2\t1\t1\t0.5",
		}},
		{"duration", []string{
			"job-2025-07\t1\t3\t103.33\t120",
			"job-2025-07\t2\t1\t110\t110",
		}},
		{"failures-by-error-code", []string{
			"E_CHECKSUM\t2\t2",
			"E_TIMEOUT\t2\t1",
		}},
		{"not-on-target", []string{
			"gateway\tdev-04\t4.2.1\t4.2.1\tfailed",
			"gateway\tdev-06\t4.2.1\t4.2.1\tfailed",
			"gateway\tdev-07\t4.2.1\t4.2.1\tin_progress",
			"gateway\tdev-08\t4.2.1\t\t",
		}},
		{"device-history", historyOf(t, evs, "gateway", "dev-02")},
		{"fleet-versions", []string{
			"4.1.5\tcompleted\t1",
			"4.2.1\tcompleted\t4",
			"4.2.1\tfailed\t2",
			"4.2.1\tin_progress\t1",
		}},
	}
	queries := testutil.DocQueries(t, "../../README.md")
	var names []string
	for name := range queries {
		names = append(names, name)
	}
	sort.Strings(names)
	if len(names) != len(tests) {
		t.Errorf("README.md has queries %v; this test checks %d", names, len(tests))
	}
	if got := len(historyOf(t, evs, "gateway", "dev-02")); got != 3 {
		t.Fatalf("fixture: dev-02 has %d reports, want 3", got)
	}
	check := func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				q, ok := queries[tt.name]
				if !ok {
					t.Fatalf("README.md has no query %q", tt.name)
				}
				got := testutil.QueryRows(t, c, q)
				if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
					t.Errorf("answer:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
				}
			})
		}
	}
	t.Run("live", check)
	e.replay(ReplayOptions{})
	t.Run("after a replay into the same database", check)
}
