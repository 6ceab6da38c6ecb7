package projector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// otherStreams are events of ROLLOUT, ALERTS and NOTIFY, with data shapes
// like the services' (the projector reads them leniently).
func otherStreams() []published {
	return []published{
		generic(events.RolloutSubject("job-1", "job_created"), events.TypeRolloutJobCreated, events.SourceRollout, t0,
			events.RolloutData{JobID: "job-1", Target: &events.DesiredFirmware{Version: "4.2.1"}}),
		generic(events.RolloutSubject("job-1", "wave_started"), events.TypeRolloutWaveStarted, events.SourceRollout, t0.Add(time.Minute),
			events.RolloutData{JobID: "job-1", Wave: 2}),
		generic(events.AlertSubject("raised", "critical", "device-failed"), events.TypeAlertRaised, events.SourceAlerting, t0.Add(2*time.Minute),
			events.AlertData{Key: "device-failed/gateway/dev-001", RuleID: "device-failed", Severity: "critical", State: "raised",
				TypeID: "gateway", DeviceID: "dev-001", JobID: "job-1", Wave: 2, Message: "failed", StartsAt: t0}),
		generic(events.AlertSubject("resolved", "critical", "device-failed"), events.TypeAlertResolved, events.SourceAlerting, t0.Add(3*time.Minute),
			map[string]any{"key": "device-failed/gateway/dev-001", "ruleId": "device-failed"}),
		generic(events.NotifySubject("pagerduty", "sent"), "io.otawatch.notify.sent.v1", events.SourceNotify, t0.Add(4*time.Minute),
			map[string]any{"receiver": "pagerduty", "dedupKey": "x"}),
		// Data that is not an object still projects: the columns read
		// from it stay empty and data keeps it as it is.
		generic(events.NotifySubject("slack", "failed"), "io.otawatch.notify.failed.v1", events.SourceNotify, t0.Add(5*time.Minute),
			[]int{1, 2}),
	}
}

// TestOtherStreamsProjected: one row per ROLLOUT, ALERTS and NOTIFY event,
// with the subject's tokens, the identifying data fields and the raw data.
func TestOtherStreamsProjected(t *testing.T) {
	e := newEnv(t)
	evs := otherStreams()
	e.start(hooks{})
	e.publish(evs...)
	c := e.conn()
	waitRows(t, c, 2, "SELECT count() FROM rollout_events FINAL")
	waitRows(t, c, 2, "SELECT count() FROM alerts FINAL")
	waitRows(t, c, 2, "SELECT count() FROM notifications FINAL")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{"rollout_events", "SELECT concat(toString(stream_seq), '|', event_id, '|', type, '|', source, '|', subject, '|', toString(event_time), '|', job_id, '|', event, '|', toString(wave), '|', data) FROM rollout_events FINAL ORDER BY stream_seq",
			[]string{
				row(1, evs[0], "2025-07-22 11:00:00", "job-1", "job_created", "0"),
				row(2, evs[1], "2025-07-22 11:01:00", "job-1", "wave_started", "2"),
			}},
		{"alerts", "SELECT concat(toString(stream_seq), '|', event_id, '|', type, '|', source, '|', subject, '|', toString(event_time), '|', state, '|', severity, '|', rule_id, '|', alert_key, '|', job_id, '|', type_id, '|', device_id, '|', data) FROM alerts FINAL ORDER BY stream_seq",
			[]string{
				row(1, evs[2], "2025-07-22 11:02:00", "raised", "critical", "device-failed", "device-failed/gateway/dev-001", "job-1", "gateway", "dev-001"),
				row(2, evs[3], "2025-07-22 11:03:00", "resolved", "critical", "device-failed", "device-failed/gateway/dev-001", "", "", ""),
			}},
		{"notifications", "SELECT concat(toString(stream_seq), '|', event_id, '|', type, '|', source, '|', subject, '|', toString(event_time), '|', receiver, '|', outcome, '|', data) FROM notifications FINAL ORDER BY stream_seq",
			[]string{
				row(1, evs[4], "2025-07-22 11:04:00", "pagerduty", "sent"),
				row(2, evs[5], "2025-07-22 11:05:00", "slack", "failed"),
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings1(t, ctx, c, tt.query)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("rows:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tt.want, "\n     "))
			}
		})
	}
}

