package app

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/notify/webhook"
	"github.com/otawatch/otawatch/services/projector"
	"github.com/otawatch/otawatch/services/simulator"
)

// The fleet script every fault test runs: faultDevices simulated devices
// (fleet mode, seeded, so each device's install takes the same time and
// ends the same way in every run) install faultTarget in waves of
// faultWaveSize, driven by the rollout service. A device that fails raises
// device-failed (the only rule loaded), which notify delivers to a webhook.
// At the time scale, an install takes about 2 s and the rollout about
// 15 s; the fault strikes once faultAt reports are stored, mid-rollout.
const (
	faultDevices  = 100
	faultWaveSize = 20
	faultAt       = 60
	faultJob      = "job-faults"
	faultTarget   = "4.2.1"
	faultType     = simulator.DefaultType
)

// faultFleet is the fleet of the script. Its report retries (in device
// time, 1 s to 10 s once scaled) outlast a broker restart, so no device
// gives an update up.
func faultFleet(broker string) simulator.FleetConfig {
	return simulator.FleetConfig{
		Broker: broker, Mode: simulator.ModeFleet, Devices: faultDevices, TimeScale: 60,
		FailureRate: 0.05, Seed: 7, ClientIDPrefix: "fault", NoPresence: true,
		Backoff: []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute},
	}
}

// TestFaults runs the fleet script once without a fault, then once per
// fault, each on a fresh system: the MQTT broker restarted; the bridge,
// projector, alerting, rollout and notify processes each SIGKILLed and
// started again; ClickHouse stopped for a minute; the process of the
// embedded server (and every service) SIGKILLed and started again on its
// data dir. After each run, every report a device had acknowledged is on
// SHADOW exactly once, ClickHouse holds what a replay of the log into a
// fresh database holds (projector.Verify), the rollout completed, each
// alert reached the webhook as one notification, and the documented
// queries, every device's report history, the alerts and the rollout's
// events are those of the run without a fault.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault runs take a few minutes")
	}
	clean := runFaultScript(t, "clean", newSplitSystem(t, nil), nil)

	tests := []struct {
		name string
		// own: the system has a ClickHouse server of its own.
		own      bool
		embedded bool
		fault    func(t *testing.T, s *faultSystem) faultRecovery
	}{
		{name: "mqtt broker restarted", fault: func(t *testing.T, s *faultSystem) faultRecovery {
			connected := strings.Count(s.procs["bridge"].p.stderr.String(), `msg="mqtt connected"`)
			start := time.Now()
			s.mosq.Restart(t)
			back := time.Since(start)
			testutil.Eventually(t, 60*time.Second, func() bool {
				return strings.Count(s.procs["bridge"].p.stderr.String(), `msg="mqtt connected"`) > connected
			}, "the bridge never reconnected after the broker restart\n%s", s.procs["bridge"].p.stderr)
			return faultRecovery{what: "broker back (stop+start)", took: back, recovered: "bridge reconnected", after: time.Since(start)}
		}},
		{name: "bridge killed", fault: killService("bridge")},
		{name: "projector killed", fault: killService("projector")},
		{name: "alerting killed", fault: killService("alerting")},
		{name: "rollout killed", fault: killService("rollout")},
		{name: "notify killed", fault: killService("notify")},
		{name: "clickhouse stopped for a minute", own: true, fault: func(t *testing.T, s *faultSystem) faultRecovery {
			s.chServer.Stop(t)
			down := time.Now()
			time.Sleep(time.Minute) // the outage; the fleet and the rollout go on
			s.chServer.Start(t)
			up := time.Now()
			testutil.Eventually(t, 120*time.Second, s.procs["projector"].ready,
				"the projector never became ready after ClickHouse came back\n%s", s.procs["projector"].p.stderr)
			return faultRecovery{what: "clickhouse down", took: up.Sub(down), recovered: "projector ready", after: time.Since(up)}
		}},
		{name: "embedded server process killed", embedded: true, fault: killService("all")},
	}
	// Two systems at a time: the minute ClickHouse is down overlaps the
	// other runs, and two runs share the machine's two cores.
	slots := make(chan struct{}, 2)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			slots <- struct{}{}
			defer func() { <-slots }()
			var s *faultSystem
			if tt.embedded {
				s = newEmbeddedSystem(t)
			} else {
				var ch *testutil.ClickHouseServer
				if tt.own {
					ch = testutil.StartClickHouse(t)
				}
				s = newSplitSystem(t, ch)
			}
			got := runFaultScript(t, tt.name, s, tt.fault)
			got.compare(t, clean)
		})
	}
}

