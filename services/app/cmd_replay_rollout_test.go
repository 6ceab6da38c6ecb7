package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/rollout"
	"github.com/otawatch/otawatch/services/simulator"
)

// recordSimulatedRollout runs a rollout over a simulated fleet (the real
// bridge and orchestrator on an embedded JetStream, 60 devices of which
// about 10% fail) to its end, and returns the server and the job's id.
func recordSimulatedRollout(t *testing.T) (*testutil.JetStream, string) {
	t.Helper()
	const devices = 60
	l := startLive(t)
	l.startBridge("bridge-replay")
	f := l.startFleet(simulator.FleetConfig{Devices: devices, TimeScale: 1000, FailureRate: 0.1, Seed: 11, ClientIDPrefix: "sim-replay"})
	s, err := rollout.New(rollout.Config{Broker: l.broker, Tick: 20 * time.Millisecond, LeaseTTL: time.Second, Instance: "replay"}, l.deps())
	if err != nil {
		t.Fatal(err)
	}
	l.run("rollout", s)
	js := l.js

	spec := &events.RolloutSpec{ID: "fw42", Target: events.DesiredFirmware{Version: "4.2.0", Checksum: "sha256:" + strings.Repeat("42", 32),
		URL: "https://fw.example/4.2.0.bin"}, WaveSize: 15, Gate: 0.8, MaxFailure: 0.3, MinFinished: 5, Rate: 500,
		DeviceTimeout: events.Duration(10 * time.Second), Soak: events.Duration(100 * time.Millisecond)}
	for _, id := range f.DeviceIDs() {
		spec.Devices = append(spec.Devices, simulator.DefaultType+"/"+id)
	}
	var status string
	testutil.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := events.RolloutRequestDo(ctx, js.NC, rollout.CmdCreate, events.RolloutRequest{Start: true, Spec: spec})
		return err == nil
	}, "the job was never created")
	testutil.Eventually(t, 120*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rep, err := events.RolloutRequestDo(ctx, js.NC, "show", events.RolloutRequest{JobID: spec.ID})
		if err == nil {
			status = rep.Job.Status
		}
		return status == events.RolloutCompleted || status == events.RolloutPaused || status == events.RolloutAborted
	}, "the job never ended (last status %q)", status)
	if status != events.RolloutCompleted {
		t.Fatalf("the recorded job ended %s, want completed", status)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { st := f.Stats(); return st.Completed+st.Failed == devices },
		"not every device finished: %+v", f.Stats())
	return js, spec.ID
}

