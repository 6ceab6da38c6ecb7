package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/alerting"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/projector"
	"github.com/otawatch/otawatch/services/simulator"
)

// Two projector and two alerting instances, each with its own connection
// to a three-node cluster (R3 streams), process a fleet's events as one
// instance of each does: the projectors share the durable consumers (each
// is delivered part of every stream) and their ClickHouse tables equal a
// single-instance replay of the same log (projector.Verify, what "replay
// verify" runs); the alerting instances share a lease, the active one is
// stopped halfway and the standby carries on, and ALERTS holds the events
// a single instance publishes from the same log, each once.
//
// The fleet's history is synthetic and fixed (scaleFleet), so a single
// instance's answer is known: the rounds are published while the
// instances run, each once the projectors took the round before, so every
// instance sees reports whose desired event went to the other.
func TestScaleOutProjectorAlerting(t *testing.T) {
	cluster := testutil.StartCluster(t)
	_, js := cluster.Connect(t, testutil.ClusterUserServices)
	streams := events.StreamOptions{Replicas: 3}
	ensureStreams(t, js, streams)
	db := testutil.ClickHouse(t)
	log := testLog()

	chCfg := projector.Config{Addr: db.Addr, Database: db.Database, BatchSize: 40, BatchTimeout: 20 * time.Millisecond, AckWait: 10 * time.Second}
	chCfg.SetDefaults()
	var projectors []*projector.Service
	for i := range 2 {
		nc, njs := cluster.Connect(t, testutil.ClusterUserServices)
		p, err := projector.New(chCfg, svc.Deps{Log: log.With("instance", i), NC: nc, JS: njs, Streams: streams, Health: svc.NewHealth()})
		if err != nil {
			t.Fatal(err)
		}
		projectors = append(projectors, p)
		runService(t, fmt.Sprintf("projector %d", i), p)
	}
	// The alerting instances tick on clocks that never move: the rules
	// run on events only, so a single instance's alerts are a function
	// of the log.
	alertCfg := alerting.Config{LeaseTTL: 2 * time.Second}
	var alerters []*alerting.Service
	var stops []func()
	for i := range 2 {
		nc, njs := cluster.Connect(t, testutil.ClusterUserServices)
		a, err := alerting.New(alertCfg, svc.Deps{Log: log.With("instance", i), NC: nc, JS: njs, Streams: streams,
			Health: svc.NewHealth(), Clock: testutil.NewFakeClock(scaleT0)})
		if err != nil {
			t.Fatal(err)
		}
		alerters = append(alerters, a)
		stops = append(stops, runService(t, fmt.Sprintf("alerting %d", i), a))
	}
	stopped := map[int]bool{}
	active := func() int {
		for i, a := range alerters {
			if st := a.Status(); !stopped[i] && !st.Standby && st.CaughtUp {
				return i
			}
		}
		return -1
	}
	testutil.Eventually(t, 60*time.Second, func() bool { return active() >= 0 }, "no alerting instance became active")

	// Both projectors pull from SHADOW's durable before the fleet reports
	// (a pull sent before the new consumer's leader was elected is lost,
	// and the client sends another only after its heartbeat timeout).
	testutil.Eventually(t, 90*time.Second, func() bool { return pullsWaiting(js, events.StreamShadow, events.ConsumerProjectorShadow) >= 2 },
		"the two projectors are not both pulling from %s", events.ConsumerProjectorShadow)

	rounds := scaleFleet(400, 40)
	var shadowLast uint64
	for r, round := range rounds {
		if r == len(rounds)/2 {
			// The active alerting instance stops halfway; the standby
			// takes the lease and goes on from what ALERTS holds.
			was := active()
			stops[was]()
			stopped[was] = true
			testutil.Eventually(t, 60*time.Second, func() bool { a := active(); return a >= 0 && a != was },
				"the standby alerting instance did not take over")
			t.Logf("round %d of %d: alerting instance %d stopped, %d took over", r+1, len(rounds), was, active())
		}
		shadowLast = publishAll(t, js, round)
		waitConsumed(t, js, events.StreamShadow, events.ConsumerProjectorShadow, shadowLast)
	}
	for i, p := range projectors {
		st := p.Stats()[events.StreamShadow]
		t.Logf("projector %d: %d SHADOW rows in %d batches", i, st.Rows, st.Batches)
		if st.Rows == 0 {
			t.Errorf("projector %d wrote no SHADOW row: the instances did not share the work", i)
		}
	}
	a := alerters[active()]
	testutil.Eventually(t, 60*time.Second, func() bool { return a.Status().ShadowSeq >= shadowLast },
		"the active alerting instance did not reach SHADOW %d: %+v", shadowLast, a.Status())

	// The projectors' tables against one replay of the same log.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	refDB := db.Database + "_single"
	if _, err := projector.Replay(ctx, chCfg, js, nil, projector.ReplayOptions{Database: refDB}); err != nil {
		t.Fatalf("replay into %s: %v", refDB, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("clickhouse database %s kept for inspection", refDB)
			return
		}
		dropDatabase(t, db.Addr, refDB)
	})
	conn, err := projector.Open(ctx, chCfg, db.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cmp, err := projector.Verify(ctx, conn, db.Database, refDB)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cmp {
		if !c.Same() {
			t.Errorf("table %s: two instances %d rows (sum %d), one instance %d rows (sum %d); differences: %v",
				c.Table, c.RowsA, c.SumA, c.RowsB, c.SumB, c.Differences)
		} else {
			t.Logf("table %s: %d rows, same as one instance", c.Table, c.RowsA)
		}
	}
	var withJob uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM shadow_events FINAL WHERE job_id != ''").Scan(&withJob); err != nil {
		t.Fatal(err)
	}
	if withJob == 0 {
		t.Error("no report has its job: the fleet history lost its desired events")
	}

	// One alerting instance on a server of its own, fed the same log.
	single := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	var singleLast uint64
	for _, round := range rounds {
		singleLast = publishAll(t, single.JS, round)
	}
	if singleLast != shadowLast {
		t.Fatalf("the single server's SHADOW ends at %d, the cluster's at %d", singleLast, shadowLast)
	}
	ref, err := alerting.New(alertCfg, svc.Deps{Log: log.With("instance", "single"), NC: single.NC, JS: single.JS,
		Streams: events.StreamOptions{Replicas: 1}, Health: svc.NewHealth(), Clock: testutil.NewFakeClock(scaleT0)})
	if err != nil {
		t.Fatal(err)
	}
	runService(t, "alerting single", ref)
	testutil.Eventually(t, 60*time.Second, func() bool { return ref.Status().ShadowSeq >= singleLast },
		"the single alerting instance did not reach SHADOW %d: %+v", singleLast, ref.Status())

	got := alertSet(t, &testutil.JetStream{JS: js})
	want := alertSet(t, single)
	if len(want) == 0 {
		t.Fatal("the single instance raised no alert: the fleet history does not exercise the rules")
	}
	for id, w := range want {
		if g, ok := got[id]; !ok {
			t.Errorf("alert event %s (%s) is missing", id, w)
		} else if g != w {
			t.Errorf("alert event %s: %s, one instance: %s", id, g, w)
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("alert event %s (%s) is one a single instance does not publish", id, g)
		}
	}
	t.Logf("ALERTS: %d events, as one instance", len(got))

	// One active instance at a time: ALERTS holds one publisher's run of
	// events, then the other's, never the two interleaved (the same
	// events from two active instances would be stored whichever came
	// first, ids being deterministic).
	runs := holderRuns(t, &testutil.JetStream{JS: js})
	if len(runs) > 2 {
		t.Errorf("ALERTS interleaves the alerting instances' events: %s", strings.Join(runs, ", "))
	}
	t.Logf("ALERTS by publisher: %s", strings.Join(runs, ", "))
}

