package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/api"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/rollout"
	"github.com/otawatch/otawatch/services/simulator"
)

// waveNumbers is one wave's progress as one reader shows it.
type waveNumbers struct {
	Wave int
	events.WaveProgress
}

// TestWaveProgressSameEverywhere: at several instants of a rollout over a
// simulated fleet (paused in its first wave and in its third, then finished), the CLI's
// "rollout show --json", GET /api/v1/rollouts/{job} and the dashboard's
// WebSocket push give the same per-wave numbers, and in each the exclusive
// states add up to the plan's wave size, the waves not started included.
//
// The plan holds, besides the simulated devices that install what they are
// sent, devices no simulator answers for: some reported once and were then
// guessed potentially offline (offline in the wave), the others never
// report (pending, then timed out). The readers are separate folds (the
// rollout service's and the api service's), so each instant is compared
// once the log is quiet; until then they may lag one another.
func TestWaveProgressSameEverywhere(t *testing.T) {
	const (
		simulated = 60
		waveSize  = 13
	)
	offline := []string{"g-off-1", "g-off-2", "g-off-3"}
	silent := []string{"g-silent-1", "g-silent-2"}
	devices := simulated + len(offline) + len(silent)
	waveCount := (devices + waveSize - 1) / waveSize

	l := startLive(t)
	js, broker := l.js, l.broker
	l.startBridge("bridge-waves") // devices only once it subscribed
	f := l.startFleet(simulator.FleetConfig{Devices: simulated, TimeScale: 1000, FailureRate: 0.1, Seed: 11, ClientIDPrefix: "sim-waves"})

	// The devices no simulator answers for: a report a day ago, then
	// otawatch's guess that they went offline; or nothing at all.
	publishGuessedOffline(t, js, offline)

	rcfg := rollout.Config{Broker: broker, Tick: 20 * time.Millisecond, LeaseTTL: time.Second, RetainedWait: time.Second}
	rcfg.SetDefaults()
	rs, err := rollout.New(rcfg, l.deps())
	if err != nil {
		t.Fatal(err)
	}
	l.run("rollout", rs)

	as, err := api.New(api.Config{Listen: "127.0.0.1:0", DashboardRefresh: 20 * time.Millisecond}, l.deps())
	if err != nil {
		t.Fatal(err)
	}
	l.run("api", as)
	testutil.Eventually(t, 10*time.Second, func() bool { return as.Addr() != "" }, "the api did not listen")
	base := "http://" + as.Addr()

	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append([]string{"rollout"}, append(args, "--nats", js.Server.ClientURL())...),
			&Env{Stdout: &out, Stderr: &errb})
		return code, out.String(), errb.String()
	}
	testutil.Eventually(t, 10*time.Second, func() bool { c, _, _ := cli("list"); return c == 0 }, "the rollout service never answered")

	// The dashboard's pushes, the latest kept.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/api/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	ws.SetReadLimit(16 << 20)
	var (
		pushMu sync.Mutex
		push   []byte
	)
	go func() {
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			pushMu.Lock()
			push = b
			pushMu.Unlock()
		}
	}()

	// The job: every device, by name; the failure policy loose enough that
	// the ghosts and the simulator's failures do not stop it.
	spec := fmt.Sprintf("--id=waves --target-version=4.2.0 --checksum=sha256:%s --url=https://fw.example/4.2.0.bin --wave-size=%d"+
		" --gate=0.5 --max-failure=0.9 --min-finished=1 --device-timeout=3s --rate=50", strings.Repeat("42", 32), waveSize)
	var list []string
	for _, id := range f.DeviceIDs() {
		list = append(list, simulator.DefaultType+"/"+id)
	}
	for _, id := range append(append([]string{}, offline...), silent...) {
		list = append(list, simulator.DefaultType+"/"+id)
	}
	args := append(strings.Fields(spec), "--devices", strings.Join(list, ","))
	if code, out, errs := cli(append([]string{"create"}, args...)...); code != 0 {
		t.Fatalf("create: exit %d\n%s%s", code, out, errs)
	}

	// The three readers' per-wave numbers.
	fromCLI := func() ([]waveNumbers, error) {
		code, out, errs := cli("show", "waves", "--json")
		if code != 0 {
			return nil, fmt.Errorf("rollout show: exit %d: %s", code, errs)
		}
		var rep events.RolloutReply
		if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Job == nil {
			return nil, fmt.Errorf("rollout show --json: %v: %s", err, out)
		}
		return jobNumbers(rep.Job), nil
	}
	fromAPI := func() ([]waveNumbers, error) {
		resp, err := http.Get(base + "/api/v1/rollouts/waves")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var rep events.RolloutReply
		if err := json.Unmarshal(b, &rep); err != nil || resp.StatusCode != http.StatusOK || rep.Job == nil {
			return nil, fmt.Errorf("GET /api/v1/rollouts/waves: %d %v: %s", resp.StatusCode, err, b)
		}
		return jobNumbers(rep.Job), nil
	}
	fromWS := func() ([]waveNumbers, error) {
		pushMu.Lock()
		b := push
		pushMu.Unlock()
		var snap struct {
			Waves []struct {
				JobID string `json:"jobId"`
				Wave  int    `json:"wave"`
				events.WaveProgress
			} `json:"waves"`
		}
		if err := json.Unmarshal(b, &snap); err != nil {
			return nil, fmt.Errorf("websocket push: %v", err)
		}
		var out []waveNumbers
		for _, w := range snap.Waves {
			if w.JobID == "waves" {
				out = append(out, waveNumbers{Wave: w.Wave, WaveProgress: w.WaveProgress})
			}
		}
		return out, nil
	}

	// same compares the three at one instant: each wave's states add up to
	// its size in the plan, and the readers agree wave by wave.
	same := func() error {
		cliW, err := fromCLI()
		if err != nil {
			return err
		}
		apiW, err := fromAPI()
		if err != nil {
			return err
		}
		wsW, err := fromWS()
		if err != nil {
			return err
		}
		for name, ws := range map[string][]waveNumbers{"cli": cliW, "api": apiW, "websocket": wsW} {
			if len(ws) != waveCount {
				return fmt.Errorf("%s shows %d waves, the plan has %d: %+v", name, len(ws), waveCount, ws)
			}
			for i, w := range ws {
				// The plan's waves are of equal size, the first ones one
				// larger when it does not divide.
				size := devices / waveCount
				if i < devices%waveCount {
					size++
				}
				sum := w.Queued + w.Pending + w.InProgress + w.Completed + w.Failed + w.TimedOut + w.Offline
				if w.Wave != i+1 || w.Targeted != size || sum != size {
					return fmt.Errorf("%s wave %d: %+v: targeted %d and states adding up to %d, want both %d", name, w.Wave, w.WaveProgress, w.Targeted, sum, size)
				}
			}
		}
		for i := range cliW {
			if cliW[i] != apiW[i] || cliW[i] != wsW[i] {
				return fmt.Errorf("wave %d: cli %+v, api %+v, websocket %+v", i+1, cliW[i].WaveProgress, apiW[i].WaveProgress, wsW[i].WaveProgress)
			}
		}
		return nil
	}
	// check waits for an instant at which the three agree (the log quiet
	// enough for both folds to have applied the same events) and returns
	// the numbers seen.
	check := func(instant string) []waveNumbers {
		t.Helper()
		var last error
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if last = same(); last == nil {
				w, _ := fromCLI()
				t.Logf("%s: %+v", instant, w)
				return w
			}
		}
		t.Fatalf("%s: the readers never agreed: %v", instant, last)
		return nil
	}
	status := func() events.RolloutJob {
		_, out, _ := cli("show", "waves", "--json")
		var rep events.RolloutReply
		if json.Unmarshal([]byte(out), &rep) != nil || rep.Job == nil {
			return events.RolloutJob{}
		}
		return *rep.Job
	}

	// Instant 1: started and paused at once (before or while wave 1 is
	// sent), the other waves planned: every wave counts its plan from the
	// start.
	if code, out, errs := cli("start", "waves"); code != 0 {
		t.Fatalf("start: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := cli("pause", "waves", "--reason", "look"); code != 0 {
		t.Fatalf("pause: exit %d\n%s%s", code, out, errs)
	}
	w := check("paused in wave 1")
	if last := w[len(w)-1]; last.Queued != last.Targeted {
		t.Errorf("paused in wave 1: the last wave %+v, want all queued", last.WaveProgress)
	}

	// Instant 2: resumed, paused again once wave 3 runs.
	if code, out, errs := cli("resume", "waves"); code != 0 {
		t.Fatalf("resume: exit %d\n%s%s", code, out, errs)
	}
	testutil.Eventually(t, 60*time.Second, func() bool { return status().Wave >= 3 }, "wave 3 never started: %+v", status())
	if code, out, errs := cli("pause", "waves"); code != 0 {
		t.Fatalf("pause: exit %d\n%s%s", code, out, errs)
	}
	w = check("paused in wave 3")
	if last := w[len(w)-1]; last.Queued != last.Targeted {
		t.Errorf("paused in wave 3: the last wave %+v, want all queued", last.WaveProgress)
	}

	// Instant 3: finished.
	if code, out, errs := cli("resume", "waves"); code != 0 {
		t.Fatalf("resume: exit %d\n%s%s", code, out, errs)
	}
	testutil.Eventually(t, 120*time.Second, func() bool { return status().Status != events.RolloutRunning },
		"the job never finished: %+v", status())
	if job := status(); job.Status != events.RolloutCompleted {
		t.Fatalf("job %s: %s", job.Status, job.Reason)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return status().Total.TimedOut == len(silent) },
		"the silent devices never timed out: %+v", status().Total)
	w = check("completed")
	var total events.WaveProgress
	for _, x := range w {
		total = total.Add(x.WaveProgress)
	}
	if total.Offline != len(offline) || total.TimedOut != len(silent) || total.Queued != 0 || total.Completed+total.Failed != simulated {
		t.Errorf("completed: total %+v, want %d offline, %d timed out, the %d simulated devices completed or failed",
			total, len(offline), len(silent), simulated)
	}
}

