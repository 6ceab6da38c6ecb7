package projector

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// shadowRow is one accepted report: a row of shadow_events, and (the latest
// per device) of device_firmware.
type shadowRow struct {
	Seq             uint64
	EventID         string
	Type            string
	TypeID          string
	DeviceID        string
	EventTime       time.Time
	DeviceTime      time.Time
	Version         string
	Status          string
	Checksum        string
	PreviousVersion string
	Duration        float64
	ErrorCode       string
	JobID           string
	Wave            uint32
}

// deviceEventRow is a desired-state change, a presence transition or an
// unknown event of the SHADOW stream: a row of device_events.
type deviceEventRow struct {
	Seq       uint64
	EventID   string
	Type      string
	Subject   string
	TypeID    string
	DeviceID  string
	EventTime time.Time
	JobID     string
	Wave      uint32
	Version   string
	Checksum  string
	Status    string
	Data      string
}

// rolloutRow is a row of rollout_events.
type rolloutRow struct {
	Seq       uint64
	EventID   string
	Type      string
	Source    string
	Subject   string
	EventTime time.Time
	JobID     string
	Event     string
	Wave      uint32
	Data      string
}

// alertRow is a row of alerts.
type alertRow struct {
	Seq       uint64
	EventID   string
	Type      string
	Source    string
	Subject   string
	EventTime time.Time
	State     string
	Severity  string
	RuleID    string
	AlertKey  string
	JobID     string
	TypeID    string
	DeviceID  string
	Data      string
}

// notificationRow is a row of notifications.
type notificationRow struct {
	Seq       uint64
	EventID   string
	Type      string
	Source    string
	Subject   string
	EventTime time.Time
	Receiver  string
	Outcome   string
	Data      string
}

// column is one column of a table: its name and how to build its values
// from a slice of rows, as one typed slice (the native protocol sends whole
// columns, so this avoids boxing every value).
type column[R any] struct {
	name  string
	build func(rows []R) any
}

func strCol[R any](name string, get func(*R) string) column[R] {
	return column[R]{name, func(rows []R) any {
		out := make([]string, len(rows))
		for i := range rows {
			out[i] = get(&rows[i])
		}
		return out
	}}
}

func u64Col[R any](name string, get func(*R) uint64) column[R] {
	return column[R]{name, func(rows []R) any {
		out := make([]uint64, len(rows))
		for i := range rows {
			out[i] = get(&rows[i])
		}
		return out
	}}
}

func u32Col[R any](name string, get func(*R) uint32) column[R] {
	return column[R]{name, func(rows []R) any {
		out := make([]uint32, len(rows))
		for i := range rows {
			out[i] = get(&rows[i])
		}
		return out
	}}
}

func f64Col[R any](name string, get func(*R) float64) column[R] {
	return column[R]{name, func(rows []R) any {
		out := make([]float64, len(rows))
		for i := range rows {
			out[i] = get(&rows[i])
		}
		return out
	}}
}

func timeCol[R any](name string, get func(*R) time.Time) column[R] {
	return column[R]{name, func(rows []R) any {
		out := make([]time.Time, len(rows))
		for i := range rows {
			out[i] = get(&rows[i])
		}
		return out
	}}
}

// table is a ClickHouse table the projector writes, with its columns in
// INSERT order and the stream sequence each row comes from.
type table[R any] struct {
	name string
	cols []column[R]
	seq  func(*R) uint64
}

// insertSQL names every column: ClickHouse 18.16 with clickhouse-go v2
// takes a batch only with an explicit column list.
func (t *table[R]) insertSQL() string {
	names := make([]string, len(t.cols))
	for i, c := range t.cols {
		names[i] = c.name
	}
	return "INSERT INTO " + t.name + " (" + strings.Join(names, ", ") + ")"
}

// columnNames returns the table's columns in INSERT order.
func (t *table[R]) columnNames() []string {
	names := make([]string, len(t.cols))
	for i, c := range t.cols {
		names[i] = c.name
	}
	return names
}

// errBuild marks a failure to put a value into a column: the row, not the
// server, is at fault.
type errBuild struct{ err error }

func (e *errBuild) Error() string { return e.err.Error() }
func (e *errBuild) Unwrap() error { return e.err }