// TestReplayRolloutAndWhatIfCommands runs "otawatch replay rollout" and
// "otawatch rollout what-if" against the log of a rollout over a
// simulated fleet: the replay finds no difference until the test appends
// a wave_gated with other counts, which it names, exiting 1; the what-if
// with the job's settings makes the recorded decisions wave by wave, a
// failure policy of 1% pauses it, and bad input is refused with the flag
// named.
func TestReplayRolloutAndWhatIfCommands(t *testing.T) {
	js, job := recordSimulatedRollout(t)
	url := js.Server.ClientURL()
	run := func(args ...string) (code int, stdout, stderr string) {
		var out, errb bytes.Buffer
		code = Main(context.Background(), append(args, "--nats", url), &Env{Stdout: &out, Stderr: &errb})
		return code, out.String(), errb.String()
	}

	code, stdout, stderr := run("replay", "rollout", job)
	if code != 0 || !strings.Contains(stdout, "job fw42: completed") || !strings.Contains(stdout, "no difference") ||
		!strings.Contains(stdout, "wave_gated wave 4: ") || !strings.Contains(stderr, "read job fw42") {
		t.Fatalf("replay rollout: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	code, stdout, stderr = run("rollout", "what-if", job, "--json")
	var own rollout.WhatIfResult
	if code != 0 || json.Unmarshal([]byte(stdout), &own) != nil {
		t.Fatalf("what-if --json: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// Recorded in real time, the ticks may see a report a tick apart from
	// the what-if (rollout.WhatIf's comment), but not another course.
	if len(own.Decisions) != len(own.Actual) || own.End.Status != events.RolloutCompleted || own.End.Sent != 60 || len(own.Waves) != 4 {
		t.Errorf("own settings: %d decisions (recorded %d), end %+v, %d waves", len(own.Decisions), len(own.Actual), own.End, len(own.Waves))
	}
	for i := 0; i < min(len(own.Decisions), len(own.Actual)); i++ {
		if a, b := own.Decisions[i], own.Actual[i]; a.Event != b.Event || a.Wave != b.Wave {
			t.Errorf("decision %d: what-if %s, recorded %s", i+1, a, b)
		}
	}
	t.Logf("own settings reproduce the real-time recording exactly: %v %s", own.Reproduces, own.Difference)

	code, stdout, _ = run("rollout", "what-if", job, "--max-failure", "0.01", "--min-finished", "1")
	if code != 0 || !strings.Contains(stdout, "max failure 0.3 -> 0.01, min finished 5 -> 1 (the rest as recorded)") ||
		!strings.Contains(stdout, "what-if: paused in wave ") || !strings.Contains(stdout, "actual : completed at +") ||
		!strings.Contains(stdout, "WAVE  WHAT-IF: DEVICES") {
		t.Errorf("what-if --max-failure 0.01: exit %d\n%s", code, stdout)
	}

	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"replay without a job", []string{"replay", "rollout"}, 2, "replay rollout needs one JOB argument"},
		{"replay of no job", []string{"replay", "rollout", "nope"}, 1, `no rollout job "nope"`},
		{"replay of a bad id", []string{"replay", "rollout", "a.b"}, 1, "job id"},
		{"what-if without a job", []string{"rollout", "what-if"}, 2, "rollout what-if needs one JOB argument"},
		{"what-if gate out of range", []string{"rollout", "what-if", job, "--gate", "2"}, 1, "gate 2 is out of range (0, 1]"},
		{"what-if gate not a number", []string{"rollout", "what-if", job, "--gate", "high"}, 2, `invalid value "high" for flag -gate`},
		{"what-if wave size 0", []string{"rollout", "what-if", job, "--wave-size", "0"}, 2, "--wave-size 0 must be at least 1"},
		{"what-if bad cel gate", []string{"rollout", "what-if", job, "--cel-gate", "fleet.nope +"}, 1, "cel gate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("exit %d (want %d), stderr lacks %q:\nstdout: %s\nstderr: %s", code, tt.code, tt.stderr, stdout, stderr)
			}
		})
	}

	// A wave_gated appended with other counts than any tick saw.
	seq := appendChangedGate(t, js, job)
	code, stdout, stderr = run("replay", "rollout", job)
	want := fmt.Sprintf("(seq %d); the decision code gives nothing (the job is completed)", seq)
	if code != 1 || !strings.Contains(stdout, "DIFFERENT") || !strings.Contains(stdout, want) || !strings.Contains(stderr, "1 difference(s)") {
		t.Fatalf("replay rollout after the append: exit %d, want 1 naming seq %d\nstdout:\n%s\nstderr:\n%s", code, seq, stdout, stderr)
	}
}

// appendChangedGate appends to the job a copy of its last wave_gated with
// one completion fewer, as someone editing the record would, and returns
// its sequence.
func appendChangedGate(t *testing.T, js *testutil.JetStream, job string) uint64 {
	t.Helper()
	var last events.Event
	for _, m := range js.Events(t, events.StreamRollout) {
		if m.Subject == events.RolloutSubject(job, "wave_gated") {
			e, err := events.Decode(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			last = e
		}
	}
	var d events.RolloutData
	if err := last.DecodeData(&d); err != nil {
		t.Fatal(err)
	}
	d.Gate.Completed--
	d.Progress.Completed--
	d.Progress.Pending++
	e, err := events.New("tampered-gate", events.SourceRollout, last.Type, job, last.Time.Add(time.Second), d)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.JS.Publish(context.Background(), events.RolloutSubject(job, "wave_gated"), b)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}
