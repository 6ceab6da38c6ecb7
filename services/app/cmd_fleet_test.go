package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/alerting"
	"github.com/otawatch/otawatch/services/api"
	"github.com/otawatch/otawatch/services/bridge"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/rollout"
	"github.com/otawatch/otawatch/services/simulator"
)

// fleetInstant is what the live system answered at one instant.
type fleetInstant struct {
	name string
	at   string // the live fleet state's "at"
	// bodies are the api's answers, by path; waves the rollout service's
	// per-wave numbers for the job (GET /api/v1/rollouts/{job}).
	bodies map[string][]byte
	waves  []waveNumbers
}

// TestFleetAtReproducesLiveRollout runs a rollout over a simulated fleet
// through the real services (bridge, rollout, alerting, api with its
// snapshot index), records the live answers of the api (the fleet state,
// metrics, device list, a few devices, the alerts) and the rollout
// service's waves at four instants, and then checks that "otawatch fleet
// at T" (from snapshots and from the start of the log) and ?at=T on each
// endpoint reproduce every one exactly.
//
// The live model lags the log by milliseconds, so an instant is recorded
// only when it is caught up and the log quiet: the job is paused (or
// finished) and the simulated devices have reported, the streams' last
// sequences are read, the fleet state (whose "at" is the instant and
// whose "streams" say what the api had applied) must show exactly them,
// the rest is recorded, and the streams must not have moved by the end;
// otherwise the instant is recorded again. The rollout service's waves are
// read before and after the api's answers and must agree, so no device
// timed out in between. The plan holds a device that never reports: it is
// pending at the first instant and times out 8 s later, so a view of the
// past read at the wall clock instead of its instant would differ.
//
// The other instants: paused in wave 3, paused in wave 4 (the last), and
// the job completed.
func TestFleetAtReproducesLiveRollout(t *testing.T) {
	const (
		simulated = 36
		waveSize  = 10
		job       = "fleet-at"
		// deviceTimeout is the silent device's time to be pending: the
		// first instant is recorded within it.
		deviceTimeout = 8 * time.Second
	)
	offline := []string{"f-off-1", "f-off-2"}
	silent := "f-silent"

	js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: true})
	broker := "tcp://" + js.Server.MQTTAddr()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	connect := func() (*nats.Conn, jetstream.JetStream) {
		nc, err := nats.Connect(js.Server.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		jsx, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, jsx
	}
	deps := func() svc.Deps {
		nc, jsx := connect()
		return svc.Deps{Log: log, NC: nc, JS: jsx, Streams: events.StreamOptions{Replicas: 1}, Health: svc.NewHealth()}
	}
	run := func(name string, s svc.Service) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: Run returned %v", name, err)
			}
		})
	}

	bd := deps()
	b, err := bridge.New(bridge.Config{Broker: broker, ClientID: "bridge-fleet-at"}, bd)
	if err != nil {
		t.Fatal(err)
	}
	run("bridge", b)
	testutil.Eventually(t, 30*time.Second, func() bool { return len(bd.Health.Status()) > 0 && bd.Health.Ready() },
		"the bridge never subscribed: %v", bd.Health.Status())
	f, err := simulator.NewFleet(simulator.FleetConfig{Broker: broker, Mode: simulator.ModeFleet, Devices: simulated, TimeScale: 1000,
		FailureRate: 0.15, Seed: 7, ClientIDPrefix: "sim-fleet-at"}, log)
	if err != nil {
		t.Fatal(err)
	}
	run("simulator", f)
	select {
	case <-f.Ready():
	case <-time.After(60 * time.Second):
		t.Fatalf("the simulated fleet did not connect: %+v", f.Stats())
	}
	// Devices no simulator answers for: two that reported a day ago and
	// were then guessed potentially offline, and one that never reports.
	publishGuessedOffline(t, js, offline)

	rcfg := rollout.Config{Broker: broker, Tick: 20 * time.Millisecond, LeaseTTL: time.Second, RetainedWait: time.Second}
	rcfg.SetDefaults()
	rs, err := rollout.New(rcfg, deps())
	if err != nil {
		t.Fatal(err)
	}
	run("rollout", rs)
	al, err := alerting.New(alerting.Config{TickInterval: time.Second, LeaseTTL: time.Second}, deps())
	if err != nil {
		t.Fatal(err)
	}
	run("alerting", al)
	as, err := api.New(api.Config{Listen: "127.0.0.1:0", Snapshots: api.SnapshotConfig{Every: 25, Interval: time.Second}}, deps())
	if err != nil {
		t.Fatal(err)
	}
	run("api", as)
	testutil.Eventually(t, 10*time.Second, func() bool { return as.Addr() != "" }, "the api did not listen")
	base := "http://" + as.Addr()

	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append(args, "--nats", js.Server.ClientURL()), &Env{Stdout: &out, Stderr: &errb})
		return code, out.String(), errb.String()
	}
	rolloutCLI := func(args ...string) {
		t.Helper()
		if code, out, errs := cli(append([]string{"rollout"}, args...)...); code != 0 {
			t.Fatalf("rollout %v: exit %d\n%s%s", args, code, out, errs)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { c, _, _ := cli("rollout", "list"); return c == 0 }, "the rollout service never answered")
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	jobStatus := func() events.RolloutJob {
		_, body := get("/api/v1/rollouts/" + job)
		var rep events.RolloutReply
		if json.Unmarshal(body, &rep) != nil || rep.Job == nil {
			return events.RolloutJob{}
		}
		return *rep.Job
	}

	// The plan: the silent device first (wave 1), the ghosts last.
	devices := []string{simulator.DefaultType + "/" + silent}
	for _, id := range f.DeviceIDs() {
		devices = append(devices, simulator.DefaultType+"/"+id)
	}
	devices = append(devices, simulator.DefaultType+"/"+offline[0], simulator.DefaultType+"/"+offline[1])
	spec := fmt.Sprintf("--id=%s --target-version=4.2.0 --checksum=sha256:%s --url=https://fw.example/4.2.0.bin --wave-size=%d"+
		" --gate=0.5 --max-failure=0.9 --min-finished=1 --device-timeout=%s --rate=50", job, strings.Repeat("42", 32), waveSize, deviceTimeout)
	rolloutCLI(append([]string{"create", "--devices", strings.Join(devices, ",")}, strings.Fields(spec)...)...)
	// The paths recorded: the devices are the silent one, two simulated
	// ones and an offline one.
	silentPath := "/api/v1/devices/" + devices[0]
	paths := []string{"/api/v1/fleet/state", "/api/v1/fleet", "/api/v1/alerts", "/api/v1/devices?limit=1000",
		silentPath, "/api/v1/devices/" + devices[1], "/api/v1/devices/" + devices[2], "/api/v1/devices/" + devices[len(devices)-1]}

	lastSeqs := func() map[string]uint64 {
		out := map[string]uint64{}
		for _, name := range []string{events.StreamShadow, events.StreamRollout, events.StreamAlerts} {
			st, err := js.JS.Stream(context.Background(), name)
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			out[name] = info.State.LastSeq
		}
		return out
	}
	// record waits for a quiet, caught-up instant and records it.
	record := func(name string) fleetInstant {
		t.Helper()
		var why string
		for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			before := lastSeqs()
			w1 := jobNumbers(ptr(jobStatus()))
			in := fleetInstant{name: name, bodies: map[string][]byte{}}
			for _, p := range paths {
				_, in.bodies[p] = get(p)
			}
			w2 := jobNumbers(ptr(jobStatus()))
			after := lastSeqs()
			var st api.FleetState
			if err := json.Unmarshal(in.bodies["/api/v1/fleet/state"], &st); err != nil {
				t.Fatalf("%s: fleet state %s: %v", name, in.bodies["/api/v1/fleet/state"], err)
			}
			switch {
			case !reflect.DeepEqual(before, after):
				why = fmt.Sprintf("the log moved: %v -> %v", before, after)
			case !reflect.DeepEqual(st.Streams, before):
				why = fmt.Sprintf("the api had applied %v of %v", st.Streams, before)
			case !reflect.DeepEqual(w1, w2):
				why = fmt.Sprintf("the rollout service's waves changed: %+v -> %+v", w1, w2)
			default:
				in.at, in.waves = st.At.Format(time.RFC3339Nano), w1
				t.Logf("%s: at %s, streams %v, fleet %s", name, in.at, st.Streams, in.bodies["/api/v1/fleet"])
				return in
			}
		}
		t.Fatalf("%s: never quiet: %s", name, why)
		return fleetInstant{}
	}

	var instants []fleetInstant
	rolloutCLI("start", job)
	testutil.Eventually(t, 30*time.Second, func() bool {
		status, body := get(silentPath)
		return status == http.StatusOK && strings.Contains(string(body), `"jobStatus":"pending"`)
	}, "the silent device was never sent its desired state")
	rolloutCLI("pause", job, "--reason", "first look")
	instants = append(instants, record("the silent device pending"))

	rolloutCLI("resume", job)
	testutil.Eventually(t, 60*time.Second, func() bool { return jobStatus().Wave >= 3 }, "wave 3 never started: %+v", jobStatus())
	rolloutCLI("pause", job)
	instants = append(instants, record("paused in wave 3"))

	rolloutCLI("resume", job)
	testutil.Eventually(t, 60*time.Second, func() bool { return jobStatus().Wave >= 4 }, "wave 4 never started: %+v", jobStatus())
	rolloutCLI("pause", job, "--reason", "second look")
	instants = append(instants, record("paused in wave 4"))

	rolloutCLI("resume", job)
	testutil.Eventually(t, 120*time.Second, func() bool { return jobStatus().Status == events.RolloutCompleted }, "the job never completed: %+v", jobStatus())
	testutil.Eventually(t, 30*time.Second, func() bool { return jobStatus().Total.TimedOut == 1 }, "the silent device never timed out: %+v", jobStatus().Total)
	instants = append(instants, record("completed"))

	// The first instant showed the silent device pending; it has timed
	// out since, so a past read at the wall clock would show it timed out.
	var first api.FleetState
	_ = json.Unmarshal(instants[0].bodies["/api/v1/fleet/state"], &first)
	if len(first.Rollouts) != 1 || first.Rollouts[0].Waves[0].Pending == 0 {
		t.Fatalf("%s: wave 1 has no pending device (recorded more than %s after the send?): %s", instants[0].name, deviceTimeout,
			instants[0].bodies["/api/v1/fleet/state"])
	}

	alertsSeen, snapshotsUsed := 0, 0
	for _, in := range instants {
		var live api.FleetState
		_ = json.Unmarshal(in.bodies["/api/v1/fleet/state"], &live)
		alertsSeen += len(live.Alerts)

		// The api, ?at= on every endpoint: byte for byte.
		for _, p := range paths {
			sep := "?"
			if strings.Contains(p, "?") {
				sep = "&"
			}
			req := p + sep + "at=" + url.QueryEscape(in.at)
			status, body := get(req)
			if status == http.StatusOK && !bytes.Equal(body, in.bodies[p]) || status != http.StatusOK && !strings.HasPrefix(string(in.bodies[p]), `{"error"`) {
				t.Errorf("%s: GET %s: %d\n got %s\nwant %s", in.name, req, status, body, in.bodies[p])
			}
		}
		// The rollout service's own fold counts the waves the same.
		for _, r := range live.Rollouts {
			var waves []waveNumbers
			for _, w := range r.Waves {
				waves = append(waves, waveNumbers{Wave: w.Wave, WaveProgress: w.WaveProgress})
			}
			if !reflect.DeepEqual(waves, in.waves) {
				t.Errorf("%s: the fleet state's waves %+v, the rollout service's %+v", in.name, waves, in.waves)
			}
		}

		// The command line, from snapshots and from the start of the log.
		for _, mode := range [][]string{nil, {"--no-snapshots"}} {
			args := append([]string{"fleet", "at", in.at, "--json"}, mode...)
			code, out, errs := cli(args...)
			if code != 0 {
				t.Fatalf("%s: %v: exit %d: %s", in.name, args, code, errs)
			}
			if strings.Contains(errs, "from snapshots:") {
				snapshotsUsed++
			} else if !strings.Contains(errs, "from the start of the log") {
				t.Errorf("%s: %v: stderr %q does not say where the fold started", in.name, args, errs)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%s: %v: %v\n%s", in.name, args, err, out)
			}
			devs := got["devices"]
			delete(got, "devices")
			if want := decodeAny(t, in.bodies["/api/v1/fleet/state"]); !reflect.DeepEqual(got, want) {
				t.Errorf("%s: %v:\n got %v\nwant %v", in.name, args, got, want)
			}
			if want := decodeAny(t, in.bodies["/api/v1/devices?limit=1000"]).(map[string]any)["devices"]; !reflect.DeepEqual(devs, want) {
				t.Errorf("%s: %v: devices\n got %v\nwant %v", in.name, args, devs, want)
			}
		}
		for _, dev := range devices[:2] {
			want := in.bodies["/api/v1/devices/"+dev]
			code, out, errs := cli("fleet", "at", in.at, "--device", dev, "--json")
			switch {
			case bytes.HasPrefix(want, []byte(`{"error"`)):
				if code != 1 || !strings.Contains(errs, "device "+dev+" was unknown at") {
					t.Errorf("%s: fleet at --device %s: exit %d %s, want 1: the live api said %s", in.name, dev, code, errs, want)
				}
			case code != 0 || !reflect.DeepEqual(decodeAny(t, []byte(out)), decodeAny(t, want)):
				t.Errorf("%s: fleet at --device %s: exit %d %s\n got %s\nwant %s", in.name, dev, code, errs, out, want)
			}
		}
	}
	if alertsSeen == 0 {
		t.Error("no instant had an active alert: the alerts were not exercised")
	}
	if snapshotsUsed == 0 {
		t.Error("no fold started from a snapshot")
	}

	// The table output says what the JSON says.
	in := instants[2]
	var st api.FleetState
	_ = json.Unmarshal(in.bodies["/api/v1/fleet/state"], &st)
	code, out, errs := cli("fleet", "at", in.at)
	if code != 0 {
		t.Fatalf("fleet at %s: exit %d: %s", in.at, code, errs)
	}
	for _, want := range []string{
		fmt.Sprintf("%d devices: %d online, %d potentially offline", st.Fleet.Devices, st.Fleet.Online, st.Fleet.PotentiallyOffline),
		fmt.Sprintf("ROLLOUTS running or paused: %d", len(st.Rollouts)),
		fmt.Sprintf("%s  %s  wave %d of %d  target 4.2.0", job, st.Rollouts[0].Status, st.Rollouts[0].Wave, st.Rollouts[0].WaveCount),
		fmt.Sprintf("POTENTIALLY OFFLINE: %d", len(st.PotentiallyOffline)),
		fmt.Sprintf("ALERTS active: %d", len(st.Alerts)),
		fmt.Sprintf("DEVICES: %d", int(decodeAny(t, in.bodies["/api/v1/devices?limit=1000"]).(map[string]any)["total"].(float64))),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("fleet at %s: no %q in\n%s", in.at, want, out)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return v
}