// send inserts rows as one batch (one part on the server).
func (t *table[R]) send(ctx context.Context, conn driver.Conn, rows []R) error {
	b, err := conn.PrepareBatch(ctx, t.insertSQL())
	if err != nil {
		return fmt.Errorf("prepare insert into %s: %w", t.name, err)
	}
	defer b.Close()
	for i, c := range t.cols {
		if err := b.Column(i).Append(c.build(rows)); err != nil {
			_ = b.Abort()
			return &errBuild{fmt.Errorf("column %s.%s: %w", t.name, c.name, err)}
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %d rows into %s: %w", len(rows), t.name, err)
	}
	return nil
}

func shadowColumns(withType bool) []column[shadowRow] {
	cols := []column[shadowRow]{
		u64Col("stream_seq", func(r *shadowRow) uint64 { return r.Seq }),
		strCol("event_id", func(r *shadowRow) string { return r.EventID }),
	}
	if withType {
		cols = append(cols, strCol("type", func(r *shadowRow) string { return r.Type }))
	}
	return append(cols,
		strCol("type_id", func(r *shadowRow) string { return r.TypeID }),
		strCol("device_id", func(r *shadowRow) string { return r.DeviceID }),
		timeCol("event_time", func(r *shadowRow) time.Time { return r.EventTime }),
		timeCol("device_time", func(r *shadowRow) time.Time { return r.DeviceTime }),
		strCol("version", func(r *shadowRow) string { return r.Version }),
		strCol("status", func(r *shadowRow) string { return r.Status }),
		strCol("checksum", func(r *shadowRow) string { return r.Checksum }),
		strCol("previous_version", func(r *shadowRow) string { return r.PreviousVersion }),
		f64Col("duration", func(r *shadowRow) float64 { return r.Duration }),
		strCol("error_code", func(r *shadowRow) string { return r.ErrorCode }),
		strCol("job_id", func(r *shadowRow) string { return r.JobID }),
		u32Col("wave", func(r *shadowRow) uint32 { return r.Wave }),
	)
}

// The tables, one variable each; their column lists are also what replay
// verify hashes.
var (
	shadowEventsTable = &table[shadowRow]{
		name: "shadow_events",
		cols: shadowColumns(true),
		seq:  func(r *shadowRow) uint64 { return r.Seq },
	}
	deviceFirmwareTable = &table[shadowRow]{
		name: "device_firmware",
		cols: shadowColumns(false),
		seq:  func(r *shadowRow) uint64 { return r.Seq },
	}
	deviceEventsTable = &table[deviceEventRow]{
		name: "device_events",
		cols: []column[deviceEventRow]{
			u64Col("stream_seq", func(r *deviceEventRow) uint64 { return r.Seq }),
			strCol("event_id", func(r *deviceEventRow) string { return r.EventID }),
			strCol("type", func(r *deviceEventRow) string { return r.Type }),
			strCol("subject", func(r *deviceEventRow) string { return r.Subject }),
			strCol("type_id", func(r *deviceEventRow) string { return r.TypeID }),
			strCol("device_id", func(r *deviceEventRow) string { return r.DeviceID }),
			timeCol("event_time", func(r *deviceEventRow) time.Time { return r.EventTime }),
			strCol("job_id", func(r *deviceEventRow) string { return r.JobID }),
			u32Col("wave", func(r *deviceEventRow) uint32 { return r.Wave }),
			strCol("version", func(r *deviceEventRow) string { return r.Version }),
			strCol("checksum", func(r *deviceEventRow) string { return r.Checksum }),
			strCol("status", func(r *deviceEventRow) string { return r.Status }),
			strCol("data", func(r *deviceEventRow) string { return r.Data }),
		},
		seq: func(r *deviceEventRow) uint64 { return r.Seq },
	}
	rolloutEventsTable = &table[rolloutRow]{
		name: "rollout_events",
		cols: []column[rolloutRow]{
			u64Col("stream_seq", func(r *rolloutRow) uint64 { return r.Seq }),
			strCol("event_id", func(r *rolloutRow) string { return r.EventID }),
			strCol("type", func(r *rolloutRow) string { return r.Type }),
			strCol("source", func(r *rolloutRow) string { return r.Source }),
			strCol("subject", func(r *rolloutRow) string { return r.Subject }),
			timeCol("event_time", func(r *rolloutRow) time.Time { return r.EventTime }),
			strCol("job_id", func(r *rolloutRow) string { return r.JobID }),
			strCol("event", func(r *rolloutRow) string { return r.Event }),
			u32Col("wave", func(r *rolloutRow) uint32 { return r.Wave }),
			strCol("data", func(r *rolloutRow) string { return r.Data }),
		},
		seq: func(r *rolloutRow) uint64 { return r.Seq },
	}
	alertsTable = &table[alertRow]{
		name: "alerts",
		cols: []column[alertRow]{
			u64Col("stream_seq", func(r *alertRow) uint64 { return r.Seq }),
			strCol("event_id", func(r *alertRow) string { return r.EventID }),
			strCol("type", func(r *alertRow) string { return r.Type }),
			strCol("source", func(r *alertRow) string { return r.Source }),
			strCol("subject", func(r *alertRow) string { return r.Subject }),
			timeCol("event_time", func(r *alertRow) time.Time { return r.EventTime }),
			strCol("state", func(r *alertRow) string { return r.State }),
			strCol("severity", func(r *alertRow) string { return r.Severity }),
			strCol("rule_id", func(r *alertRow) string { return r.RuleID }),
			strCol("alert_key", func(r *alertRow) string { return r.AlertKey }),
			strCol("job_id", func(r *alertRow) string { return r.JobID }),
			strCol("type_id", func(r *alertRow) string { return r.TypeID }),
			strCol("device_id", func(r *alertRow) string { return r.DeviceID }),
			strCol("data", func(r *alertRow) string { return r.Data }),
		},
		seq: func(r *alertRow) uint64 { return r.Seq },
	}
	notificationsTable = &table[notificationRow]{
		name: "notifications",
		cols: []column[notificationRow]{
			u64Col("stream_seq", func(r *notificationRow) uint64 { return r.Seq }),
			strCol("event_id", func(r *notificationRow) string { return r.EventID }),
			strCol("type", func(r *notificationRow) string { return r.Type }),
			strCol("source", func(r *notificationRow) string { return r.Source }),
			strCol("subject", func(r *notificationRow) string { return r.Subject }),
			timeCol("event_time", func(r *notificationRow) time.Time { return r.EventTime }),
			strCol("receiver", func(r *notificationRow) string { return r.Receiver }),
			strCol("outcome", func(r *notificationRow) string { return r.Outcome }),
			strCol("data", func(r *notificationRow) string { return r.Data }),
		},
		seq: func(r *notificationRow) uint64 { return r.Seq },
	}
)