// holderRuns is ALERTS's events by the instance that published them
// (alerting.HeaderHolder), as runs: "HOLDER xN" for N events in a row.
func holderRuns(t *testing.T, js *testutil.JetStream) []string {
	t.Helper()
	var runs []string
	last, n := "", 0
	for _, m := range js.Events(t, events.StreamAlerts) {
		h := m.Header.Get(alerting.HeaderHolder)
		if h == "" {
			t.Errorf("ALERTS %d has no %s header", m.Sequence, alerting.HeaderHolder)
		}
		if h != last && n > 0 {
			runs = append(runs, fmt.Sprintf("%s x%d", last, n))
			n = 0
		}
		last = h
		n++
	}
	if n > 0 {
		runs = append(runs, fmt.Sprintf("%s x%d", last, n))
	}
	return runs
}

// scaleT0 is the synthetic fleet's first event time.
var scaleT0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// shadowEvent is one event for SHADOW: subject, id (the Nats-Msg-Id) and
// the envelope.
type shadowEvent struct {
	subject, id string
	data        []byte
}

// scaleFleet is a synthetic rollout's SHADOW history, in rounds to
// publish one after another: job j1 sends 4.2.0 to n devices (types
// sensor and gateway) in waves of waveSize, and each round holds the next
// wave's desired events and the reports (in_progress, then completed or
// failed) of the wave before; then job j2 sends it again to the devices
// that failed, which complete. Every value follows from the device's
// index: about one device in eleven fails (two error codes), one in
// thirty-seven takes seven times as long.
func scaleFleet(n, waveSize int) [][]shadowEvent {
	type dev struct{ typ, id string }
	devs := make([]dev, n)
	for i := range devs {
		devs[i] = dev{[]string{"sensor", "gateway"}[i%2], fmt.Sprintf("s-%05d", i)}
	}
	at := func(round, k int) time.Time {
		return scaleT0.Add(time.Duration(round)*time.Minute + time.Duration(k)*time.Second)
	}
	desired := func(d dev, job string, wave int, when time.Time) shadowEvent {
		data := events.ShadowDesiredData{TypeID: d.typ, DeviceID: d.id, JobID: job, Wave: wave,
			Firmware: events.DesiredFirmware{Version: "4.2.0", Checksum: "sha256:42", URL: "https://fw.example/4.2.0.bin"}}
		return mkShadowEvent(events.IdentityID("sd", d.typ, d.id, job, strconv.Itoa(wave)), events.SourceRollout,
			events.TypeShadowDesired, events.ShadowDesiredSubject(d.typ, d.id), when, data)
	}
	report := func(d dev, status string, duration float64, code string, when time.Time) shadowEvent {
		fw := events.Firmware{Version: "4.2.0", Timestamp: when, Status: status, Checksum: "sha256:42",
			PreviousVersion: "4.1.5", UpdateDuration: duration}
		if code != "" {
			fw.ErrorCode = &code
		}
		return mkShadowEvent(events.ReportEventID(d.typ, d.id, fw), events.SourceBridge, events.TypeShadowReported,
			events.ShadowReportedSubject(d.typ, d.id), when,
			events.ShadowReportedData{TypeID: d.typ, DeviceID: d.id, Topic: events.ReportTopic(d.typ, d.id), Firmware: fw})
	}
	var rounds [][]shadowEvent
	var failed []dev
	waves := (n + waveSize - 1) / waveSize
	for r := 0; r <= waves; r++ {
		var round []shadowEvent
		k := 0
		if r < waves {
			for i := r * waveSize; i < min(n, (r+1)*waveSize); i++ {
				round = append(round, desired(devs[i], "j1", r+1, at(r, k)))
				k++
			}
		}
		if r > 0 {
			for i := (r - 1) * waveSize; i < min(n, r*waveSize); i++ {
				d := devs[i]
				round = append(round, report(d, events.StatusInProgress, 0, "", at(r, k)))
				k++
				duration := float64(90 + i%50)
				if i%37 == 5 {
					duration *= 7
				}
				switch {
				case i%11 == 3:
					round = append(round, report(d, events.StatusFailed, duration/3, []string{"E_CHECKSUM", "E_TIMEOUT"}[i%2], at(r, k)))
					failed = append(failed, d)
				default:
					round = append(round, report(d, events.StatusCompleted, duration, "", at(r, k)))
				}
				k++
			}
		}
		rounds = append(rounds, round)
	}
	var retry, done []shadowEvent
	for k, d := range failed {
		retry = append(retry, desired(d, "j2", 1, at(waves+1, k)))
		done = append(done, report(d, events.StatusInProgress, 0, "", at(waves+2, 2*k)), report(d, events.StatusCompleted, 120, "", at(waves+2, 2*k+1)))
	}
	return append(rounds, retry, done)
}