// killService SIGKILLs a service's process mid-rollout and starts it
// again on the same data dir; it has recovered when it is ready again.
func killService(name string) func(t *testing.T, s *faultSystem) faultRecovery {
	return func(t *testing.T, s *faultSystem) faultRecovery {
		p := s.procs[name]
		if err := p.p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-p.p.done
		killed := time.Now()
		s.start(name)
		testutil.Eventually(t, 120*time.Second, p.ready, "%s never became ready after its restart\n%s", name, p.p.stderr)
		return faultRecovery{what: "SIGKILL " + name, recovered: "restarted process ready", after: time.Since(killed)}
	}
}

// faultRecovery is what a fault took and how long the system took to
// recover from it (measured, logged, not asserted).
type faultRecovery struct {
	what      string
	took      time.Duration // the fault's own length, when it has one
	recovered string
	after     time.Duration // from the end of the fault
}

// faultSystem is one system the script runs against.
type faultSystem struct {
	t        *testing.T
	nc       *nats.Conn
	js       jetstream.JetStream
	broker   string              // the devices' MQTT broker
	mosq     *testutil.Mosquitto // nil with the embedded server
	chServer *testutil.ClickHouseServer
	chCfg    projector.Config
	cliEnv   []string // the environment of CLI commands against it
	procs    map[string]*faultProc
	hook     *webhookLog
}

// faultProc is one otawatch process of a system.
type faultProc struct {
	args  []string
	env   []string
	ready func() bool // its /readyz answers 200
	p     *process
}

