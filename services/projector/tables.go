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
// columns, so this avoids boxing every value). Rows are pointers into the
// batch's items, so a batch's rows are not copied to be sent.
type column[R any] struct {
	name  string
	build func(rows []*R) any
}

// col is the column name of the values get returns, of type V.
func col[R, V any](name string, get func(*R) V) column[R] {
	return column[R]{name, func(rows []*R) any {
		out := make([]V, len(rows))
		for i, r := range rows {
			out[i] = get(r)
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
func (t *table[R]) send(ctx context.Context, conn driver.Conn, rows []*R) error {
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
		col("stream_seq", func(r *shadowRow) uint64 { return r.Seq }),
		col("event_id", func(r *shadowRow) string { return r.EventID }),
	}
	if withType {
		cols = append(cols, col("type", func(r *shadowRow) string { return r.Type }))
	}
	return append(cols,
		col("type_id", func(r *shadowRow) string { return r.TypeID }),
		col("device_id", func(r *shadowRow) string { return r.DeviceID }),
		col("event_time", func(r *shadowRow) time.Time { return r.EventTime }),
		col("device_time", func(r *shadowRow) time.Time { return r.DeviceTime }),
		col("version", func(r *shadowRow) string { return r.Version }),
		col("status", func(r *shadowRow) string { return r.Status }),
		col("checksum", func(r *shadowRow) string { return r.Checksum }),
		col("previous_version", func(r *shadowRow) string { return r.PreviousVersion }),
		col("duration", func(r *shadowRow) float64 { return r.Duration }),
		col("error_code", func(r *shadowRow) string { return r.ErrorCode }),
		col("job_id", func(r *shadowRow) string { return r.JobID }),
		col("wave", func(r *shadowRow) uint32 { return r.Wave }),
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
			col("stream_seq", func(r *deviceEventRow) uint64 { return r.Seq }),
			col("event_id", func(r *deviceEventRow) string { return r.EventID }),
			col("type", func(r *deviceEventRow) string { return r.Type }),
			col("subject", func(r *deviceEventRow) string { return r.Subject }),
			col("type_id", func(r *deviceEventRow) string { return r.TypeID }),
			col("device_id", func(r *deviceEventRow) string { return r.DeviceID }),
			col("event_time", func(r *deviceEventRow) time.Time { return r.EventTime }),
			col("job_id", func(r *deviceEventRow) string { return r.JobID }),
			col("wave", func(r *deviceEventRow) uint32 { return r.Wave }),
			col("version", func(r *deviceEventRow) string { return r.Version }),
			col("checksum", func(r *deviceEventRow) string { return r.Checksum }),
			col("status", func(r *deviceEventRow) string { return r.Status }),
			col("data", func(r *deviceEventRow) string { return r.Data }),
		},
		seq: func(r *deviceEventRow) uint64 { return r.Seq },
	}
	rolloutEventsTable = &table[rolloutRow]{
		name: "rollout_events",
		cols: []column[rolloutRow]{
			col("stream_seq", func(r *rolloutRow) uint64 { return r.Seq }),
			col("event_id", func(r *rolloutRow) string { return r.EventID }),
			col("type", func(r *rolloutRow) string { return r.Type }),
			col("source", func(r *rolloutRow) string { return r.Source }),
			col("subject", func(r *rolloutRow) string { return r.Subject }),
			col("event_time", func(r *rolloutRow) time.Time { return r.EventTime }),
			col("job_id", func(r *rolloutRow) string { return r.JobID }),
			col("event", func(r *rolloutRow) string { return r.Event }),
			col("wave", func(r *rolloutRow) uint32 { return r.Wave }),
			col("data", func(r *rolloutRow) string { return r.Data }),
		},
		seq: func(r *rolloutRow) uint64 { return r.Seq },
	}
	alertsTable = &table[alertRow]{
		name: "alerts",
		cols: []column[alertRow]{
			col("stream_seq", func(r *alertRow) uint64 { return r.Seq }),
			col("event_id", func(r *alertRow) string { return r.EventID }),
			col("type", func(r *alertRow) string { return r.Type }),
			col("source", func(r *alertRow) string { return r.Source }),
			col("subject", func(r *alertRow) string { return r.Subject }),
			col("event_time", func(r *alertRow) time.Time { return r.EventTime }),
			col("state", func(r *alertRow) string { return r.State }),
			col("severity", func(r *alertRow) string { return r.Severity }),
			col("rule_id", func(r *alertRow) string { return r.RuleID }),
			col("alert_key", func(r *alertRow) string { return r.AlertKey }),
			col("job_id", func(r *alertRow) string { return r.JobID }),
			col("type_id", func(r *alertRow) string { return r.TypeID }),
			col("device_id", func(r *alertRow) string { return r.DeviceID }),
			col("data", func(r *alertRow) string { return r.Data }),
		},
		seq: func(r *alertRow) uint64 { return r.Seq },
	}
	notificationsTable = &table[notificationRow]{
		name: "notifications",
		cols: []column[notificationRow]{
			col("stream_seq", func(r *notificationRow) uint64 { return r.Seq }),
			col("event_id", func(r *notificationRow) string { return r.EventID }),
			col("type", func(r *notificationRow) string { return r.Type }),
			col("source", func(r *notificationRow) string { return r.Source }),
			col("subject", func(r *notificationRow) string { return r.Subject }),
			col("event_time", func(r *notificationRow) time.Time { return r.EventTime }),
			col("receiver", func(r *notificationRow) string { return r.Receiver }),
			col("outcome", func(r *notificationRow) string { return r.Outcome }),
			col("data", func(r *notificationRow) string { return r.Data }),
		},
		seq: func(r *notificationRow) uint64 { return r.Seq },
	}
)