func mkShadowEvent(id, source, typ, subject string, at time.Time, data any) shadowEvent {
	ev, err := events.New(id, source, typ, subject, at, data)
	if err != nil {
		panic(err)
	}
	b, err := ev.Marshal()
	if err != nil {
		panic(err)
	}
	return shadowEvent{subject: subject, id: id, data: b}
}

// publishAll stores evs in order (each with its Nats-Msg-Id, retried
// through a leader change) and returns the last one's stream sequence.
func publishAll(t *testing.T, js jetstream.JetStream, evs []shadowEvent) uint64 {
	t.Helper()
	var last uint64
	for _, e := range evs {
		msg := &nats.Msg{Subject: e.subject, Data: e.data, Header: nats.Header{jetstream.MsgIDHeader: {e.id}}}
		err := events.Retry(context.Background(), 10, func(ctx context.Context) error {
			ack, err := js.PublishMsg(ctx, msg)
			if err == nil {
				last = ack.Sequence
			}
			return err
		})
		if err != nil {
			t.Fatalf("publish %s: %v", e.subject, err)
		}
	}
	return last
}

// waitConsumed waits until durable has every message of stream up to seq
// acknowledged.
func waitConsumed(t *testing.T, js jetstream.JetStream, stream, durable string, seq uint64) {
	t.Helper()
	var info *jetstream.ConsumerInfo
	testutil.Eventually(t, 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := js.Consumer(ctx, stream, durable)
		if err != nil {
			return false
		}
		if info, err = c.Info(ctx); err != nil {
			return false
		}
		return info.AckFloor.Stream >= seq
	}, "consumer %s of %s did not acknowledge up to %d: %+v", durable, stream, seq, info)
}

