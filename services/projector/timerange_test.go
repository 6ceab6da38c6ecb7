package projector

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// TestTimesOutsideDateTimeArePoison: an event whose time, or a report
// whose firmware timestamp, a ClickHouse DateTime cannot hold is poison with
// a reason naming the time and the range; ClickHouse would store it as
// 0000-00-00 00:00:00 with no error. A desired event with such a time
// still reaches the desired index.
func TestTimesOutsideDateTimeArePoison(t *testing.T) {
	y9999 := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	y1969 := time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC)
	last := time.Date(2106, 2, 7, 6, 28, 15, 999_999_999, time.UTC) // truncated to the last second DateTime holds
	const rng = "is outside what a ClickHouse DateTime holds (1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z)"

	reportAt := func(fwTime, evTime time.Time) published {
		p := report("gateway", "dev-1", "4.2.1", events.StatusCompleted, fwTime, 10, "")
		p.ev.Time = evTime
		return p
	}
	atTime := func(p published, at time.Time) published { p.ev.Time = at; return p }
	tests := []struct {
		name   string
		stream string
		p      published
		want   string // poison reason, "" to project
	}{
		{"report of year 9999", events.StreamShadow, reportAt(y9999, t0), "firmware timestamp 9999-12-31T23:59:59Z " + rng},
		{"report of 1969", events.StreamShadow, reportAt(y1969, t0), "firmware timestamp 1969-12-31T23:59:59Z " + rng},
		{"report without a timestamp", events.StreamShadow, reportAt(time.Time{}, t0), "firmware timestamp 0001-01-01T00:00:00Z " + rng},
		{"report stored in year 9999", events.StreamShadow, reportAt(t0, y9999), "event time 9999-12-31T23:59:59Z " + rng},
		{"report at the last second", events.StreamShadow, reportAt(last, last), ""},
		{"report at the first second", events.StreamShadow, reportAt(minTime, minTime), ""},
		{"desired of year 9999", events.StreamShadow, atTime(desired("gateway", "dev-1", "job-1", 1, "4.2.1", t0), y9999),
			"event time 9999-12-31T23:59:59Z " + rng},
		{"presence of 1969", events.StreamShadow, atTime(generic(events.DevicePresenceSubject("gateway", "dev-1"), events.TypeDevicePresence,
			events.SourceBridge, t0, events.DevicePresenceData{State: "online"}), y1969), "event time 1969-12-31T23:59:59Z " + rng},
		{"rollout event of year 9999", events.StreamRollout, atTime(otherStreams()[0], y9999), "event time 9999-12-31T23:59:59Z " + rng},
		{"alert of year 9999", events.StreamAlerts, atTime(otherStreams()[2], y9999), "event time 9999-12-31T23:59:59Z " + rng},
		{"notification of 1969", events.StreamNotify, atTime(otherStreams()[4], y1969), "event time 1969-12-31T23:59:59Z " + rng},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := tt.p.ev.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			it := &item{stream: tt.stream, seq: uint64(i + 1), subject: tt.p.subject, raw: raw}
			index := newDesiredIndex()
			project(it, index)
			if tt.want == "" {
				if it.kind == kindNone {
					t.Fatalf("poison: %s", it.poison)
				}
				if it.shadow.DeviceTime.Unix() != tt.p.ev.Time.Unix() {
					t.Errorf("device time %s, want %s", it.shadow.DeviceTime, tt.p.ev.Time)
				}
				return
			}
			if it.kind != kindNone || it.poison != tt.want {
				t.Fatalf("kind %d poison %q, want poison %q", it.kind, it.poison, tt.want)
			}
			if tt.p.ev.Type == events.TypeShadowDesired && index.size() != 1 {
				t.Errorf("the desired index holds %d events, want the poison one", index.size())
			}
		})
	}
}

// TestYear9999ReportRejected: a report with a year-9999 timestamp already
// in the log (stored before the bridge checked the window) is recorded on
// REJECTED with the reason, and shadow_events has no 0000-00-00 row.
func TestYear9999ReportRejected(t *testing.T) {
	e := newEnv(t)
	bad := report("gateway", "dev-9999", "4.2.1", events.StatusCompleted, time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), 10, "")
	bad.ev.Time = t0
	e.publish(report("gateway", "dev-1", "4.2.1", events.StatusCompleted, t0, 10, ""), bad,
		report("gateway", "dev-2", "4.2.1", events.StatusCompleted, t0, 10, ""))
	e.start(hooks{})
	c := e.conn()
	waitRows(t, c, 2, "SELECT count() FROM shadow_events FINAL")
	testutil_Eventually(t, func() bool { return e.js.Count(t, events.StreamRejected) == 1 }, "1 event on REJECTED")
	m := e.js.Events(t, events.StreamRejected)[0]
	ev, err := events.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	var d events.RejectedData
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		t.Fatal(err)
	}
	const want = "firmware timestamp 9999-12-31T23:59:59Z is outside what a ClickHouse DateTime holds (1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z)"
	if d.Stream != events.StreamShadow || d.StreamSeq != 2 || d.Reason != want {
		t.Errorf("rejected stream %s seq %d reason %q; want SHADOW 2 %q", d.Stream, d.StreamSeq, d.Reason, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if got := strings1(t, ctx, c, "SELECT concat(device_id, ' ', toString(device_time)) FROM shadow_events FINAL ORDER BY device_id"); len(got) != 2 ||
		got[0] != "dev-1 2025-07-22 11:00:00" || got[1] != "dev-2 2025-07-22 11:00:00" {
		t.Errorf("shadow_events rows %q, want dev-1 and dev-2 at 2025-07-22 11:00:00", got)
	}
}
