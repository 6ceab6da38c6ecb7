package rollout

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/simulator"
)

// benchBrokers are the brokers the benchmarks run on.
func benchBrokers() []struct {
	name  string
	start func(b *testing.B) *rig
} {
	return []struct {
		name  string
		start func(b *testing.B) *rig
	}{
		{"mosquitto", func(b *testing.B) *rig { return newBareRigOn(b, testutil.StartMosquitto(b).URL) }},
		{"nats-mqtt", func(b *testing.B) *rig { return newBareRigOn(b, "") }},
	}
}

// shadowReported counts the reports SHADOW holds.
func (r *rig) shadowReported() int {
	n := 0
	st, err := r.js.JS.Stream(context.Background(), events.StreamShadow)
	if err != nil {
		r.t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstreamSubjects(events.SubjectShadowReported+".>"))
	if err != nil {
		r.t.Fatal(err)
	}
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n
}

// lognormalQuantile is the q-quantile of the simulator's install duration
// (log-normal with this mean and standard deviation).
func lognormalQuantile(mean, stddev time.Duration, z float64) time.Duration {
	m, s := mean.Seconds(), stddev.Seconds()
	sigma2 := math.Log(1 + s*s/(m*m))
	mu := math.Log(m) - sigma2/2
	return time.Duration(math.Exp(mu+z*math.Sqrt(sigma2)) * float64(time.Second))
}

// BenchmarkRollout1500 is the time to run a 1500-device, 15-wave rollout
// (simulated fleet at time scale 600, 1% failures, 1000 desired states/s),
// from create to job_completed, through the real broker, bridge, JetStream
// and rollout service. The baseline in the same run, on the same fleet, is
// the same work without waves: the 1500 desired states published at once
// by a bare MQTT client, until every device reported its outcome. The
// floor is what the waves cannot beat: 15 x (a wave's sends + the 90th
// percentile install time).
//
//	scripts/bench rollout   (go test -run '^$' -bench Rollout1500 -benchtime 1x ./services/rollout)
func BenchmarkRollout1500(b *testing.B) {
	const devices, scale, rate = 1500, 600.0, 1000.0
	for _, br := range benchBrokers() {
		b.Run(br.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				r := br.start(b)
				f := r.startFleet(simulator.FleetConfig{Devices: devices, TimeScale: scale, FailureRate: 0.01, Seed: uint64(i + 1),
					ClientIDPrefix: "b" + strconv.Itoa(i)})
				// Baseline: every device at once, no orchestrator.
				pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(r.broker).SetClientID("raw-" + strconv.Itoa(i)).SetOrderMatters(false))
				if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					b.Fatal(tok.Error())
				}
				t0 := time.Now()
				var toks []mqtt.Token
				for _, id := range f.DeviceIDs() {
					toks = append(toks, pub.Publish(events.DeltaTopic(simulator.DefaultType, id), 1, false,
						deltaPayload("raw", events.DesiredFirmware{Version: "4.1.9", Checksum: "sha256:419", URL: "https://fw/4.1.9"}, time.Now())))
				}
				for _, tok := range toks {
					tok.WaitTimeout(30 * time.Second)
				}
				testutil.Eventually(b, 2*time.Minute, func() bool { s := f.Stats(); return s.Completed+s.Failed == devices },
					"baseline: not every device finished: %v", fleetStats{f})
				raw := time.Since(t0)
				pub.Disconnect(100)

				r.start("bench", testConfig(r.broker), nil)
				spec := fleetSpec("bench", f, simulator.DefaultType)
				spec.MinFinished, spec.Rate, spec.DeviceTimeout = 50, rate, events.Duration(time.Minute)
				t1 := time.Now()
				r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: spec})
				job := r.waitStatus("bench", 5*time.Minute, events.RolloutCompleted, events.RolloutPaused, events.RolloutAborted)
				took := time.Since(t1)
				if job.Status != events.RolloutCompleted {
					b.Fatalf("job %s: %s", job.Status, job.Reason)
				}
				p90 := time.Duration(float64(lognormalQuantile(simulator.DefaultDurationMean, simulator.DefaultDurationStddev, 1.2816)) / scale)
				floor := 15*p90 + time.Duration(devices/rate*float64(time.Second))
				b.ReportMetric(took.Seconds(), "s/rollout")
				b.ReportMetric(raw.Seconds(), "s/raw")
				b.ReportMetric(took.Seconds()/raw.Seconds(), "ratio")
				b.Logf("%s: 1500 devices, 15 waves, time scale %g: rollout %s, baseline all-at-once %s, ratio %.1f; floor 15 x p90 %s + sends %s = %s (%.2f of it); %.0f ms per wave",
					br.name, scale, took.Round(time.Millisecond), raw.Round(time.Millisecond), took.Seconds()/raw.Seconds(),
					p90.Round(time.Millisecond), time.Duration(devices/rate*float64(time.Second)), floor.Round(time.Millisecond),
					took.Seconds()/floor.Seconds(), took.Seconds()*1000/15)
			}
		})
	}
}

