package rollout

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/simulator"
)

// startFleet runs a simulated fleet (fleet mode: devices install what their
// delta topic asks) on the rig's broker and waits until it is connected.
func (r *rig) startFleet(cfg simulator.FleetConfig) *simulator.Fleet {
	r.t.Helper()
	f, err := r.tryFleet(cfg, 60*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	return f
}

// tryFleet is startFleet returning an error when the fleet does not
// connect within timeout.
func (r *rig) tryFleet(cfg simulator.FleetConfig, timeout time.Duration) (*simulator.Fleet, error) {
	cfg.Broker, cfg.Mode = r.broker, simulator.ModeFleet
	if cfg.ClientIDPrefix == "" {
		cfg.ClientIDPrefix = "sim"
	}
	f, err := simulator.NewFleet(cfg, testLog())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() { runErr = f.Run(ctx); close(done) }()
	r.t.Cleanup(func() { cancel(); <-done })
	select {
	case <-f.Ready():
		return f, nil
	case <-done:
		return nil, fmt.Errorf("fleet stopped: %v", runErr)
	case <-time.After(timeout):
		return nil, fmt.Errorf("the fleet of %d devices did not connect in %s: %v", cfg.Devices, timeout, f.Stats())
	}
}

// fleetSpec is a job over every device of a simulated fleet, by name (its
// devices do not report until asked to update, so the fleet state does not
// know them by type yet).
func fleetSpec(id string, f *simulator.Fleet, typeID string) *events.RolloutSpec {
	s := &events.RolloutSpec{ID: id, Target: events.DesiredFirmware{Version: "4.2.0", Checksum: "sha256:4242424242424242424242424242424242424242424242424242424242424242", URL: "https://fw.example/4.2.0.bin"}}
	for _, d := range f.DeviceIDs() {
		s.Devices = append(s.Devices, typeID+"/"+d)
	}
	return s
}

// checkReceivedOnce checks every device of the fleet received its desired
// state exactly once, as the simulator counts it.
func checkReceivedOnce(t *testing.T, f *simulator.Fleet) {
	t.Helper()
	hist := map[int]int{}
	for _, id := range f.DeviceIDs() {
		hist[f.DeltasReceived(id)]++
	}
	if hist[1] != len(f.DeviceIDs()) {
		t.Errorf("devices by deltas received: %v, want all %d at 1", hist, len(f.DeviceIDs()))
	}
}

func TestSimulatedFleetRollout(t *testing.T) {
	const devices = 1500
	// A fleet of 1500 connections with persistent sessions, on the
	// embedded server's MQTT listener (more than 1000: see natsd).
	r := newBareRig(t)
	// Installs of ~127 s (device time) at time scale 1000; 1% fail. One
	// connection per device, as real devices.
	f := r.startFleet(simulator.FleetConfig{Devices: devices, TimeScale: 1000, FailureRate: 0.01, Seed: 7})
	r.start("a", testConfig(r.broker), nil)
	spec := fleetSpec("sim", f, simulator.DefaultType)
	spec.MinFinished = 50
	spec.Rate = 2000
	spec.DeviceTimeout = events.Duration(10 * time.Second)
	rep := r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: spec})
	if rep.Job.WaveCount != 15 {
		t.Fatalf("%d waves, want 15", rep.Job.WaveCount)
	}
	job := r.waitStatus("sim", 100*time.Second, events.RolloutCompleted, events.RolloutPaused, events.RolloutAborted)
	if job.Status != events.RolloutCompleted {
		t.Fatalf("job %s: %s\nfleet: %+v\nwave 1: %+v", job.Status, job.Reason, f.Stats(), job.Waves[0].Progress)
	}
	r.checkWaves("sim", 15)
	checkReceivedOnce(t, f)
	st := f.Stats()
	// Every wave passed at 90%: at least 1350 completed when the last wave
	// was gated, and the stragglers of every wave finish after.
	testutil.Eventually(t, 30*time.Second, func() bool { return f.Stats().Completed+f.Stats().Failed == devices },
		"not every device finished: %+v", st)
	final := r.mustRequest("show", events.RolloutRequest{JobID: "sim"}).Job.Total
	testutil.Eventually(t, 10*time.Second, func() bool {
		final = r.mustRequest("show", events.RolloutRequest{JobID: "sim"}).Job.Total
		return final.Completed+final.Failed == devices
	}, "show never counted every device: %+v", final)
	if int64(final.Completed) != f.Stats().Completed || int64(final.Failed) != f.Stats().Failed {
		t.Errorf("show counts %d completed, %d failed; the fleet %d, %d", final.Completed, final.Failed, f.Stats().Completed, f.Stats().Failed)
	}
}

func TestSimulatedFleetKilledAndRestarted(t *testing.T) {
	const devices = 300
	r := newBareRigOn(t, testutil.StartMosquitto(t).URL)
	f := r.startFleet(simulator.FleetConfig{Devices: devices, TimeScale: 1000, Seed: 3})
	cfg := testConfig(r.broker)
	total := 0
	kill := make(chan struct{})
	r.start("a", cfg, func(s *Service) {
		s.hooks.crashAfterPublish = func(acked int) bool {
			total += acked
			if total < 150 {
				return false
			}
			close(kill)
			return true
		}
	})
	spec := fleetSpec("sim", f, simulator.DefaultType)
	spec.WaveSize, spec.Rate = 100, 100
	r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: spec})
	<-kill
	// The instance is stuck at its crash point; cut it off and start another.
	r.mustStopAll()
	b := r.start("b", cfg, nil)
	job := r.waitStatus("sim", 60*time.Second, events.RolloutCompleted, events.RolloutPaused, events.RolloutAborted)
	if job.Status != events.RolloutCompleted {
		t.Fatalf("job %s: %s", job.Status, job.Reason)
	}
	if st := b.s.Stats(); st.RetainedConfirmed == 0 || st.Resent != 0 {
		t.Errorf("restarted driver: %+v; want unconfirmed sends found on the broker and none resent", st)
	}
	r.checkWaves("sim", 3)
	checkReceivedOnce(t, f)
}