func TestFleetAtCommandLine(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	url := js.Server.ClientURL()
	publish(t, js, events.ShadowReportedSubject("sensor", "d1"), "r1", events.TypeShadowReported, "d1", time.Now().UTC(),
		events.ShadowReportedData{TypeID: "sensor", DeviceID: "d1", Firmware: events.Firmware{Version: "1.0", Status: events.StatusCompleted}})
	now := time.Now().UTC().Format(time.RFC3339Nano)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"no subcommand", []string{"fleet"}, 2, "", "fleet what? (at)"},
		{"unknown subcommand", []string{"fleet", "now"}, 2, "", `unknown fleet command "now"`},
		{"no time", []string{"fleet", "at"}, 2, "", "fleet at needs one TIME"},
		{"a malformed time", []string{"fleet", "at", "yesterday"}, 2, "", `TIME: "yesterday" is not RFC 3339`},
		{"a time in the future", []string{"fleet", "at", future}, 2, "", "is in the future"},
		{"a bad device", []string{"fleet", "at", now, "--device", "sensor"}, 2, "", `--device "sensor" is not TYPE/ID`},
		{"a device with a bad id", []string{"fleet", "at", now, "--device", "sensor/d.1"}, 2, "", "--device id"},
		{"an unknown device", []string{"fleet", "at", now, "--device", "sensor/nope", "--nats", url}, 1, "", "device sensor/nope was unknown at"},
		{"a known device", []string{"fleet", "at", now, "--device", "sensor/d1", "--nats", url}, 0, "version:           1.0", "folded 1 events from the start of the log"},
		{"before the first event", []string{"fleet", "at", "2020-01-01", "--nats", url, "--json"}, 0, `"devices": 0`, "folded 0 events"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), tt.args, &Env{Stdout: &out, Stderr: &errb})
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q", code, out.String(), errb.String(),
					tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