// pullsWaiting is the number of pull requests waiting on a durable
// consumer (0 when it cannot be read).
func pullsWaiting(js jetstream.JetStream, stream, durable string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, stream, durable)
	if err != nil {
		return 0
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0
	}
	return info.NumWaiting
}

// alertSet reads ALERTS: event id -> subject and data. It fails the test
// on an id stored twice, and on an alert raised again before it was
// resolved (two instances publishing the same alert).
func alertSet(t *testing.T, js *testutil.JetStream) map[string]string {
	t.Helper()
	out := map[string]string{}
	raised := map[string]bool{}
	for _, m := range js.Events(t, events.StreamAlerts) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatalf("ALERTS %d: %v", m.Sequence, err)
		}
		if _, dup := out[ev.ID]; dup {
			t.Errorf("ALERTS %d: event %s stored twice", m.Sequence, ev.ID)
		}
		out[ev.ID] = m.Subject + " " + string(ev.Data)
		var a events.AlertData
		if err := ev.DecodeData(&a); err != nil {
			t.Fatalf("ALERTS %d: %v", m.Sequence, err)
		}
		switch a.State {
		case events.AlertRaised:
			if raised[a.Key] {
				t.Errorf("ALERTS %d: alert %s raised again while raised", m.Sequence, a.Key)
			}
			raised[a.Key] = true
		case events.AlertResolved:
			raised[a.Key] = false
		}
	}
	return out
}

// ensureStreams creates otawatch's streams with o, as every service does
// at start.
func ensureStreams(t *testing.T, js jetstream.JetStream, o events.StreamOptions) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, o); err != nil {
		t.Fatal(err)
	}
}

// runService runs s until the test ends; the returned stop ends it sooner
// (a clean stop) and waits for it. Either way Run must return nil.
func runService(t *testing.T, name string, s svc.Service) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: Run returned %v", name, err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("%s did not stop within 60s", name)
		}
	}
	t.Cleanup(stop)
	return stop
}