// row is the expected '|'-joined row of a generic table: sequence, id,
// type, source, subject, time, the table's own columns, then the data.
func row(seq int, p published, at string, cols ...string) string {
	parts := append([]string{fmt.Sprint(seq), p.ev.ID, p.ev.Type, p.ev.Source, p.subject, at}, cols...)
	return strings.Join(append(parts, string(p.ev.Data)), "|")
}

// TestPoisonRejected: an event that cannot be decoded, and a row ClickHouse
// refuses, are recorded on REJECTED with the stream, sequence, raw bytes and
// reason; every other event of their batches is projected, and nothing is
// redelivered.
func TestPoisonRejected(t *testing.T) {
	e := newEnv(t)
	c := e.conn()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := Migrate(ctx, c); err != nil {
		t.Fatal(err)
	}
	// A real refusal by ClickHouse: the server computes this column for
	// every inserted row and throws for one device.
	if err := c.Exec(ctx, "ALTER TABLE shadow_events ADD COLUMN guard UInt8 DEFAULT throwIf(device_id = 'dev-poison')"); err != nil {
		t.Fatal(err)
	}
	var evs []published
	for i := 0; i < 40; i++ {
		dev := fmt.Sprintf("dev-%d", i%4)
		if i == 17 {
			dev = "dev-poison"
		}
		evs = append(evs, report("gateway", dev, "4.2.1", events.StatusCompleted, t0.Add(time.Duration(i)*time.Second), 10, ""))
	}
	broken := report("gateway", "dev-9", "4.2.1", events.StatusCompleted, t0, 1, "")
	broken.raw = []byte(`{"specversion":"1.0","id":"x"`) // cut short
	evs[29] = broken
	e.cfg.BatchSize = 1000 // one batch: bisection has to find the row
	e.cfg.BatchTimeout = 300 * time.Millisecond
	e.publish(evs...)
	e.start(hooks{})

	waitRows(t, c, 38, "SELECT count() FROM shadow_events FINAL")
	testutil_Eventually(t, func() bool { return e.js.Count(t, events.StreamRejected) == 2 }, "2 events on REJECTED")
	got := map[uint64]events.RejectedData{}
	for _, m := range e.js.Events(t, events.StreamRejected) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != events.TypeRejected || m.Subject != events.RejectedSubject("projector") {
			t.Errorf("rejected event type %s subject %s", ev.Type, m.Subject)
		}
		var d events.RejectedData
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatal(err)
		}
		got[d.StreamSeq] = d
	}
	tests := []struct {
		name   string
		seq    uint64
		reason string
	}{
		{"refused by clickhouse", 18, "throwIf"},
		{"undecodable envelope", 30, "decode envelope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ok := got[tt.seq]
			if !ok {
				t.Fatalf("no REJECTED record for stream_seq %d (have %v)", tt.seq, got)
			}
			raw, _ := evs[tt.seq-1].ev.Marshal()
			if evs[tt.seq-1].raw != nil {
				raw = evs[tt.seq-1].raw
			}
			if d.Source != "projector" || d.Stream != events.StreamShadow || string(d.Raw) != string(raw) || !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("rejected = source %q stream %q raw %q reason %q; want projector SHADOW raw %q reason containing %q",
					d.Source, d.Stream, d.Raw, d.Reason, raw, tt.reason)
			}
			if sum := sha256.Sum256(raw); d.Size != int64(len(raw)) || d.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("rejected size %d sha256 %s, want %d %x", d.Size, d.SHA256, len(raw), sum)
			}
		})
	}
	// Terminated, not left pending: the consumer has nothing outstanding.
	testutil_Eventually(t, func() bool {
		cons, err := e.js.JS.Consumer(ctx, events.StreamShadow, events.ConsumerProjectorShadow)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == 40
	}, "consumer acked everything")
}
