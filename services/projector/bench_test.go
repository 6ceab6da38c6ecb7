package projector

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

func benchEnvInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q is not a positive integer", name, s)
	}
	return n
}

// benchEvents are n reports from devices devices, as the bridge stores them.
func benchEvents(n, devices int) []published {
	out := make([]published, n)
	statuses := []string{events.StatusInProgress, events.StatusCompleted, events.StatusCompleted, events.StatusFailed}
	for i := range out {
		st := statuses[i%len(statuses)]
		code := ""
		if st == events.StatusFailed {
			code = "E_CHECKSUM"
		}
		out[i] = report("gateway", fmt.Sprintf("dev-%06d", i%devices), fmt.Sprintf("4.2.%d", i/devices), st,
			t0.Add(time.Duration(i)*time.Millisecond), float64(60+i%240), code)
	}
	return out
}

// benchPublish stores the events in JetStream (async, with Nats-Msg-Id).
func benchPublish(b *testing.B, js jetstream.JetStream, evs []published, raws [][]byte) {
	b.Helper()
	for i, p := range evs {
		for {
			_, err := js.PublishAsync(p.subject, raws[i], jetstream.WithMsgID(p.ev.ID))
			if err == nil {
				break
			}
			// A full pending window: wait a little and try again.
			time.Sleep(time.Millisecond)
		}
		if i%50_000 == 0 {
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("publish did not complete")
	}
}

// benchRows are the rows the projector makes of evs (the raw baseline
// inserts exactly these).
func benchRows(b *testing.B, evs []published, raws [][]byte) []*shadowRow {
	rows := make([]*shadowRow, len(evs))
	for i, p := range evs {
		it := item{stream: events.StreamShadow, seq: uint64(i + 1), subject: p.subject, raw: raws[i]}
		project(&it, nil)
		if it.kind != kindShadow {
			b.Fatalf("event %d: %s", i, it.poison)
		}
		rows[i] = &it.shadow
	}
	return rows
}

// rawAppend is the plain clickhouse-go loop: one PrepareBatch per batch,
// Append per row, Send.
func rawAppend(ctx context.Context, conn driver.Conn, rows []*shadowRow, batchSize int) error {
	for start := 0; start < len(rows); start += batchSize {
		b, err := conn.PrepareBatch(ctx, shadowEventsTable.insertSQL())
		if err != nil {
			return err
		}
		for i := start; i < min(start+batchSize, len(rows)); i++ {
			r := rows[i]
			if err := b.Append(r.Seq, r.EventID, r.Type, r.TypeID, r.DeviceID, r.EventTime, r.DeviceTime, r.Version,
				r.Status, r.Checksum, r.PreviousVersion, r.Duration, r.ErrorCode, r.JobID, r.Wave); err != nil {
				return err
			}
		}
		if err := b.Send(); err != nil {
			return err
		}
	}
	return nil
}

// rawColumns is the same loop appending whole columns, as the projector does.
func rawColumns(ctx context.Context, conn driver.Conn, rows []*shadowRow, batchSize int) error {
	for start := 0; start < len(rows); start += batchSize {
		if err := shadowEventsTable.send(ctx, conn, rows[start:min(start+batchSize, len(rows))]); err != nil {
			return err
		}
	}
	return nil
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// BenchmarkProjectorThroughput measures, in one run and on the same rows and
// batch size: raw ClickHouse batch inserts (a plain clickhouse-go loop, row
// by row and column-wise), the projector's JetStream -> ClickHouse rate from
// a pre-filled SHADOW stream (decode, fold, shadow_events and device_firmware
// inserts, acks), and the replay rate into a fresh database; and, as the
// issue's yardstick, a plain JetStream pull + ack of the same events (a
// throwaway durable, explicit acks, nothing else: the log's own ceiling
// here), with each round's projector rate over its own pull + ack. It also
// measures decoding alone, and the CPU time per event of the pull + ack and
// of the projector (this process's, and ClickHouse's query threads'): on a
// machine where both are CPU-bound, their ratio bounds the rate ratio. It prints the medians of the rounds and their
// ratios. It runs once whatever b.N is (scripts/bench
// projector passes -benchtime 1x).
//
// Knobs: OTAWATCH_BENCH_EVENTS (default 200000), OTAWATCH_BENCH_DEVICES
// (10000), OTAWATCH_BENCH_BATCH (10000), OTAWATCH_BENCH_ROUNDS (3).
func BenchmarkProjectorThroughput(b *testing.B) {
	n := benchEnvInt(b, "OTAWATCH_BENCH_EVENTS", 200_000)
	devices := benchEnvInt(b, "OTAWATCH_BENCH_DEVICES", 10_000)
	batch := benchEnvInt(b, "OTAWATCH_BENCH_BATCH", 10_000)
	rounds := benchEnvInt(b, "OTAWATCH_BENCH_ROUNDS", 3)
	evs := benchEvents(n, devices)
	raws := make([][]byte, len(evs))
	for i, p := range evs {
		var err error
		if raws[i], err = p.ev.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
	rows := benchRows(b, evs, raws)
	ctx := context.Background()
	var rawA, rawC, live, replay, consume, decode []float64
	// CPU per event, in microseconds: this process's (the NATS server and
	// client, the projector) during the pull+ack and the projector, and
	// ClickHouse's query threads during the projector.
	var cpuPull, cpuLive, cpuCH []float64

	for round := 0; round < rounds; round++ {
		db := testutil.ClickHouse(b)
		cfg := Config{Addr: db.Addr, Database: db.Database, BatchSize: batch, BatchTimeout: 200 * time.Millisecond}
		cfg.SetDefaults()

		// Raw baselines, each into its own fresh table set.
		for _, v := range []struct {
			out  *[]float64
			name string
			fn   func(context.Context, driver.Conn, []*shadowRow, int) error
		}{{&rawA, "append", rawAppend}, {&rawC, "columns", rawColumns}} {
			conn, err := Open(ctx, cfg, db.Database+"_raw_"+v.name)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Migrate(ctx, conn); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := v.fn(ctx, conn, rows, batch); err != nil {
				b.Fatal(err)
			}
			*v.out = append(*v.out, float64(n)/time.Since(start).Seconds())
			_ = conn.Exec(ctx, "DROP DATABASE "+quoteIdent(db.Database+"_raw_"+v.name))
			conn.Close()
		}

		// The projector, from a stream filled beforehand.
		js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
		benchPublish(b, js.JS, evs, raws)

		// What the projector's parts cost alone: JetStream delivery with
		// acks (a throwaway durable) and decoding.
		cpu0 := processCPU(b)
		consume = append(consume, benchConsume(b, js.JS, n, batch))
		cpuPull = append(cpuPull, perEvent(processCPU(b)-cpu0, n))
		start := time.Now()
		for i := range evs {
			it := item{stream: events.StreamShadow, seq: uint64(i + 1), subject: evs[i].subject, raw: raws[i]}
			project(&it, nil)
		}
		decode = append(decode, float64(n)/time.Since(start).Seconds())

		conn, err := Open(ctx, cfg, cfg.Database)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Migrate(ctx, conn); err != nil {
			b.Fatal(err)
		}
		conn.Close()
		s, err := New(cfg, svc.Deps{Log: testLogger(nil), NC: js.NC, JS: js.JS})
		if err != nil {
			b.Fatal(err)
		}
		var written atomic.Int64
		done := make(chan time.Time, 1)
		s.hooks.afterInsert = func(stream string, k int) error {
			if stream == events.StreamShadow && written.Add(int64(k)) == int64(n) {
				done <- time.Now()
			}
			return nil
		}
		chConn, err := Dial(ctx, cfg, "")
		if err != nil {
			b.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		stopped := make(chan error, 1)
		cpu0, ch0 := processCPU(b), clickhouseCPU(b, chConn)
		start = time.Now()
		go func() { stopped <- s.Run(rctx) }()
		select {
		case end := <-done:
			live = append(live, float64(n)/end.Sub(start).Seconds())
			cpuLive = append(cpuLive, perEvent(processCPU(b)-cpu0, n))
			cpuCH = append(cpuCH, perEvent(clickhouseCPU(b, chConn)-ch0, n))
		case err := <-stopped:
			b.Fatalf("projector stopped: %v", err)
		case <-time.After(5 * time.Minute):
			b.Fatalf("projector wrote %d of %d events in 5 minutes", written.Load(), n)
		}
		cancel()
		<-stopped
		chConn.Close()

		// Replay the same stream into a fresh database.
		fresh := cfg.Database + "_replay"
		start = time.Now()
		p, err := Replay(ctx, cfg, js.JS, testLogger(nil), ReplayOptions{Database: fresh, Streams: []string{events.StreamShadow}})
		if err != nil {
			b.Fatal(err)
		}
		if p.Events() != uint64(n) {
			b.Fatalf("replayed %d events, want %d", p.Events(), n)
		}
		replay = append(replay, float64(n)/time.Since(start).Seconds())
		if c, err := Dial(ctx, cfg, ""); err == nil {
			_ = c.Exec(ctx, "DROP DATABASE "+quoteIdent(fresh))
			c.Close()
		}
	}

	ra, rc, lv, rp, pa := median(rawA), median(rawC), median(live), median(replay), median(consume)
	best := max(ra, rc)
	paired := make([]float64, len(live)) // each round's projector over its own pull+ack
	for i := range live {
		paired[i] = live[i] / consume[i]
	}
	fmt.Printf("\nprojector benchmark: %d events from %d devices, batch %d, median of %d round(s)\n", n, devices, batch, rounds)
	fmt.Printf("  raw insert, Append per row     %9.0f rows/s\n", ra)
	fmt.Printf("  raw insert, whole columns      %9.0f rows/s\n", rc)
	fmt.Printf("  raw JetStream pull+ack         %9.0f msgs/s (the log's own ceiling)\n", pa)
	fmt.Printf("  projector JetStream->ClickHouse %8.0f events/s  %3.0f%% of pull+ack (paired by round: median %3.0f%%; goal >= 80%%), %3.0f%% of raw columns\n",
		lv, 100*lv/pa, 100*median(paired), 100*lv/rc)
	fmt.Printf("  replay into a fresh database   %9.0f events/s  %.2fx the live projector\n", rp, rp/lv)
	fmt.Printf("  parts alone: decode+project %.0f events/s (one goroutine)\n", median(decode))
	cl, cc, cp := median(cpuLive), median(cpuCH), median(cpuPull)
	fmt.Printf("  CPU per event: pull+ack %.1f us; projector %.1f us in this process (NATS server and client included) + %.1f us in ClickHouse's query threads (merges not counted) = %.1fx the pull+ack's (where both are CPU-bound, a ceiling of ~%.0f%% of it)\n",
		cp, cl, cc, (cl+cc)/cp, 100*cp/(cl+cc))
	// A projector that cost nothing beyond its pull + ack would still share
	// the cores with ClickHouse's insert work: the most any projector gets
	// here while both are CPU-bound.
	fmt.Printf("  ceiling set by ClickHouse alone (a projector costing no CPU beyond pull+ack): ~%.0f%% of pull+ack\n", 100*cp/(cp+cc))
	fmt.Printf("  rounds: raw append %v, raw columns %v, pull+ack %v, projector %v, replay %v\n", round0(rawA), round0(rawC), round0(consume), round0(live), round0(replay))
	b.ReportMetric(ra, "raw_append_rows/s")
	b.ReportMetric(rc, "raw_columns_rows/s")
	b.ReportMetric(lv, "projector_events/s")
	b.ReportMetric(rp, "replay_events/s")
	b.ReportMetric(lv/best, "projector/raw")
	b.ReportMetric(pa, "pull_ack_msgs/s")
	b.ReportMetric(median(paired), "projector/pull_ack")
	b.ReportMetric(rp/lv, "replay/projector")
	b.ReportMetric(cp, "pull_ack_cpu_us/msg")
	b.ReportMetric(cl+cc, "projector_cpu_us/event")
	b.ReportMetric(cc, "clickhouse_cpu_us/event")
}

// processCPU is the CPU time (user + system) this process has used: the
// embedded NATS server and everything the benchmark runs, not ClickHouse.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clickhouseCPU is the CPU time the server's query threads have used since
// it started (system.events; background merges are not counted). It counts
// every client's queries: on the server scripts/bench starts, the
// benchmark's.
func clickhouseCPU(b *testing.B, conn driver.Conn) time.Duration {
	var us uint64
	if err := conn.QueryRow(context.Background(), "SELECT sum(value) FROM system.events WHERE event IN ('UserTimeMicroseconds', 'SystemTimeMicroseconds')").Scan(&us); err != nil {
		b.Fatalf("clickhouse cpu time: %v", err)
	}
	return time.Duration(us) * time.Microsecond
}

func perEvent(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

func round0(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x)
	}
	return out
}

// benchConsume reads n messages of SHADOW with a throwaway durable consumer
// (explicit ack, as the projector's) and acks each, doing nothing else.
func benchConsume(b *testing.B, js jetstream.JetStream, n, batch int) float64 {
	ctx := context.Background()
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamShadow, jetstream.ConsumerConfig{
		Durable: "bench-consume", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4 * batch,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = js.DeleteConsumer(ctx, events.StreamShadow, "bench-consume") }()
	it, err := cons.Messages(jetstream.PullMaxMessages(consume.PullBuffer(batch)))
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	start := time.Now()
	for i := 0; i < n; i++ {
		m, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		_ = m.Ack()
	}
	return float64(n) / time.Since(start).Seconds()
}
