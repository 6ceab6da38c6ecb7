package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/projector"
	"github.com/otawatch/otawatch/services/simulator"
)

// TestClusterLeaderKill runs otawatch (bridge, projector, alerting,
// rollout, notify in one process, as "otawatch run" with nats.url naming
// the three nodes and nats.replicas 3) against a three-node cluster started
// from deploy/nats/cluster.conf, with a simulated fleet on Mosquitto going
// through a rollout. A third of the way in, the node leading SHADOW is
// killed; later it comes back and catches up. Then:
//
//   - every report the broker took (a tap subscriber sees each one) is in
//     SHADOW exactly once (by its MQTT topic and payload hash, and by event
//     id);
//   - ClickHouse has each report once (count() = uniqExact(event_id) over
//     the FINAL view), each device once in device_firmware, and README's
//     success-rate query agrees with the rollout's own per-wave count;
//   - the rollout completed;
//   - every device that failed raised device-failed once, and no alert was
//     raised twice;
//   - every notification reached the webhook once, as NOTIFY records it.
func TestClusterLeaderKill(t *testing.T) {
	const (
		devices  = 200
		waveSize = 20
	)
	cluster := testutil.StartCluster(t)
	mosq := testutil.StartMosquitto(t)
	db := testutil.ClickHouse(t)
	hook := newWebhookLog(t)

	dir := t.TempDir()
	secret := func(user string) string {
		path := filepath.Join(dir, user+".password")
		if err := os.WriteFile(path, []byte(cluster.Passwords[user]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	opsPort := testutil.FreePort(t)
	cfgFile := filepath.Join(dir, "otawatch.yaml")
	cfg := fmt.Sprintf(`data_dir: %s
log:
  level: info
nats:
  url: %s
  username: otawatch
  password_file: %s
  replicas: 3
  mqtt_listen: ""
mqtt:
  broker: %s
  lease_ttl: 2s
clickhouse:
  addr: %s
  database: %s
  batch_timeout: 100ms
  ack_wait: 10s
alerting:
  lease_ttl: 2s
rollout:
  lease_ttl: 2s
notify:
  route:
    receiver: hooks
    group_by: ["..."]
    group_wait: 0s
    group_interval: 1s
    repeat_interval: 24h
  receivers:
    - name: hooks
      webhook:
        url: %s/hook
  lease_ttl: 2s
ops:
  listen: 127.0.0.1:%d
`, dir, cluster.URLs(), secret(testutil.ClusterUserServices), mosq.URL, db.Addr, db.Database, hook.url, opsPort)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cliEnv := []string{"OTAWATCH_NATS_URL=" + cluster.URLs(), "OTAWATCH_NATS_USERNAME=" + testutil.ClusterUserCLI,
		"OTAWATCH_NATS_PASSWORD_FILE=" + secret(testutil.ClusterUserCLI)}

	// The tap: every report the broker accepts, by topic and payload hash.
	tap := newReportTap(t, mosq.URL)

	p := startOtawatch(t, nil, "run", "-c", cfgFile, "bridge", "projector", "alerting", "rollout", "notify")
	testutil.Eventually(t, 90*time.Second, readyz(opsPort), "otawatch never became ready\n%s", p.stderr)
	adminNC, js := cluster.Connect(t, testutil.ClusterUserAdmin)
	// The node to kill leads SHADOW and is the one otawatch is connected
	// to: its bridge loses the connection while it stores reports, and
	// the stream its leader.
	serving := cluster.ConnectedNode(t, "otawatch")
	cluster.MoveStreamLeader(t, adminNC, events.StreamShadow, serving)

	log := testLog()
	fleet, err := simulator.NewFleet(simulator.FleetConfig{Broker: mosq.URL, Mode: simulator.ModeFleet, Devices: devices,
		TimeScale: 100, FailureRate: 0.1, Seed: 15, ClientIDPrefix: "sim-cluster"}, log)
	if err != nil {
		t.Fatal(err)
	}
	runService(t, "simulator", fleet)
	select {
	case <-fleet.Ready():
	case <-time.After(60 * time.Second):
		t.Fatalf("the simulated fleet did not connect: %+v", fleet.Stats())
	}

	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append([]string{"rollout"}, args...), &Env{Stdout: &out, Stderr: &errb, Environ: cliEnv})
		return code, out.String(), errb.String()
	}
	var list []string
	for _, id := range fleet.DeviceIDs() {
		list = append(list, simulator.DefaultType+"/"+id)
	}
	spec := fmt.Sprintf("--id=cluster --target-version=4.2.0 --checksum=sha256:%s --url=https://fw.example/4.2.0.bin --wave-size=%d"+
		" --gate=0.5 --max-failure=0.5 --min-finished=5 --device-timeout=60s --rate=200 --start", strings.Repeat("42", 32), waveSize)
	var code int
	var out, errs string
	testutil.Eventually(t, 60*time.Second, func() bool {
		code, out, errs = cli(append(append([]string{"create"}, strings.Fields(spec)...), "--devices", strings.Join(list, ","))...)
		return code == 0
	}, "rollout create: exit %d\n%s%s", code, out, errs)
	job := func() events.RolloutJob {
		_, out, _ := cli("show", "cluster", "--json")
		var rep events.RolloutReply
		if json.Unmarshal([]byte(out), &rep) != nil || rep.Job == nil {
			return events.RolloutJob{}
		}
		return *rep.Job
	}

	// Kill the node leading SHADOW a third of the way in (each device
	// reports twice: in_progress, then completed or failed), bring it back
	// at two thirds.
	reported := func() int64 { return fleet.Stats().Sent() }
	testutil.Eventually(t, 120*time.Second, func() bool { return reported() >= 2*devices/3 },
		"the fleet did not report a third of its reports: %s", later(func() string {
			return fmt.Sprintf("%s; rollout %+v\n%s", fleet.Stats(), job(), p.stderr)
		}))
	leader := cluster.StreamLeader(t, events.StreamShadow)
	if leader != serving {
		t.Logf("SHADOW's leader moved from %s to %s before the kill", serving, leader)
	}
	wave, sentAtKill := job().Wave, reported()
	killedAt := time.Now()
	cluster.Kill(t, leader)
	next := cluster.StreamLeader(t, events.StreamShadow)
	t.Logf("killed %s, the SHADOW leader (otawatch connected to %s), in wave %d after %d reports; %s leads SHADOW %s later",
		leader, serving, wave, sentAtKill, next, time.Since(killedAt).Round(time.Millisecond))
	testutil.Eventually(t, 120*time.Second, func() bool { return reported() >= 4*devices/3 },
		"the fleet did not get to two thirds of its reports with %s down: %s", leader, later(func() string {
			return fmt.Sprintf("%s; rollout %+v\n%s", fleet.Stats(), job(), p.stderr)
		}))
	cluster.Restart(t, leader)
	t.Logf("restarted %s after %d reports", leader, reported())

	testutil.Eventually(t, 180*time.Second, func() bool { return job().Status != events.RolloutRunning && job().Status != "" },
		"the rollout did not finish: %s", later(func() string { return fmt.Sprintf("%+v\n%s", job(), p.stderr) }))
	final := job()
	if final.Status != events.RolloutCompleted {
		t.Fatalf("rollout %s (%s), want completed", final.Status, final.Reason)
	}
	for _, s := range events.StreamNames() {
		testutil.Eventually(t, 60*time.Second, func() bool { return testutil.StreamCurrent(js, s) == nil },
			"stream %s did not get all replicas current after %s came back: %s", s, leader,
			later(func() string { return fmt.Sprint(testutil.StreamCurrent(js, s)) }))
	}

	// The job completes once its last wave passes the gate: wait for the
	// devices still installing, and for their reports to be stored.
	testutil.Eventually(t, 120*time.Second, func() bool {
		st := fleet.Stats()
		return st.Installs >= devices && st.Installs == st.Completed+st.Failed+st.LocalFailures
	}, "the fleet did not finish installing: %s", later(func() string { return fleet.Stats().String() }))
	shadowReports := func() int {
		n := 0
		for _, m := range (&testutil.JetStream{JS: js}).Events(t, events.StreamShadow) {
			if strings.HasPrefix(m.Subject, events.SubjectShadowReported+".") {
				n++
			}
		}
		return n
	}
	testutil.Eventually(t, 60*time.Second, func() bool { return shadowReports() >= len(tap.reports()) },
		"SHADOW holds fewer reports than the broker took: %s", later(func() string {
			return fmt.Sprintf("%d of %d", shadowReports(), len(tap.reports()))
		}))

	// Reports: what the broker took, in SHADOW once each.
	stored := map[string]int{}
	ids := map[string]int{}
	failedDevices := map[string]bool{}
	ev := &testutil.JetStream{JS: js}
	for _, m := range ev.Events(t, events.StreamShadow) {
		e, err := events.Decode(m.Data)
		if err != nil {
			t.Fatalf("SHADOW %d: %v", m.Sequence, err)
		}
		if e.Type != events.TypeShadowReported {
			continue
		}
		var d events.ShadowReportedData
		if err := e.DecodeData(&d); err != nil {
			t.Fatalf("SHADOW %d: %v", m.Sequence, err)
		}
		stored[d.Topic+" "+d.PayloadSHA256]++
		ids[e.ID]++
		failedDevices[d.TypeID+"/"+d.DeviceID] = d.Firmware.Status == events.StatusFailed
	}
	sent := tap.reports()
	for r := range sent {
		if stored[r] != 1 {
			t.Errorf("report %s: in SHADOW %d times, want once", r, stored[r])
		}
	}
	for r, n := range stored {
		if _, ok := sent[r]; !ok {
			t.Errorf("SHADOW holds report %s (%d times) the broker never took", r, n)
		}
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s: in SHADOW %d times", id, n)
		}
	}
	reports := uint64(len(ids))

	// ClickHouse: every report once, in the documented queries too.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, err := projector.Dial(ctx, projector.Config{Addr: db.Addr, Username: "default"}, db.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rows, uniq uint64
	testutil.Eventually(t, 120*time.Second, func() bool {
		err := conn.QueryRow(ctx, "SELECT count(), uniqExact(event_id) FROM shadow_events FINAL").Scan(&rows, &uniq)
		return err == nil && rows >= reports
	}, "shadow_events holds fewer rows than SHADOW's %d reports: %s", reports, later(func() string { return fmt.Sprint(rows) }))
	if rows != reports || uniq != reports {
		t.Errorf("shadow_events FINAL: %d rows, %d distinct events; SHADOW holds %d reports", rows, uniq, reports)
	}
	var firmware uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM device_firmware FINAL").Scan(&firmware); err != nil {
		t.Fatal(err)
	}
	if firmware != devices {
		t.Errorf("device_firmware FINAL: %d rows, want one per device (%d)", firmware, devices)
	}
	// README's success-rate query: job, wave, succeeded, failed, rate.
	byWave := map[string]string{}
	for _, row := range testutil.QueryRows(t, conn, testutil.DocQueries(t, "../../README.md")["success-rate"]) {
		if f := strings.Split(row, "\t"); len(f) == 5 && f[0] == "cluster" {
			byWave[f[1]] = f[2] + " succeeded, " + f[3] + " failed"
		}
	}
	// The rollout's view once every device finished (it keeps counting
	// after the job completed).
	final = job()
	for _, w := range final.Waves {
		want := fmt.Sprintf("%d succeeded, %d failed", w.Progress.Completed, w.Progress.Failed)
		if got := byWave[fmt.Sprint(w.Wave)]; got != want {
			t.Errorf("wave %d: the success-rate query counts %q, the rollout %q", w.Wave, got, want)
		}
	}

	// Alerts: each raised once; device-failed for every failed device.
	alerts := alertSet(t, ev)
	raisedFailed := map[string]int{}
	for _, m := range ev.Events(t, events.StreamAlerts) {
		if a, ok := events.ParseAlertSubject(m.Subject); ok && a.State == events.AlertRaised && a.RuleID == "device-failed" {
			e, _ := events.Decode(m.Data)
			var d events.AlertData
			if err := e.DecodeData(&d); err != nil {
				t.Fatal(err)
			}
			raisedFailed[d.TypeID+"/"+d.DeviceID]++
		}
	}
	failed := 0
	for dev, f := range failedDevices {
		if f {
			failed++
			if raisedFailed[dev] != 1 {
				t.Errorf("device %s failed: device-failed raised %d times, want once", dev, raisedFailed[dev])
			}
		}
	}
	if len(raisedFailed) != failed {
		t.Errorf("device-failed raised for %d devices, %d failed", len(raisedFailed), failed)
	}

	// Notifications: each delivered once, as NOTIFY records it.
	notifySent := func() map[string]bool {
		out := map[string]bool{}
		for _, m := range ev.Events(t, events.StreamNotify) {
			if m.Subject == events.NotifySubject("hooks", events.NotifySent) {
				out[m.Header.Get(jetstream.MsgIDHeader)] = true
			}
		}
		return out
	}
	var recorded map[string]bool
	testutil.Eventually(t, 60*time.Second, func() bool {
		recorded = notifySent()
		return len(recorded) == len(hookIDs(hook)) && hookGroups(hook, `rule="device-failed"`) == failed
	}, "%s", later(func() string {
		return fmt.Sprintf("NOTIFY records %d sent notifications, the webhook got %d; %d device-failed alerts notified of %d",
			len(recorded), len(hookIDs(hook)), hookGroups(hook, `rule="device-failed"`), failed)
	}))
	for id, n := range hookIDs(hook) {
		if n != 1 {
			t.Errorf("notification %s reached the webhook %d times", id, n)
		}
	}

	var notified uint64
	testutil.Eventually(t, 60*time.Second, func() bool {
		return conn.QueryRow(ctx, "SELECT count() FROM notifications FINAL").Scan(&notified) == nil &&
			notified == testutil.StreamMsgs(js, events.StreamNotify)
	}, "%s", later(func() string {
		return fmt.Sprintf("the notifications table holds %d rows, NOTIFY %d events", notified, testutil.StreamMsgs(js, events.StreamNotify))
	}))
	st := fleet.Stats()
	t.Logf("counts: reports sent by the fleet %d (broker acks), taken by the broker %d distinct, in SHADOW %d, "+
		"shadow_events rows %d; devices failed %d; ALERTS events %d; notifications delivered %d (webhook requests %d, NOTIFY sent %d); "+
		"rollout %s, %d waves, %d completed, %d failed",
		st.Sent(), len(sent), reports, rows, failed, len(alerts), len(hookIDs(hook)), hook.requests(), len(recorded),
		final.Status, len(final.Waves), final.Total.Completed, final.Total.Failed)
	if err := p.stop(t); err != nil {
		t.Errorf("otawatch stop: %v\n%s", err, p.stderr)
	}
}