// testLog discards service logs unless OTAWATCH_TEST_LOG is set.
func testLog() *slog.Logger {
	if os.Getenv("OTAWATCH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// dropDatabase drops a database a test made besides testutil.ClickHouse's.
func dropDatabase(t *testing.T, addr, database string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := projector.Dial(ctx, projector.Config{Addr: addr, Username: "default"}, "")
	if err != nil {
		t.Logf("drop %s: %v", database, err)
		return
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS `"+database+"`"); err != nil {
		t.Logf("drop %s: %v", database, err)
	}
}

// TestBridgePartitions: the bridge scaled by topic partition, as the
// README's scale-out section sets it up. Two partitions of the device
// topic space (type sensor, type gateway), each with its own client id
// and so its own lease and broker session, each run by two "otawatch run
// bridge" processes on the cluster: one active, one standby. The fleet
// reports on both; the active process of one partition is SIGKILLed
// halfway, and its standby takes over the partition's session. Then every
// report the broker took is in SHADOW once, the gateway partition's
// bridge handled exactly the gateway reports (none of the sensor
// partition's), the sensor partition's new active bridge no gateway
// report, and the gateway standby nothing.
func TestBridgePartitions(t *testing.T) {
	const count = 6000
	cluster := testutil.StartCluster(t)
	mosq := testutil.StartMosquitto(t)
	_, js := cluster.Connect(t, testutil.ClusterUserAdmin)
	ensureStreams(t, js, events.StreamOptions{Replicas: 3})
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "nats.password")
	if err := os.WriteFile(pwFile, []byte(cluster.Passwords[testutil.ClusterUserServices]), 0o600); err != nil {
		t.Fatal(err)
	}
	tap := newReportTap(t, mosq.URL)

	type bridgeProc struct {
		partition string
		port      int
		proc      *process
	}
	start := func(partition string) *bridgeProc {
		b := &bridgeProc{partition: partition, port: testutil.FreePort(t)}
		b.proc = startOtawatch(t, []string{
			"OTAWATCH_DATA_DIR=" + t.TempDir(),
			"OTAWATCH_LOG_LEVEL=info",
			"OTAWATCH_NATS_URL=" + cluster.URLs(),
			"OTAWATCH_NATS_USERNAME=" + testutil.ClusterUserServices,
			"OTAWATCH_NATS_PASSWORD_FILE=" + pwFile,
			"OTAWATCH_NATS_REPLICAS=3",
			"OTAWATCH_NATS_MQTT_LISTEN=",
			"OTAWATCH_MQTT_BROKER=" + mosq.URL,
			"OTAWATCH_MQTT_CLIENT_ID=otawatch-bridge-" + partition,
			"OTAWATCH_MQTT_TOPIC=" + events.ReportTopic(partition, "+"),
			"OTAWATCH_MQTT_PRESENCE_TOPIC=" + events.PresenceTopic(partition, "+"),
			"OTAWATCH_MQTT_LEASE_TTL=2s",
			"OTAWATCH_CLICKHOUSE_ADDR=",
			fmt.Sprintf("OTAWATCH_OPS_LISTEN=127.0.0.1:%d", b.port),
		}, "run", "bridge")
		return b
	}
	var procs []*bridgeProc
	for _, partition := range []string{"sensor", "gateway"} {
		procs = append(procs, start(partition), start(partition))
	}
	// /readyz: the active bridge of a partition is ready, its standby
	// says it stands by.
	probe := func(b *bridgeProc) (int, string) { return httpGet(fmt.Sprintf("http://127.0.0.1:%d/readyz", b.port)) }
	ready := func(b *bridgeProc) bool { code, _ := probe(b); return code == http.StatusOK }
	// roles finds a partition's active bridge and its standby among the
	// running processes, when there is exactly one of each.
	roles := func(partition string) (act, standby *bridgeProc) {
		for _, b := range procs {
			if b.partition != partition || b.proc.cmd.ProcessState != nil {
				continue
			}
			switch code, body := probe(b); {
			case code == http.StatusOK && act == nil:
				act = b
			case code == http.StatusServiceUnavailable && strings.Contains(body, "standby") && standby == nil:
				standby = b
			default:
				return nil, nil
			}
		}
		return act, standby
	}
	for _, partition := range []string{"sensor", "gateway"} {
		testutil.Eventually(t, 90*time.Second, func() bool { a, s := roles(partition); return a != nil && s != nil },
			"partition %s has not one active bridge and one standby", partition)
	}

	fleet, err := simulator.NewFleet(simulator.FleetConfig{Broker: mosq.URL, Mode: simulator.ModeStandalone, Devices: 100,
		Types: []string{"sensor", "gateway"}, Rate: 500, Count: count, TimeScale: 1000, Seed: 4, ClientIDPrefix: "sim-part"}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fleet.Run(context.Background()) }()

	testutil.Eventually(t, 60*time.Second, func() bool { return fleet.Stats().Sent() >= count/3 },
		"the fleet did not send a third of its reports: %s", later(func() string { return fleet.Stats().String() }))
	var killed, standby *bridgeProc
	testutil.Eventually(t, 30*time.Second, func() bool { killed, standby = roles("sensor"); return killed != nil },
		"partition sensor has not one active bridge and one standby")
	if err := killed.proc.cmd.Process.Kill(); err != nil { // SIGKILL: the lease is not released
		t.Fatal(err)
	}
	<-killed.proc.done
	killedAt := time.Now()
	testutil.Eventually(t, 60*time.Second, func() bool { return ready(standby) },
		"the sensor standby did not take over\n%s", standby.proc.stderr)
	t.Logf("sensor bridge SIGKILLed after %d reports; its standby took over %s later", fleet.Stats().Sent(),
		time.Since(killedAt).Round(time.Millisecond))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(120 * time.Second):
		t.Fatalf("the fleet did not send its reports: %s", fleet.Stats())
	}

	// Every report the broker took is in SHADOW once.
	byType := map[string]uint64{}
	var stored map[string]int
	testutil.Eventually(t, 60*time.Second, func() bool {
		stored, byType = map[string]int{}, map[string]uint64{}
		for _, m := range (&testutil.JetStream{JS: js}).Events(t, events.StreamShadow) {
			e, err := events.Decode(m.Data)
			if err != nil || e.Type != events.TypeShadowReported {
				continue
			}
			var d events.ShadowReportedData
			if err := e.DecodeData(&d); err != nil {
				t.Fatal(err)
			}
			stored[d.Topic+" "+d.PayloadSHA256]++
			byType[d.TypeID]++
		}
		return len(stored) >= len(tap.reports())
	}, "SHADOW holds fewer reports than the broker took: %s", later(func() string {
		return fmt.Sprintf("%d of %d", len(stored), len(tap.reports()))
	}))
	sent := tap.reports()
	for r := range sent {
		if stored[r] != 1 {
			t.Errorf("report %s: in SHADOW %d times, want once", r, stored[r])
		}
	}
	if len(stored) != len(sent) {
		t.Errorf("SHADOW holds %d distinct reports, the broker took %d", len(stored), len(sent))
	}

	// What each surviving bridge handled (/metrics).
	handled := func(b *bridgeProc) uint64 {
		code, body := httpGet(fmt.Sprintf("http://127.0.0.1:%d/metrics", b.port))
		if code != http.StatusOK {
			t.Fatalf("/metrics of the %s bridge on port %d: %d", b.partition, b.port, code)
		}
		var n uint64
		for _, m := range regexp.MustCompile(`(?m)^otawatch_bridge_reports_total\{outcome="\w+"\} (\d+)$`).FindAllStringSubmatch(body, -1) {
			v, _ := strconv.ParseUint(m[1], 10, 64)
			n += v
		}
		return n
	}
	var gwActive, gwStandby *bridgeProc
	testutil.Eventually(t, 30*time.Second, func() bool { gwActive, gwStandby = roles("gateway"); return gwActive != nil },
		"partition gateway has not one active bridge and one standby")
	if got := handled(gwActive); got != byType["gateway"] {
		t.Errorf("the gateway bridge handled %d reports, SHADOW holds %d gateway reports", got, byType["gateway"])
	}
	if got := handled(gwStandby); got != 0 {
		t.Errorf("the gateway standby handled %d reports", got)
	}
	if got := handled(standby); got == 0 || got > byType["sensor"] {
		t.Errorf("the sensor bridge that took over handled %d reports, SHADOW holds %d sensor reports", got, byType["sensor"])
	}
	t.Logf("reports: fleet sent %d, broker took %d distinct, SHADOW %d (sensor %d, gateway %d); handled by the gateway bridge %d, by the sensor bridge after the takeover %d",
		fleet.Stats().Sent(), len(sent), len(stored), byType["sensor"], byType["gateway"], handled(gwActive), handled(standby))
}