// faultConfig is the configuration every process of a system shares.
func faultConfig(t *testing.T, top string, ch projector.Config, hookURL string) string {
	t.Helper()
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	if err := os.MkdirAll(rulesDir, 0o700); err != nil {
		t.Fatal(err)
	}
	rule, err := fs.ReadFile(rules.Defaults(), "device-failed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rulesDir, "device-failed.yaml"), rule, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := top + fmt.Sprintf(`mqtt:
  client_id: fault-bridge
clickhouse:
  addr: %s
  database: %s
  batch_timeout: 100ms
  ack_wait: 10s
alerting:
  rules_dir: %s
notify:
  route:
    receiver: hooks
    group_by: [device]
    group_wait: 0s
  receivers:
    - name: hooks
      webhook:
        url: %s/hook
`, ch.Addr, ch.Database, rulesDir, hookURL)
	file := filepath.Join(dir, "otawatch.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// newSplitSystem is the system at scale on one machine: an external NATS
// server (JetStream), Mosquitto, and each service in a process of its own
// with a data dir of its own. ch is a ClickHouse server of the system's
// own, or nil for a database on the run's server.
func newSplitSystem(t *testing.T, ch *testutil.ClickHouseServer) *faultSystem {
	t.Helper()
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{NoStreams: true})
	mosq := testutil.StartMosquitto(t)
	s := &faultSystem{t: t, broker: mosq.URL, mosq: mosq, chServer: ch, hook: newWebhookLog(t), procs: map[string]*faultProc{}}
	s.chCfg = faultClickHouse(t, ch)
	url := js.Server.ClientURL()
	cfgFile := faultConfig(t, fmt.Sprintf("nats:\n  url: %s\n", url), s.chCfg, s.hook.url)
	// The broker goes in the environment: the config's mqtt section is
	// faultConfig's.
	for _, name := range []string{"projector", "alerting", "notify", "rollout", "bridge"} {
		s.addProc(name, cfgFile, "OTAWATCH_MQTT_BROKER="+mosq.URL)
	}
	s.cliEnv = []string{"OTAWATCH_NATS_URL=" + url}
	s.connect(url)
	for _, name := range []string{"projector", "alerting", "notify", "rollout", "bridge"} {
		s.start(name)
	}
	for name, p := range s.procs {
		testutil.Eventually(t, 60*time.Second, p.ready, "%s never became ready\n%s", name, p.p.stderr)
	}
	return s
}

// newEmbeddedSystem is the one-process otawatch: the embedded server with
// its MQTT listener (devices anonymous, on loopback) and every service in
// one process.
func newEmbeddedSystem(t *testing.T) *faultSystem {
	t.Helper()
	s := &faultSystem{t: t, hook: newWebhookLog(t), procs: map[string]*faultProc{}}
	s.chCfg = faultClickHouse(t, nil)
	natsPort, mqttPort := testutil.FreePort(t), testutil.FreePort(t)
	s.broker = fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)
	cfgFile := faultConfig(t, fmt.Sprintf("nats:\n  listen: 127.0.0.1:%d\n  mqtt_listen: 127.0.0.1:%d\n  mqtt_anonymous: true\n", natsPort, mqttPort),
		s.chCfg, s.hook.url)
	p := s.addProc("all", cfgFile, "OTAWATCH_MQTT_BROKER="+s.broker)
	p.args = append(p.args, "bridge", "projector", "alerting", "notify", "rollout")
	s.start("all")
	testutil.Eventually(t, 60*time.Second, p.ready, "otawatch never became ready\n%s", p.p.stderr)
	dataDir := strings.TrimPrefix(p.env[0], "OTAWATCH_DATA_DIR=")
	s.cliEnv = []string{"OTAWATCH_DATA_DIR=" + dataDir, fmt.Sprintf("OTAWATCH_NATS_LISTEN=127.0.0.1:%d", natsPort)}
	pw, err := os.ReadFile(filepath.Join(dataDir, "credentials", events.IdentityServices))
	if err != nil {
		t.Fatal(err)
	}
	s.connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), nats.UserInfo(events.IdentityServices, strings.TrimSpace(string(pw))))
	return s
}

// faultClickHouse is the projector's ClickHouse: a fresh database on the
// system's own server, or on the run's.
func faultClickHouse(t *testing.T, own *testutil.ClickHouseServer) projector.Config {
	db := testutil.ClickHouse(t)
	if own != nil {
		db.Addr = own.Addr
	}
	return projector.Config{Addr: db.Addr, Database: db.Database}
}

// addProc declares a process: "otawatch run -c cfgFile name" with a data
// dir and an HTTP port (for /readyz) of its own.
func (s *faultSystem) addProc(name, cfgFile string, env ...string) *faultProc {
	port := testutil.FreePort(s.t)
	p := &faultProc{
		args: []string{"run", "-c", cfgFile},
		env: append([]string{"OTAWATCH_DATA_DIR=" + s.t.TempDir(), fmt.Sprintf("OTAWATCH_HTTP_LISTEN=127.0.0.1:%d", port),
			"OTAWATCH_CLICKHOUSE_ADDR=" + s.chCfg.Addr}, env...),
		ready: readyz(port),
	}
	if name != "all" {
		p.args = append(p.args, name)
	}
	s.procs[name] = p
	return p
}

// start starts (or starts again) a declared process.
func (s *faultSystem) start(name string) {
	p := s.procs[name]
	p.p = startOtawatch(s.t, p.env, p.args...)
}

// stop stops every process with SIGTERM; each must exit 0.
func (s *faultSystem) stop() {
	for name, p := range s.procs {
		if err := p.p.stop(s.t); err != nil {
			s.t.Errorf("%s: exit %v after SIGTERM\n%s", name, err, p.p.stderr)
		}
	}
}

// connect opens the test's own connection, which outlives restarts.
func (s *faultSystem) connect(url string, opts ...nats.Option) {
	t := s.t
	nc, err := nats.Connect(url, append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s.nc, s.js = nc, js
}

// faultResult is what a run of the script left, in the terms that must
// not depend on faults: each is compared with the run without one.
type faultResult struct {
	// answers are the README's analytics queries, by name (device-history
	// is left out: it shows sequence numbers and times; history below
	// holds the same reports without them).
	answers map[string][]string
	// history is every device's reports in the order SHADOW holds them.
	history []string
	// alerts are the ALERTS events: state, severity, rule, device.
	alerts []string
	// rollout is the job's events by type, counted (rolloutSummary).
	rollout map[string]int
}

// runFaultScript runs the fleet script against s, with fault striking
// mid-rollout (nil: none), checks what must hold after any run, and
// returns the result to compare.
func runFaultScript(t *testing.T, name string, s *faultSystem, fault func(*testing.T, *faultSystem) faultRecovery) faultResult {
	t.Helper()
	start := time.Now()
	var fleetLog lockedBuffer
	fleet, err := simulator.NewFleet(faultFleet(s.broker), slog.New(slog.NewTextHandler(&fleetLog, nil)))
	if err != nil {
		t.Fatal(err)
	}
	fctx, stopFleet := context.WithCancel(context.Background())
	fleetDone := make(chan error, 1)
	go func() { fleetDone <- fleet.Run(fctx) }()
	defer func() {
		stopFleet()
		if err := <-fleetDone; err != nil {
			t.Errorf("fleet: %v", err)
		}
	}()
	select {
	case <-fleet.Ready():
	case err := <-fleetDone:
		t.Fatalf("fleet stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatalf("the fleet did not connect: %+v", fleet.Stats())
	}

	var devices []string
	for _, id := range fleet.DeviceIDs() {
		devices = append(devices, faultType+"/"+id)
	}
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"rollout", "create", "--id", faultJob, "--target-version", faultTarget,
		"--checksum", simulator.Checksum(faultTarget), "--url", "https://firmware.example/" + faultTarget + ".bin",
		"--devices", strings.Join(devices, ","), "--wave-size", fmt.Sprint(faultWaveSize), "--max-failure", "0.5", "--start",
		"--timeout", "30s"}, &Env{Stdout: &out, Stderr: &errOut, Environ: s.cliEnv})
	if code != 0 {
		t.Fatalf("rollout create: exit %d\n%s%s", code, out.String(), errOut.String())
	}

	if fault != nil {
		testutil.Eventually(t, 120*time.Second, func() bool { return s.count(events.StreamShadow, events.SubjectShadowReported+".>") >= faultAt },
			"the rollout never got to %d reports: %+v", faultAt, fleet.Stats())
		rec := fault(t, s)
		t.Logf("%s: %s took %s; %s %s after it", name, rec.what, rec.took.Round(time.Millisecond), rec.recovered, rec.after.Round(time.Millisecond))
	}

	// The rollout completes and every device has had its final report
	// acknowledged.
	testutil.Eventually(t, 180*time.Second, func() bool {
		return s.count(events.StreamRollout, events.RolloutSubject(faultJob, "job_completed")) == 1
	}, "the rollout did not complete: %+v", fleet.Stats())
	testutil.Eventually(t, 60*time.Second, func() bool {
		st := fleet.Stats()
		return st.Completed+st.Failed+st.LocalFailures == faultDevices
	}, "not every device finished: %+v", fleet.Stats())
	st := fleet.Stats()
	if st.LocalFailures > 0 {
		t.Fatalf("%d devices gave an update up (report undelivered): the script needs longer retries\n%s", st.LocalFailures, fleetLog.String())
	}

	// Every acknowledged report is on SHADOW once.
	reports := s.reports()
	want := map[string]int{events.StatusInProgress: int(st.SentProgress), events.StatusCompleted: int(st.SentCompleted), events.StatusFailed: int(st.SentFailed)}
	if fmt.Sprint(reports) != fmt.Sprint(want) {
		t.Errorf("SHADOW reports by status %v; the devices had %v acknowledged", reports, want)
	}

	// Each alert raised reached the webhook as one notification.
	raised := s.count(events.StreamAlerts, events.SubjectAlert+".raised.>")
	testutil.Eventually(t, 60*time.Second, func() bool { return uint64(s.hook.groups()) == raised },
		"the webhook got %d alert groups, ALERTS raised %d", s.hook.groups(), raised)
	s.hook.checkOncePerGroup(t)
	// notify records each delivery on NOTIFY after the webhook answered.
	testutil.Eventually(t, 60*time.Second, func() bool {
		return s.count(events.StreamNotify, events.NotifySubject("hooks", events.NotifySent)) == raised
	}, "NOTIFY recorded %d deliveries, ALERTS raised %d", s.count(events.StreamNotify, events.NotifySubject("hooks", events.NotifySent)), raised)

	// ClickHouse catches up with every projected stream (NOTIFY last: its
	// events follow the webhook's answers), and holds what the log says.
	conn := s.clickhouse()
	testutil.Eventually(t, 120*time.Second, func() bool {
		return s.projected(conn, "shadow_events") == s.count(events.StreamShadow, events.SubjectShadowReported+".>") &&
			s.projected(conn, "rollout_events") == s.count(events.StreamRollout, ">") &&
			s.projected(conn, "alerts") == s.count(events.StreamAlerts, ">") &&
			s.projected(conn, "notifications") == s.count(events.StreamNotify, ">")
	}, "ClickHouse did not catch up with the log")
	s.verifyAgainstReplay(conn)

	res := faultResult{
		answers: map[string][]string{},
		history: testutil.QueryRows(t, conn, `SELECT type_id, device_id, version, previous_version, status, duration, error_code, job_id, wave
FROM shadow_events FINAL ORDER BY type_id, device_id, stream_seq`),
		alerts:  s.alertList(),
		rollout: s.rolloutSummary(),
	}
	res.rollout["desired-state events"] = int(s.count(events.StreamShadow, events.SubjectShadowDesired+".>"))
	for qname, q := range testutil.DocQueries(t, "../../README.md") {
		if qname == "device-history" {
			continue
		}
		res.answers[qname] = testutil.QueryRows(t, conn, strings.ReplaceAll(q, "job-2025-07", faultJob))
	}
	t.Logf("%s: %d reports (%v), %d alerts raised and notified, %d desired-state events, %d webhook requests; fleet %s; run took %s",
		name, len(res.history), reports, raised, s.count(events.StreamShadow, events.SubjectShadowDesired+".>"), s.hook.requests(),
		st, time.Since(start).Round(time.Second))
	s.stop()
	return res
}

// compare reports every way r differs from the run without a fault.
func (r faultResult) compare(t *testing.T, clean faultResult) {
	t.Helper()
	for name, want := range clean.answers {
		if got := r.answers[name]; !slices.Equal(got, want) {
			t.Errorf("query %s:\n%s\nwithout the fault:\n%s", name, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if !slices.Equal(r.history, clean.history) {
		t.Errorf("device report histories differ from the run without the fault (%d rows against %d); first difference: %s",
			len(r.history), len(clean.history), firstDifference(r.history, clean.history))
	}
	if !slices.Equal(r.alerts, clean.alerts) {
		t.Errorf("alerts:\n%s\nwithout the fault:\n%s", strings.Join(r.alerts, "\n"), strings.Join(clean.alerts, "\n"))
	}
	if fmt.Sprint(r.rollout) != fmt.Sprint(clean.rollout) {
		t.Errorf("rollout events %v; without the fault %v", r.rollout, clean.rollout)
	}
}

func firstDifference(a, b []string) string {
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			return fmt.Sprintf("row %d: %q against %q", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("row %d: one list ends", min(len(a), len(b)))
}

// count is the number of messages of stream on subjects matching filter.
func (s *faultSystem) count(stream, filter string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// events reads every event of stream on subjects matching filter, in
// order, and decodes each.
func (s *faultSystem) events(stream, filter string) []events.Event {
	t := s.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := s.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatalf("read %s: %v", stream, err)
	}
	n := s.count(stream, filter)
	var out []events.Event
	for uint64(len(out)) < n {
		m, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("read %s: %d of %d events: %v", stream, len(out), n, err)
		}
		ev, err := events.Decode(m.Data())
		if err != nil {
			t.Fatalf("%s seq %d: %v", stream, mustSeq(m), err)
		}
		out = append(out, ev)
	}
	return out
}

func mustSeq(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.Sequence.Stream
}

// reports counts SHADOW's reports by status, and fails the test on a
// report stored twice.
func (s *faultSystem) reports() map[string]int {
	t := s.t
	t.Helper()
	seen := map[string]bool{}
	out := map[string]int{}
	for _, ev := range s.events(events.StreamShadow, events.SubjectShadowReported+".>") {
		var d events.ShadowReportedData
		if err := ev.DecodeData(&d); err != nil {
			t.Fatalf("report %s: %v", ev.ID, err)
		}
		id := events.ReportEventID(d.TypeID, d.DeviceID, d.Firmware)
		if seen[id] {
			t.Errorf("report %s of %s/%s (%s at %s) stored twice", id, d.TypeID, d.DeviceID, d.Firmware.Status, d.Firmware.Timestamp)
		}
		seen[id] = true
		out[d.Firmware.Status]++
	}
	return out
}

// alertList is the ALERTS stream as lines, sorted: which alerts were
// raised and resolved ("state severity rule device"), and the other
// events by type, whatever their order.
func (s *faultSystem) alertList() []string {
	t := s.t
	t.Helper()
	var out []string
	for _, ev := range s.events(events.StreamAlerts, ">") {
		if ev.Type != events.TypeAlertRaised && ev.Type != events.TypeAlertResolved {
			out = append(out, ev.Type)
			continue
		}
		var a events.AlertData
		if err := ev.DecodeData(&a); err != nil {
			t.Fatalf("alert %s: %v", ev.ID, err)
		}
		out = append(out, strings.Join([]string{a.State, a.Severity, a.RuleID, a.TypeID + "/" + a.DeviceID}, " "))
	}
	sort.Strings(out)
	return out
}

// rolloutSummary counts the job's events by type, except devices_sent
// (how the service batches its sends depends on timing); for those, it
// counts the devices sent and the devices sent more than once.
func (s *faultSystem) rolloutSummary() map[string]int {
	t := s.t
	t.Helper()
	out := map[string]int{}
	sent := map[events.DeviceRef]int{}
	for _, ev := range s.events(events.StreamRollout, events.SubjectRollout+"."+faultJob+".>") {
		typ := strings.TrimSuffix(strings.TrimPrefix(ev.Type, "io.otawatch.rollout."), ".v1")
		if typ != "devices_sent" {
			out[typ]++
			continue
		}
		var d events.RolloutData
		if err := ev.DecodeData(&d); err != nil {
			t.Fatalf("rollout event %s: %v", ev.ID, err)
		}
		for _, ref := range d.Devices {
			sent[ref]++
		}
	}
	out["devices sent"] = len(sent)
	for _, n := range sent {
		if n > 1 {
			out["devices sent again"]++
		}
	}
	return out
}

// clickhouse connects to the system's database.
func (s *faultSystem) clickhouse() driver.Conn {
	t := s.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := projector.Dial(ctx, s.chCfg, s.chCfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// projected is the number of rows of table, FINAL; 0 while it cannot be
// read.
func (s *faultSystem) projected(conn driver.Conn, table string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+table+" FINAL").Scan(&n); err != nil {
		return 0
	}
	return n
}

// verifyAgainstReplay replays the whole log into a fresh database and
// compares it with the live one, table by table.
func (s *faultSystem) verifyAgainstReplay(conn driver.Conn) {
	t := s.t
	t.Helper()
	fresh := testutil.ClickHouse(t).Database
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if _, err := projector.Replay(ctx, s.chCfg, s.js, slog.New(slog.DiscardHandler), projector.ReplayOptions{Database: fresh}); err != nil {
		t.Fatalf("replay: %v", err)
	}
	defer func() { _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+fresh+"`") }()
	cmp, err := projector.Verify(ctx, conn, s.chCfg.Database, fresh)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	for _, c := range cmp {
		if !c.Same() {
			t.Errorf("table %s differs from a replay of the log: %d rows against %d; %v", c.Table, c.RowsA, c.RowsB, c.Differences)
		}
	}
}

// webhookLog is the notify receiver: every request, by notification id
// and alert group.
type webhookLog struct {
	url     string
	mu      sync.Mutex
	byID    map[string]int
	byGroup map[string]map[string]bool // group key -> notification ids
}

func newWebhookLog(t *testing.T) *webhookLog {
	l := &webhookLog{byID: map[string]int{}, byGroup: map[string]map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var pl webhook.Payload
		if err := jsonDecode(r, &pl); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id := r.Header.Get(webhook.IDHeader)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.byID[id]++
		if l.byGroup[pl.GroupKey] == nil {
			l.byGroup[pl.GroupKey] = map[string]bool{}
		}
		l.byGroup[pl.GroupKey][id] = true
	}))
	t.Cleanup(srv.Close)
	l.url = srv.URL
	return l
}

func (l *webhookLog) groups() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byGroup)
}

func (l *webhookLog) requests() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.byID {
		n += c
	}
	return n
}

// checkOncePerGroup fails the test for a group notified more than once
// (two notification ids; the same id again is a retry the receiver
// deduplicates).
func (l *webhookLog) checkOncePerGroup(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for g, ids := range l.byGroup {
		if len(ids) != 1 {
			t.Errorf("alert group %s was notified %d times", g, len(ids))
		}
	}
}