// BenchmarkFleetSize finds the largest fleet the simulator and the
// pipeline (broker, bridge, JetStream, the rollout service's fold and
// sends) handle together with no loss: for growing fleets, one wave to
// every device as fast as the orchestrator sends, each device reporting
// in_progress then its outcome at time scale 10000; no loss means SHADOW
// holds exactly two reports per device, every device received its desired
// state once and the job's counts account for every device. The baseline
// in the same run is a bare MQTT client pushing the same number of
// reports through the broker and bridge into SHADOW. Sizes come from
// OTAWATCH_BENCH_SIZES (default 1500,3000,6000,12000); it stops at the
// first size that loses something or does not finish in 2 minutes.
//
//	scripts/bench rollout-fleet
func BenchmarkFleetSize(b *testing.B) {
	sizes := []int{1500, 3000, 6000, 12000}
	if s := os.Getenv("OTAWATCH_BENCH_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				b.Fatalf("OTAWATCH_BENCH_SIZES: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	for _, br := range benchBrokers() {
		b.Run(br.name, func(b *testing.B) {
			best, bestRate := 0, 0.0
			for _, n := range sizes {
				ok := true
				var rate float64
				passed := b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						lossless, r := fleetRound(b, br.start(b), n, i)
						ok, rate = ok && lossless, r
					}
				})
				if !ok || !passed {
					break
				}
				best, bestRate = n, rate
			}
			b.Logf("%s: largest fleet with no loss: %d devices, %.0f reports/s (sizes tried: %v)", br.name, best, bestRate, sizes)
		})
	}
}

func fleetRound(b *testing.B, r *rig, n, round int) (bool, float64) {
	conns := 0
	if n > 3000 {
		// One connection per device costs two file descriptors each. The
		// NATS MQTT listener caps a session's QoS 1 subscriptions at a total
		// max-ack-pending of 65535, 1024 each by default: 63 subscriptions
		// (64 and on get SUBACK 0x80), so 50 devices share a connection.
		conns = n / 50
	}
	f, err := r.tryFleet(simulator.FleetConfig{Devices: n, Connections: conns, TimeScale: 10000, FailureRate: 0.01,
		Seed: uint64(round + 1), ClientIDPrefix: "f" + strconv.Itoa(round)}, 2*time.Minute)
	if err != nil {
		b.Logf("%d devices: %v", n, err)
		return false, 0
	}
	base := r.shadowReported()
	cfg := testConfig(r.broker)
	cfg.MaxBatch = 5000
	r.start("bench", cfg, nil)
	spec := fleetSpec("size", f, simulator.DefaultType)
	spec.Waves, spec.WaveSize, spec.Rate, spec.DeviceTimeout = 1, 0, MaxRate, events.Duration(10*time.Minute)
	spec.MaxFailure = 1
	t0 := time.Now()
	r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: spec})
	deadline := time.Now().Add(2 * time.Minute)
	want := base + 2*n
	for r.shadowReported() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(t0)
	got := r.shadowReported() - base
	st := f.Stats()
	var job *events.RolloutJob
	testutil.Eventually(b, 30*time.Second, func() bool {
		job = r.mustRequest("show", events.RolloutRequest{JobID: "size"}).Job
		return job.Total.Completed+job.Total.Failed == n || time.Now().After(deadline)
	}, "show")
	received := 0
	for _, id := range f.DeviceIDs() {
		if f.DeltasReceived(id) == 1 {
			received++
		}
	}
	lossless := got == 2*n && received == n && job.Total.Completed+job.Total.Failed == n
	rate := float64(got) / took.Seconds()

	// Baseline: a bare client pushes 2n reports through broker and bridge.
	raw := rawReports(b, r, 2*n)
	b.ReportMetric(rate, "reports/s")
	b.ReportMetric(raw, "raw/s")
	b.ReportMetric(rate/raw, "ratio")
	b.Logf("%d devices (%d connections): %d of %d reports in SHADOW in %s = %.0f reports/s; %d devices got their desired state once; show: %d completed, %d failed; simulator: %d publish errors, %d retries; raw broker+bridge %.0f reports/s, ratio %.2f; lossless=%v",
		n, max(conns, n*boolInt(conns == 0)), got, 2*n, took.Round(time.Millisecond), rate, received, job.Total.Completed, job.Total.Failed,
		st.PublishErrors, st.Retries, raw, rate/raw, lossless)
	return lossless, rate
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// rawReports publishes k distinct reports from 8 bare clients (window 4096)
// and returns how many per second reached SHADOW.
func rawReports(b *testing.B, r *rig, k int) float64 {
	base := r.shadowReported()
	const conns = 8
	clients := make([]mqtt.Client, conns)
	for i := range clients {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(r.broker).SetClientID("rawrep-" + strconv.Itoa(i)).SetOrderMatters(false))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatal(tok.Error())
		}
		defer c.Disconnect(100)
		clients[i] = c
	}
	ts := time.Now().UTC()
	slots := make(chan struct{}, 4096)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < k; i++ {
		body := fmt.Sprintf(`{"state":{"reported":{"firmware":{"version":"9.9.9","timestamp":%q,"status":"in_progress","errorCode":null}}}}`,
			ts.Add(time.Duration(i)*time.Microsecond).Format(time.RFC3339Nano))
		slots <- struct{}{}
		wg.Add(1)
		tok := clients[i%conns].Publish(events.ReportTopic("raw", fmt.Sprintf("r-%d", i%5000)), 1, false, []byte(body))
		go func() { tok.WaitTimeout(30 * time.Second); <-slots; wg.Done() }()
	}
	wg.Wait()
	for r.shadowReported() < base+k && time.Since(t0) < 2*time.Minute {
		time.Sleep(10 * time.Millisecond)
	}
	return float64(r.shadowReported()-base) / time.Since(t0).Seconds()
}

func jetstreamSubjects(filter string) jetstream.StreamInfoOpt {
	return jetstream.WithSubjectFilter(filter)
}

// fleetStats prints a fleet's stats when formatted (late, at failure time).
type fleetStats struct{ f *simulator.Fleet }

func (s fleetStats) String() string { return s.f.Stats().String() }
