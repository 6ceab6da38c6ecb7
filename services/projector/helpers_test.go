package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

func TestMain(m *testing.M) { testutil.ClickHouseMain(m) }

// env is one test's JetStream, ClickHouse database and configuration.
type env struct {
	t      *testing.T
	js     *testutil.JetStream
	cfg    Config
	health *svc.Health
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := testutil.ClickHouse(t)
	return newEnvOn(t, db.Addr, db.Database)
}

func newEnvOn(t *testing.T, addr, database string) *env {
	t.Helper()
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	cfg := Config{Addr: addr, Database: database, BatchSize: 500, BatchTimeout: 50 * time.Millisecond, AckWait: 2 * time.Second}
	cfg.SetDefaults()
	return &env{t: t, js: js, cfg: cfg, health: svc.NewHealth()}
}

func testLogger(testing.TB) *slog.Logger {
	if os.Getenv("OTAWATCH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func (e *env) deps() svc.Deps {
	return svc.Deps{Log: testLogger(e.t), NC: e.js.NC, JS: e.js.JS, Health: e.health}
}

// running is a projector started by a test.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// stop ends the projector and returns what Run returned.
func (r *running) stop() error {
	r.cancel()
	return <-r.done
}

// start runs a projector until the test ends (or stop).
func (e *env) start(h hooks) *running {
	e.t.Helper()
	s, err := New(e.cfg, e.deps())
	if err != nil {
		e.t.Fatal(err)
	}
	s.hooks = h
	s.newBackOff = func() backoff.BackOff { return consume.ExponentialBackOff(100*time.Millisecond, 500*time.Millisecond) }
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			e.t.Error("projector did not stop within 30s")
		}
	})
	return r
}

// conn opens the test's database.
func (e *env) conn() driver.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Open(ctx, e.cfg, e.cfg.Database)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// publish stores events on their subjects, with their ids as Nats-Msg-Id,
// as the bridge and the other services do.
func (e *env) publish(evs ...published) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, p := range evs {
		b, err := p.ev.Marshal()
		if err != nil {
			e.t.Fatal(err)
		}
		if p.raw != nil {
			b = p.raw
		}
		if _, err := e.js.JS.Publish(ctx, p.subject, b, jetstream.WithMsgID(p.ev.ID)); err != nil {
			e.t.Fatalf("publish %s: %v", p.subject, err)
		}
	}
}

// published is an event and its subject (raw, when set, replaces the
// envelope's bytes: a broken event).
type published struct {
	subject string
	ev      events.Event
	raw     []byte
}

var t0 = time.Date(2025, 7, 22, 11, 0, 0, 0, time.UTC)

// report builds an accepted report of one device.
func report(typeID, deviceID, version, status string, at time.Time, duration float64, errorCode string) published {
	fw := events.Firmware{
		Version: version, Timestamp: at, Status: status, Checksum: "sha256:" + version,
		PreviousVersion: "4.1.5", UpdateDuration: duration,
	}
	if errorCode != "" {
		fw.ErrorCode = &errorCode
	}
	ev, err := events.New(events.ReportEventID(typeID, deviceID, fw), events.SourceBridge, events.TypeShadowReported,
		deviceID, at.Add(time.Second), events.ShadowReportedData{
			TypeID: typeID, DeviceID: deviceID, Topic: events.ReportTopic(typeID, deviceID), Firmware: fw,
		})
	if err != nil {
		panic(err)
	}
	return published{subject: events.ShadowReportedSubject(typeID, deviceID), ev: ev}
}

// desired builds a desired-state change sent to one device by a job's wave.
func desired(typeID, deviceID, jobID string, wave int, version string, at time.Time) published {
	ev, err := events.New(events.IdentityID("sd", typeID, deviceID, jobID, version), events.SourceRollout, events.TypeShadowDesired,
		deviceID, at, events.ShadowDesiredData{
			TypeID: typeID, DeviceID: deviceID, JobID: jobID, Wave: wave,
			Firmware: events.DesiredFirmware{Version: version, Checksum: "sha256:" + version, URL: "https://fw.example/" + version},
		})
	if err != nil {
		panic(err)
	}
	return published{subject: events.ShadowDesiredSubject(typeID, deviceID), ev: ev}
}

// generic builds an event of another stream with a JSON data object.
func generic(subject, typ, source string, at time.Time, data any) published {
	ev, err := events.New(events.IdentityID("g", subject, at.String(), fmt.Sprint(data)), source, typ, "", at, data)
	if err != nil {
		panic(err)
	}
	return published{subject: subject, ev: ev}
}

// count runs a query returning one number.
func count(t *testing.T, c driver.Conn, query string, args ...any) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n uint64
	if err := c.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// waitRows waits until query counts want rows.
func waitRows(t *testing.T, c driver.Conn, want uint64, query string) {
	t.Helper()
	var got uint64
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.QueryRow(ctx, query).Scan(&got)
		cancel()
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %d (err %v), want %d", query, got, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var errCrash = errors.New("crash between insert and ack")

// testutil_Eventually waits up to a minute for cond.
func testutil_Eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	testutil.Eventually(t, time.Minute, cond, msg)
}

// strings1 runs a query of one String column.
func strings1(t *testing.T, ctx context.Context, c driver.Conn, query string) []string {
	t.Helper()
	rows, err := c.Query(ctx, query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