// jobNumbers are a job view's per-wave numbers.
func jobNumbers(j *events.RolloutJob) []waveNumbers {
	out := make([]waveNumbers, 0, len(j.Waves))
	for _, w := range j.Waves {
		out = append(out, waveNumbers{Wave: w.Wave, WaveProgress: w.Progress})
	}
	return out
}

// publishGuessedOffline stores, for each of ids (of the simulator's
// type), a report a day ago and then otawatch's guess that the device went
// potentially offline: devices of a plan that no simulator answers for.
func publishGuessedOffline(t *testing.T, js *testutil.JetStream, ids []string) {
	t.Helper()
	day := time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Second)
	for _, id := range ids {
		fw := events.Firmware{Version: "1.0.0", Status: events.StatusCompleted, Timestamp: day, Checksum: "sha256:" + strings.Repeat("1", 64)}
		publish(t, js, events.ShadowReportedSubject(simulator.DefaultType, id), events.ReportEventID(simulator.DefaultType, id, fw),
			events.TypeShadowReported, id, day, events.ShadowReportedData{TypeID: simulator.DefaultType, DeviceID: id,
				Topic: events.ReportTopic(simulator.DefaultType, id), Firmware: fw})
		publish(t, js, events.DevicePresenceSubject(simulator.DefaultType, id),
			events.PresenceEventID(simulator.DefaultType, id, events.PresencePotentiallyOffline, day),
			events.TypeDevicePresence, id, day.Add(time.Hour), events.DevicePresenceData{TypeID: simulator.DefaultType, DeviceID: id,
				State: events.PresencePotentiallyOffline, LastSeen: day})
	}
}

// publish stores one event on SHADOW as a service would.
func publish(t *testing.T, js *testutil.JetStream, subject, id, typ, subj string, at time.Time, data any) {
	t.Helper()
	e, err := events.New(id, events.SourceBridge, typ, subj, at, data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: b, Header: nats.Header{"Nats-Msg-Id": {id}}}); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}