// BenchmarkFleetAt measures "otawatch fleet at T" on a history of
// OTAWATCH_BENCH_EVENTS (1,000,000) events over OTAWATCH_BENCH_DEVICES
// (10,000) devices: rollouts of the whole fleet in waves of a tenth
// (job and wave events, a desired state, an in_progress and a completed or
// failed report per device, an alert per failure, resolved by the next
// rollout) about 30% of the events, and the devices' presence (the broker
// saying offline, then online) the rest, in between. The api service runs
// while the history is stored, as it would live, writing its snapshot
// index (http.snapshots defaults: every 50,000 events). Then the command
// folds to instants at 10%, 50%, 90% and the end of the history, from the
// snapshots and with --no-snapshots, and prints each time; the two answers
// must be equal (scripts/bench fleet).
func BenchmarkFleetAt(b *testing.B) {
	n := benchEnv("OTAWATCH_BENCH_EVENTS", 1_000_000)
	fleetSize := benchEnv("OTAWATCH_BENCH_DEVICES", 10_000)
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	nc, err := nats.Connect(js.Server.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	jsx, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	as, err := api.New(api.Config{Listen: "127.0.0.1:0"}, svc.Deps{NC: nc, JS: jsx, Streams: events.StreamOptions{Replicas: 1}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- as.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })

	began := time.Now()
	pub := newBenchPublisher(b, js.JS)
	fleetHistory(n, fleetSize, pub.publish)
	pub.flush()
	stored := time.Since(began)
	end := time.Now().UTC()
	last := map[string]uint64{}
	for _, s := range []string{events.StreamShadow, events.StreamRollout, events.StreamAlerts} {
		st, _ := js.JS.Stream(ctx, s)
		info, _ := st.Info(ctx)
		last[s] = info.State.LastSeq
	}
	fmt.Printf("stored %d events (SHADOW %d, ROLLOUT %d, ALERTS %d) over %d devices in %s\n", pub.n, last[events.StreamShadow],
		last[events.StreamRollout], last[events.StreamAlerts], fleetSize, stored.Round(time.Millisecond))
	// Wait for the api to apply the history and index it, as a live one
	// has.
	testutil.Eventually(b, 10*time.Minute, func() bool {
		resp, err := http.Get("http://" + as.Addr() + "/api/v1/fleet/state")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st api.FleetState
		return json.NewDecoder(resp.Body).Decode(&st) == nil && reflect.DeepEqual(st.Streams, last)
	}, "the api did not apply the history")
	time.Sleep(2 * time.Second) // the writer's last snapshot
	kv, err := js.JS.KeyValue(ctx, api.DefaultSnapshotBucket)
	if err != nil {
		b.Fatal(err)
	}
	if e, err := kv.Get(ctx, "index"); err == nil {
		var idx struct {
			Snapshots []api.SnapshotInfo `json:"snapshots"`
		}
		_ = json.Unmarshal(e.Value(), &idx)
		size, gap := 0, uint64(0)
		for i, s := range idx.Snapshots {
			for _, sec := range s.Sections {
				size += sec.Size
			}
			if i > 0 {
				gap = max(gap, s.Events-idx.Snapshots[i-1].Events)
			}
		}
		fmt.Printf("snapshot index: %d snapshots, %d bytes gzip'd in all (%.0f a snapshot), at most %d events apart\n",
			len(idx.Snapshots), size, float64(size)/float64(max(len(idx.Snapshots), 1)), gap)
	}

	shadow, _ := js.JS.Stream(ctx, events.StreamShadow)
	instant := func(frac float64) time.Time {
		m, err := shadow.GetMsg(ctx, max(1, uint64(frac*float64(last[events.StreamShadow]))))
		if err != nil {
			b.Fatal(err)
		}
		return m.Time
	}
	for i := 0; i < b.N; i++ {
		for _, at := range []struct {
			name string
			t    time.Time
		}{{"10%", instant(0.1)}, {"50%", instant(0.5)}, {"90%", instant(0.9)}, {"end", end}} {
			var outs [2]string
			for k, mode := range [][]string{nil, {"--no-snapshots"}} {
				args := append([]string{"fleet", "at", at.t.Format(time.RFC3339Nano), "--json", "--nats", js.Server.ClientURL()}, mode...)
				var out, errb bytes.Buffer
				start := time.Now()
				if code := Main(context.Background(), args, &Env{Stdout: &out, Stderr: &errb}); code != 0 {
					b.Fatalf("%v: exit %d: %s", args, code, errb.String())
				}
				el := time.Since(start)
				outs[k] = out.String()
				summary := strings.TrimSpace(errb.String())
				progress := strings.Count(summary, "\n") // the progress lines before the summary
				if i := strings.LastIndex(summary, "\n"); i >= 0 {
					summary = summary[i+1:]
				}
				summary += fmt.Sprintf(" (%d progress lines)", progress)
				label := "snapshots"
				if mode != nil {
					label = "--no-snapshots"
				}
				fmt.Printf("fleet at %-3s %-15s %6.2fs  %s\n", at.name, label, el.Seconds(), summary)
				if at.name == "end" {
					b.ReportMetric(el.Seconds(), "s/at_end_"+strings.TrimLeft(label, "-"))
				}
			}
			if outs[0] != outs[1] {
				b.Fatalf("fleet at %s: the answer from snapshots differs from the one from the start of the log", at.name)
			}
		}
	}
}

func benchEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchPublisher stores events asynchronously, a window at a time.
type benchPublisher struct {
	tb   testing.TB
	js   jetstream.JetStream
	acks []jetstream.PubAckFuture
	n    int
}

func newBenchPublisher(tb testing.TB, js jetstream.JetStream) *benchPublisher {
	return &benchPublisher{tb: tb, js: js}
}

func (p *benchPublisher) publish(subject, typ, id string, data any) {
	b, err := events.Encode(id, events.SourceBridge, typ, subject, time.Now().UTC(), data)
	if err != nil {
		p.tb.Fatal(err)
	}
	a, err := p.js.PublishAsync(subject, b)
	if err != nil {
		p.tb.Fatal(err)
	}
	p.acks = append(p.acks, a)
	p.n++
	if len(p.acks) == 2048 { // under nats.go's 4,000 pending async publishes
		p.flush()
	}
}

func (p *benchPublisher) flush() {
	for _, a := range p.acks {
		select {
		case <-a.Ok():
		case err := <-a.Err():
			p.tb.Fatal(err)
		}
	}
	p.acks = p.acks[:0]
}

// fleetHistory emits about n events over a fleet of size devices (see
// BenchmarkFleetAt).
func fleetHistory(n, size int, emit func(subject, typ, id string, data any)) {
	const typ = "gateway"
	dev := func(i int) string { return fmt.Sprintf("gw-%05d", i) }
	waveSize := max(size/10, 1)
	perRollout := 3*size + 2*(size/50) + 3*(size/waveSize) + 3 + size/100
	rollouts := max(1, int(0.3*float64(n))/perRollout)
	presence := max(0, n-rollouts*perRollout)
	waves := (size + waveSize - 1) / waveSize
	presencePerWave := presence / (rollouts * waves)
	seq := 0
	id := func() string { seq++; return "e" + strconv.Itoa(seq) }
	online := make([]bool, size)
	for i := range online {
		online[i] = true
	}
	next := 0
	failed := map[int]string{} // device -> the key of its open alert
	for r := 1; r <= rollouts; r++ {
		job := fmt.Sprintf("job-%03d", r)
		version := fmt.Sprintf("5.%d.0", r)
		target := events.DesiredFirmware{Version: version, Checksum: "sha256:" + strings.Repeat("ab", 32), URL: "https://fw.example/" + version}
		plan := make([][]events.DeviceRef, waves)
		for i := 0; i < size; i++ {
			plan[i/waveSize] = append(plan[i/waveSize], events.DeviceRef{TypeID: typ, DeviceID: dev(i)})
		}
		rollout := func(name, evType string, d events.RolloutData) {
			d.JobID = job
			emit(events.RolloutSubject(job, name), evType, id(), &d)
		}
		rollout("job_created", events.TypeRolloutJobCreated, events.RolloutData{Target: &target,
			Spec: &events.RolloutSpec{ID: job, Target: target, WaveSize: waveSize, Gate: 0.9, MaxFailure: 0.1, DeviceTimeout: events.Duration(time.Hour)}})
		rollout("job_started", events.TypeRolloutJobStarted, events.RolloutData{Plan: &events.RolloutPlan{Waves: plan}})
		for w, refs := range plan {
			rollout("wave_started", events.TypeRolloutWaveStarted, events.RolloutData{Wave: w + 1})
			for k := 0; k < len(refs); k += 100 {
				rollout("devices_sent", events.TypeRolloutDevicesSent, events.RolloutData{Wave: w + 1, Devices: refs[k:min(k+100, len(refs))]})
			}
			for _, ref := range refs {
				emit(events.ShadowDesiredSubject(typ, ref.DeviceID), events.TypeShadowDesired, id(),
					&events.ShadowDesiredData{TypeID: typ, DeviceID: ref.DeviceID, JobID: job, Wave: w + 1, Firmware: target})
			}
			for _, status := range []string{events.StatusInProgress, "finish"} {
				for k, ref := range refs {
					i := w*waveSize + k
					fw := events.Firmware{Version: version, Status: status, Timestamp: time.Now().UTC(), Checksum: target.Checksum,
						PreviousVersion: fmt.Sprintf("5.%d.0", r-1), UpdateDuration: float64(60 + i%120)}
					if status == "finish" {
						fw.Status = events.StatusCompleted
						if (i*7+r)%50 == 0 {
							code := "E_FLASH"
							fw.Status, fw.ErrorCode = events.StatusFailed, &code
						}
					}
					emit(events.ShadowReportedSubject(typ, ref.DeviceID), events.TypeShadowReported, id(),
						&events.ShadowReportedData{TypeID: typ, DeviceID: ref.DeviceID, Topic: events.ReportTopic(typ, ref.DeviceID), Firmware: fw})
					if status != "finish" {
						continue
					}
					if key, open := failed[i]; open && fw.Status == events.StatusCompleted {
						d := events.AlertData{Key: key, RuleID: "device-failed", Severity: "critical", State: events.AlertResolved,
							TypeID: typ, DeviceID: ref.DeviceID, StartsAt: time.Now().UTC()}
						emit(events.AlertSubject(events.AlertResolved, "critical", "device-failed"), events.TypeAlertResolved, id(), &d)
						delete(failed, i)
					}
					if fw.Status == events.StatusFailed {
						key := "device-failed/" + typ + "/" + ref.DeviceID
						d := events.AlertData{Key: key, RuleID: "device-failed", Severity: "critical", State: events.AlertRaised,
							TypeID: typ, DeviceID: ref.DeviceID, JobID: job, Wave: w + 1, Message: ref.DeviceID + " failed", StartsAt: time.Now().UTC()}
						emit(events.AlertSubject(events.AlertRaised, "critical", "device-failed"), events.TypeAlertRaised, id(), &d)
						failed[i] = key
					}
				}
			}
			rollout("wave_gated", events.TypeRolloutWaveGated, events.RolloutData{Wave: w + 1, Reason: "gate passed"})
			rollout("wave_completed", events.TypeRolloutWaveCompleted, events.RolloutData{Wave: w + 1})
			// The devices' connections between waves: the broker says
			// offline, then online.
			for k := 0; k < presencePerWave; k++ {
				i := next % size
				next += 7
				online[i] = !online[i]
				state := events.PresenceOffline
				if online[i] {
					state = events.PresenceOnline
				}
				emit(events.DevicePresenceSubject(typ, dev(i)), events.TypeDevicePresence, id(),
					&events.DevicePresenceData{TypeID: typ, DeviceID: dev(i), State: state, LastSeen: time.Now().UTC()})
			}
		}
		rollout("job_completed", events.TypeRolloutJobCompleted, events.RolloutData{})
	}
}
