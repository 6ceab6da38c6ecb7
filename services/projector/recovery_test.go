package projector

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// statusCounts is an aggregate answer: reports per status.
func statusCounts(t *testing.T, e *env) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := e.conn().Query(ctx, "SELECT status, count() FROM shadow_events FINAL GROUP BY status")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var s string
		var n uint64
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		out[s] = n
	}
	return out
}

func expectStatusCounts(t *testing.T, evs []published) map[string]uint64 {
	want, _ := expectShadow(t, evs)
	out := map[string]uint64{}
	for _, r := range want {
		out[r.Status]++
	}
	return out
}

func sameCounts(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestCrashBetweenInsertAndAck: a projector stops after ClickHouse took a
// batch and before it acked it; the restarted projector gets the batch
// again and writes it again, and the answers are those of the events.
func TestCrashBetweenInsertAndAck(t *testing.T) {
	e := newEnv(t)
	e.cfg.BatchSize = 200
	evs := fleetHistory(9, 1000)
	e.publish(evs...)

	first := e.start(hooks{afterInsert: func(stream string, n int) error {
		if stream == events.StreamShadow {
			return errCrash
		}
		return nil
	}})
	if err := <-first.done; !errors.Is(err, errStopped) {
		t.Fatalf("first projector returned %v, want the crash", err)
	}
	first.done <- nil // for the cleanup
	c := e.conn()
	crashed := count(t, c, "SELECT count() FROM shadow_events FINAL")
	if crashed == 0 {
		t.Fatal("the crashed batch is not in clickhouse: the test does not test a crash after insert")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := e.js.JS.Consumer(ctx, events.StreamShadow, events.ConsumerProjectorShadow)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != 0 {
		t.Fatalf("ack floor %d after the crash, want 0 (nothing acked)", info.AckFloor.Stream)
	}

	var mu sync.Mutex
	again := 0
	e.start(hooks{afterInsert: func(stream string, n int) error {
		if stream == events.StreamShadow {
			mu.Lock()
			again += n
			mu.Unlock()
		}
		return nil
	}})
	want, _ := expectShadow(t, evs)
	waitRows(t, c, uint64(len(want)), "SELECT count() FROM shadow_events FINAL")
	waitRows(t, c, want[len(want)-1].Seq, "SELECT max(stream_seq) FROM device_firmware")
	mu.Lock()
	if again < len(evs) {
		t.Errorf("restarted projector wrote %d events, want all %d again (none was acked)", again, len(evs))
	}
	mu.Unlock()
	checkShadow(t, e, evs)
	if got, want := statusCounts(t, e), expectStatusCounts(t, evs); !sameCounts(got, want) {
		t.Errorf("reports per status = %v, want %v", got, want)
	}
}

// TestClickHouseDown: with ClickHouse down (stopped before the projector
// starts, or killed while events arrive) the projector reports not ready and
// acks nothing; once ClickHouse is back, every event is projected.
func TestClickHouseDown(t *testing.T) {
	tests := []struct {
		name        string
		downAtStart bool
	}{
		{"killed while events arrive", false},
		{"stopped before start", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := testutil.StartClickHouse(t)
			e := newEnvOn(t, srv.Addr, "otawatch")
			evs := fleetHistory(5, 600)
			before, during := evs[:200], evs[200:]
			var c driver.Conn
			if tt.downAtStart {
				srv.Stop(t)
				e.start(hooks{})
				during = evs
			} else {
				c = e.conn()
				e.start(hooks{})
				e.publish(before...)
				want, _ := expectShadow(t, before)
				waitRows(t, c, uint64(len(want)), "SELECT count() FROM shadow_events FINAL")
				waitRows(t, c, want[len(want)-1].Seq, "SELECT max(stream_seq) FROM device_firmware")
				srv.Kill(t)
			}
			acked := func() uint64 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				cons, err := e.js.JS.Consumer(ctx, events.StreamShadow, events.ConsumerProjectorShadow)
				if err != nil {
					return 0 // not created yet: nothing acked
				}
				info, err := cons.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return info.AckFloor.Stream
			}
			floor := acked()
			for i, p := range during {
				e.publish(p)
				if i%100 == 0 {
					time.Sleep(50 * time.Millisecond) // let some be tried while down
				}
			}
			testutil_Eventually(t, func() bool { return !e.health.Ready() }, "projector reports not ready while clickhouse is down")
			time.Sleep(500 * time.Millisecond) // a few failed attempts
			if got := acked(); got != floor {
				t.Fatalf("ack floor moved from %d to %d while clickhouse was down", floor, got)
			}
			srv.Start(t)
			c = e.conn()
			want, _ := expectShadow(t, evs)
			waitRows(t, c, uint64(len(want)), "SELECT count() FROM shadow_events FINAL")
			waitRows(t, c, want[len(want)-1].Seq, "SELECT max(stream_seq) FROM device_firmware")
			checkShadow(t, e, evs)
			testutil_Eventually(t, e.health.Ready, "projector ready again")
			testutil_Eventually(t, func() bool { return acked() == uint64(len(evs)) }, "every event acked")
		})
	}
}
