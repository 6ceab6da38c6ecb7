package projector

import (
	"context"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// fleetHistory is a SHADOW stream of n reports from devices devices, some
// under a rollout job: desired events go out in two waves before the
// reports of their devices. It returns the events in publication (stream)
// order.
func fleetHistory(devices, n int) []published {
	var out []published
	for d := 0; d < devices; d++ {
		if d%2 == 0 {
			out = append(out, desired("gateway", fmt.Sprintf("dev-%03d", d), "job-1", 1+d%4/2, "4.2.1", t0))
		}
	}
	statuses := []string{events.StatusInProgress, events.StatusCompleted, events.StatusFailed}
	for i := 0; i < n; i++ {
		d := i % devices
		st := statuses[(i/devices)%3]
		code := ""
		if st == events.StatusFailed {
			code = fmt.Sprintf("E%d", d%3)
		}
		out = append(out, report("gateway", fmt.Sprintf("dev-%03d", d), fmt.Sprintf("4.2.%d", i/devices), st,
			t0.Add(time.Duration(i)*time.Second), float64(i%97)+0.5, code))
		if i == n/2 {
			// A second job reaches device 1 half way through.
			out = append(out, desired("gateway", "dev-001", "job-2", 3, "5.0.0", t0.Add(time.Duration(i)*time.Second)))
		}
	}
	return out
}

// expectShadow computes the rows shadow_events must hold for evs (published
// in order from sequence 1): the reports, each with the job and wave of its
// device's last desired event before it.
func expectShadow(t *testing.T, evs []published) (rows []shadowRow, latest map[deviceKey]shadowRow) {
	t.Helper()
	type jw struct {
		job  string
		wave uint32
	}
	last := map[deviceKey]jw{}
	latest = map[deviceKey]shadowRow{}
	for i, p := range evs {
		seq := uint64(i + 1)
		switch p.ev.Type {
		case events.TypeShadowDesired:
			var d events.ShadowDesiredData
			if err := p.ev.DecodeData(&d); err != nil {
				t.Fatal(err)
			}
			last[deviceKey{d.TypeID, d.DeviceID}] = jw{d.JobID, uint32(d.Wave)}
		case events.TypeShadowReported:
			var d events.ShadowReportedData
			if err := p.ev.DecodeData(&d); err != nil {
				t.Fatal(err)
			}
			k := deviceKey{d.TypeID, d.DeviceID}
			r := shadowRow{Seq: seq, EventID: p.ev.ID, Type: p.ev.Type, TypeID: d.TypeID, DeviceID: d.DeviceID,
				EventTime: p.ev.Time, DeviceTime: d.Firmware.Timestamp, Version: d.Firmware.Version, Status: d.Firmware.Status,
				Checksum: d.Firmware.Checksum, PreviousVersion: d.Firmware.PreviousVersion, Duration: d.Firmware.UpdateDuration,
				JobID: last[k].job, Wave: last[k].wave}
			if d.Firmware.ErrorCode != nil {
				r.ErrorCode = *d.Firmware.ErrorCode
			}
			rows = append(rows, r)
			latest[k] = r
		}
	}
	return rows, latest
}

// readShadow reads shadow_events (deduplicated) in stream order.
func (e *env) readShadow(table string) []shadowRow {
	e.t.Helper()
	c := e.conn()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cols := "stream_seq, event_id, type, type_id, device_id, event_time, device_time, version, status, checksum, previous_version, duration, error_code, job_id, wave"
	order := "stream_seq"
	if table == "device_firmware" {
		cols = "stream_seq, event_id, '" + events.TypeShadowReported + "', type_id, device_id, event_time, device_time, version, status, checksum, previous_version, duration, error_code, job_id, wave"
		order = "type_id, device_id"
	}
	rows, err := c.Query(ctx, "SELECT "+cols+" FROM "+table+" FINAL ORDER BY "+order)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []shadowRow
	for rows.Next() {
		var r shadowRow
		if err := rows.Scan(&r.Seq, &r.EventID, &r.Type, &r.TypeID, &r.DeviceID, &r.EventTime, &r.DeviceTime, &r.Version,
			&r.Status, &r.Checksum, &r.PreviousVersion, &r.Duration, &r.ErrorCode, &r.JobID, &r.Wave); err != nil {
			e.t.Fatal(err)
		}
		r.EventTime, r.DeviceTime = r.EventTime.UTC(), r.DeviceTime.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// sameRow compares rows to the second (what DateTime keeps).
func sameRow(a, b shadowRow) bool {
	if !a.EventTime.Truncate(time.Second).Equal(b.EventTime.Truncate(time.Second)) ||
		!a.DeviceTime.Truncate(time.Second).Equal(b.DeviceTime.Truncate(time.Second)) {
		return false
	}
	a.EventTime, b.EventTime, a.DeviceTime, b.DeviceTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return a == b
}

func checkShadow(t *testing.T, e *env, evs []published) {
	t.Helper()
	want, latest := expectShadow(t, evs)
	got := e.readShadow("shadow_events")
	if len(got) != len(want) {
		t.Fatalf("shadow_events has %d rows, want %d", len(got), len(want))
	}
	for i := range want {
		if !sameRow(got[i], want[i]) {
			t.Fatalf("shadow_events row %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	fw := e.readShadow("device_firmware")
	if len(fw) != len(latest) {
		t.Fatalf("device_firmware has %d devices, want %d", len(fw), len(latest))
	}
	for _, r := range fw {
		w := latest[deviceKey{r.TypeID, r.DeviceID}]
		if !sameRow(r, w) {
			t.Fatalf("device_firmware of %s/%s:\n got %+v\nwant %+v", r.TypeID, r.DeviceID, r, w)
		}
	}
}

// TestShadowProjected: every report becomes one row equal to it, and
// device_firmware holds each device's latest report.
func TestShadowProjected(t *testing.T) {
	tests := []struct {
		name      string
		devices   int
		reports   int
		batchSize int
	}{
		{"one batch", 5, 40, 1000},
		{"many batches", 13, 1200, 97},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.cfg.BatchSize = tt.batchSize
			evs := fleetHistory(tt.devices, tt.reports)
			e.publish(evs[:len(evs)/2]...)
			e.start(hooks{})
			e.publish(evs[len(evs)/2:]...)
			c := e.conn()
			waitRows(t, c, uint64(tt.reports), "SELECT count() FROM shadow_events FINAL")
			// device_firmware is written right after shadow_events: wait
			// for the last report there too.
			want, _ := expectShadow(t, evs)
			waitRows(t, c, want[len(want)-1].Seq, "SELECT max(stream_seq) FROM device_firmware")
			checkShadow(t, e, evs)
			if !e.health.Ready() {
				t.Errorf("projector not ready: %v", e.health.Status())
			}
		})
	}
}

// TestOutOfOrderArrival feeds the SHADOW stream's messages to a pipeline in
// a shuffled order and in small batches, as redeliveries and replays can:
// device_firmware still holds each device's latest report and every report
// its job and wave.
func TestOutOfOrderArrival(t *testing.T) {
	e := newEnv(t)
	evs := fleetHistory(7, 300)
	e.publish(evs...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn := e.conn()
	if _, err := Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	index := newDesiredIndex()
	if _, err := warmDesired(ctx, e.js.JS, index); err != nil {
		t.Fatal(err)
	}
	cons, err := e.js.JS.OrderedConsumer(ctx, events.StreamShadow, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := cons.Fetch(len(evs), jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range fetched.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != len(evs) {
		t.Fatalf("fetched %d messages, want %d", len(msgs), len(evs))
	}
	rand.New(rand.NewSource(7)).Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	// The projection the consume loop drives, fed by hand: each message
	// prepared in the shuffled order, written in batches of 11.
	p := &projection{stream: events.StreamShadow, conn: conn, log: testLogger(t), index: index}
	var batch []consume.Item[*item]
	for i, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		it, err := p.prepare(consume.Msg{Stream: events.StreamShadow, Seq: md.Sequence.Stream, Subject: m.Subject(), Data: m.Data()})
		if err != nil {
			t.Fatalf("prepare: %v", err)
		}
		batch = append(batch, consume.Item[*item]{Value: it})
		if len(batch) == 11 || i == len(msgs)-1 {
			if refused, err := p.write(ctx, batch); err != nil || len(refused) > 0 {
				t.Fatalf("write: %v (refused %v)", err, refused)
			}
			batch = nil
		}
	}
	checkShadow(t, e, evs)
}