// TestClusterStreamsUndeletable: with deploy/nats/cluster.conf's
// permissions, neither the services' user nor the CLI's may delete or purge
// any otawatch stream (DenyDelete and DenyPurge do not stop DeleteStream);
// the server refuses the publish as a permissions violation and the stream
// stays. The same users' permitted calls work, and the admin user's
// DeleteStream deletes (a scratch stream), so a refusal is the permissions'.
func TestClusterStreamsUndeletable(t *testing.T) {
	cluster := testutil.StartCluster(t)
	_, admin := cluster.Connect(t, testutil.ClusterUserAdmin)
	ensureStreams(t, admin, events.StreamOptions{Replicas: 3})

	for _, user := range []string{testutil.ClusterUserServices, testutil.ClusterUserCLI} {
		t.Run(user, func(t *testing.T) {
			var mu sync.Mutex
			var violations []string
			nc, js := cluster.Connect(t, user, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				mu.Lock()
				defer mu.Unlock()
				violations = append(violations, err.Error())
			}))
			refused := func(subject string) bool {
				mu.Lock()
				defer mu.Unlock()
				for _, v := range violations {
					if strings.Contains(v, "Permissions Violation") && strings.Contains(v, subject) {
						return true
					}
				}
				return false
			}
			// A refused request gets no reply: each call waits out a
			// short timeout, and the server's -ERR names the subject.
			for _, name := range events.StreamNames() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := js.DeleteStream(ctx, name)
				cancel()
				if err == nil {
					t.Errorf("%s deleted stream %s", user, name)
					continue
				}
				subject := "$JS.API.STREAM.DELETE." + name
				testutil.Eventually(t, 10*time.Second, func() bool { return refused(subject) },
					"DeleteStream(%s) failed with %v, but the server reported no permissions violation for %s", name, err, subject)
				ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
				s, err := js.Stream(ctx, name)
				cancel()
				if err != nil {
					t.Errorf("stream %s after the refused delete: %v", name, err)
					continue
				}
				ctx, cancel = context.WithTimeout(context.Background(), time.Second)
				err = s.Purge(ctx)
				cancel()
				if err == nil {
					t.Errorf("%s purged stream %s", user, name)
				}
				subject = "$JS.API.STREAM.PURGE." + name
				testutil.Eventually(t, 10*time.Second, func() bool { return refused(subject) },
					"Purge(%s) failed with %v, but the server reported no permissions violation for %s", name, err, subject)
			}
			// Permitted: reading stream info, and making and deleting a
			// consumer, on the same connection.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := js.Stream(ctx, events.StreamShadow); err != nil {
				t.Errorf("%s may not read SHADOW's info: %v", user, err)
			}
			durable := "probe-" + strings.ReplaceAll(user, "-", "_")
			if _, err := js.CreateOrUpdateConsumer(ctx, events.StreamShadow, jetstream.ConsumerConfig{Durable: durable}); err != nil {
				t.Errorf("%s may not create a consumer: %v", user, err)
			} else if err := js.DeleteConsumer(ctx, events.StreamShadow, durable); err != nil {
				t.Errorf("%s may not delete its consumer: %v", user, err)
			}
			if !nc.IsConnected() {
				t.Errorf("%s's connection was closed by the refusals", user)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range events.StreamNames() {
		if _, err := admin.Stream(ctx, name); err != nil {
			t.Errorf("stream %s is gone: %v", name, err)
		}
	}
	if _, err := admin.CreateStream(ctx, jetstream.StreamConfig{Name: "SCRATCH", Subjects: []string{"scratch.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if err := admin.DeleteStream(ctx, "SCRATCH"); err != nil {
		t.Errorf("admin may not delete a stream: %v", err)
	}
}

// later formats a failure message's detail when it is printed, not when
// the wait begins.
type later func() string

func (l later) String() string { return l() }

// hookIDs are the notification ids the webhook received (faults_test.go's
// webhookLog), with how many requests each.
func hookIDs(l *webhookLog) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.byID))
	for id, n := range l.byID {
		out[id] = n
	}
	return out
}

// hookGroups is the number of alert groups notified whose key contains
// label (with group_by ["..."] a group is one alert, its key its labels).
func hookGroups(l *webhookLog, label string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for g := range l.byGroup {
		if strings.Contains(g, label) {
			n++
		}
	}
	return n
}

// reportTap records every device report a broker accepts: topic and the
// SHA-256 of the payload, as the bridge records them (payloadSha256).
type reportTap struct {
	mu   sync.Mutex
	seen map[string]int
}

func newReportTap(t *testing.T, broker string) *reportTap {
	t.Helper()
	tap := &reportTap{seen: map[string]int{}}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID("report-tap").SetCleanSession(false).
		SetOrderMatters(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("tap connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	tok := c.Subscribe(events.ReportTopicFilter, 1, func(_ mqtt.Client, m mqtt.Message) {
		sum := sha256.Sum256(m.Payload())
		tap.mu.Lock()
		tap.seen[m.Topic()+" "+hex.EncodeToString(sum[:])]++
		tap.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("tap subscribe: %v", tok.Error())
	}
	return tap
}

// reports are the distinct reports seen, with how often each came.
func (r *reportTap) reports() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.seen))
	for k, v := range r.seen {
		out[k] = v
	}
	return out
}
