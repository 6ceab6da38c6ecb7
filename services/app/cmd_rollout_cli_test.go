package app

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// rolloutCall is one request a fake rollout service received.
type rolloutCall struct {
	cmd   string
	actor string
	req   events.RolloutRequest
}

// fakeRolloutService answers the rollout command subjects as the rollout
// service would, and records each request: "list" gets two jobs,
// "retry-failed" three retried devices, job "refused" an error, job
// "silent" no answer at all, and every other command its job back.
func fakeRolloutService(t *testing.T, nc *nats.Conn) <-chan rolloutCall {
	t.Helper()
	calls := make(chan rolloutCall, 16)
	created := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
	sub, err := nc.Subscribe(events.RolloutCommandPrefix+".>", func(m *nats.Msg) {
		cmd, _, _ := events.ParseRolloutCommandSubject(m.Subject)
		var req events.RolloutRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Errorf("request on %s is not JSON: %v", m.Subject, err)
		}
		calls <- rolloutCall{cmd: cmd, actor: m.Header.Get(events.RolloutActorHeader), req: req}
		job := events.RolloutJob{ID: req.JobID, Status: "running", CreatedAt: created}
		if req.Spec != nil {
			job = events.RolloutJob{ID: req.Spec.ID, Status: "created", Spec: *req.Spec, CreatedAt: created}
		}
		var rep events.RolloutReply
		switch {
		case req.JobID == "silent":
			return
		case req.JobID == "refused":
			rep = events.RolloutReply{Error: `no rollout job "refused"`, Code: "not_found"}
		case cmd == "list":
			rep.Jobs = []events.RolloutJob{
				{ID: "j2", Status: "running", Wave: 1, WaveCount: 3, CreatedAt: created,
					Spec: events.RolloutSpec{Target: events.DesiredFirmware{Version: "2.1.0"}}, Total: events.WaveProgress{Targeted: 9, Completed: 4, Failed: 1}},
				{ID: "j1", Status: "completed", Wave: 2, WaveCount: 2, CreatedAt: created.Add(-time.Hour),
					Spec: events.RolloutSpec{Target: events.DesiredFirmware{Version: "2.0.0"}}, Total: events.WaveProgress{Targeted: 4, Completed: 3, TimedOut: 1}},
			}
		case req.JobID == "waves":
			job.Status, job.Wave, job.WaveCount = "running", 2, 2
			job.StartedAt = created.Add(time.Minute)
			job.Waves = []events.RolloutWave{
				{Wave: 1, Status: "done", Progress: events.WaveProgress{Targeted: 2, Completed: 2},
					Gate: &events.GateDecision{Passed: true, Reason: "2 of 2 completed"}},
				{Wave: 2, Status: "open", Progress: events.WaveProgress{Targeted: 3, Pending: 1, InProgress: 1, Failed: 1},
					Gate: &events.GateDecision{Reason: "0 of 3 completed"}},
			}
			job.Total = events.WaveProgress{Targeted: 5, Pending: 1, InProgress: 1, Completed: 2, Failed: 1}
			rep.Job = &job
		case cmd == "retry-failed":
			job.Attempts = 2
			rep = events.RolloutReply{Job: &job, Retried: 3}
		default:
			rep.Job = &job
		}
		b, _ := json.Marshal(rep)
		if err := m.Respond(b); err != nil {
			t.Errorf("respond: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return calls
}

// TestRolloutCommandLine checks what "otawatch rollout" sends for each
// command line (the request and the actor header), how it prints the
// reply, and its usage errors, against a fake rollout service.
func TestRolloutCommandLine(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{NoStreams: true})
	calls := fakeRolloutService(t, js.NC)
	dir := t.TempDir()
	devicesFile := filepath.Join(dir, "devices")
	if err := os.WriteFile(devicesFile, []byte("t/e # the lab's\n\n# spares:\nf, g\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, []byte("# nobody\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	checksum := "sha256:" + strings.Repeat("ab", 32)

	tests := []struct {
		name    string
		args    []string
		environ []string
		code    int
		stdout  []string // substrings
		stderr  []string // substrings
		// cmd is the command the service receives ("": none is sent), with
		// req and actor.
		cmd   string
		req   events.RolloutRequest
		actor string
	}{
		{name: "no command", code: 2, stderr: []string{"usage: otawatch rollout COMMAND", "which rollout command?"}},
		{name: "help", args: []string{"help"}, stdout: []string{"usage: otawatch rollout COMMAND", "retry-failed JOB"}},
		{name: "--help", args: []string{"--help"}, stdout: []string{"usage: otawatch rollout COMMAND"}},
		{name: "help of a command", args: []string{"show", "-h"}, stderr: []string{"usage: otawatch rollout COMMAND"}},
		{name: "unknown command", args: []string{"launch", "j1"}, code: 2,
			stderr: []string{"usage: otawatch rollout COMMAND", `unknown rollout command "launch"`}},
		{name: "a flag of another command", args: []string{"start", "j1", "--reason", "x"}, code: 2,
			stderr: []string{"flag provided but not defined: -reason", "usage: otawatch rollout COMMAND"}},
		{name: "list with an argument", args: []string{"list", "j1"}, code: 2, stderr: []string{`unexpected argument "j1"`}},
		{name: "create with an argument", args: []string{"create", "--type", "t", "j1"}, code: 2, stderr: []string{`unexpected argument "j1"`}},
		{name: "start without a job", args: []string{"start"}, code: 2, stderr: []string{"rollout start needs one JOB argument"}},
		{name: "pause two jobs", args: []string{"pause", "j1", "j2"}, code: 2, stderr: []string{"rollout pause needs one JOB argument"}},
		{name: "create with both plans", args: []string{"create", "--type", "t", "--waves", "2", "--wave-size", "3"}, code: 2,
			stderr: []string{"give --waves or --wave-size, not both"}},
		{name: "create without devices", args: []string{"create", "--target-version", "2"}, code: 2,
			stderr: []string{"name the devices: --type, --devices or --devices-file"}},
		{name: "create with a missing devices file", args: []string{"create", "--devices-file", filepath.Join(dir, "nope")}, code: 1,
			stderr: []string{"devices file: open "}},
		{name: "create with an empty devices file", args: []string{"create", "--devices-file", emptyFile}, code: 1,
			stderr: []string{"devices file " + emptyFile + " names no device"}},
		{name: "create with every setting", environ: []string{"USER=bob", "USER="},
			args: []string{"create", "--id", "j9", "--target-version", "2.1.0", "--checksum", checksum, "--url", "https://fw/x.bin",
				"--type", "camera", "--devices", "t/a,t/b", "--devices", " c, ,d", "--devices-file", devicesFile, "--wave-size", "5",
				"--gate", "0.8", "--max-failure", "0.2", "--min-finished", "3", "--on-failure", "abort", "--device-timeout", "45m",
				"--rate", "12.5", "--soak", "2m", "--cel-gate", "fleet.online > 0", "--start"},
			stdout: []string{"job j9: created\n", "  target:   2.1.0 " + checksum + " https://fw/x.bin\n", "  devices:  type camera + 7 listed\n",
				"  plan:     waves of 5; gate 80% of online devices; soak 2m0s\n",
				"  failure:  abort when more than 20% of a wave failed or timed out (once 3 finished); device timeout 45m0s\n",
				"  rate:     12.5/s; cel gate: fleet.online > 0\n"},
			cmd: "create", actor: "bob", req: events.RolloutRequest{Start: true, Spec: &events.RolloutSpec{
				ID: "j9", Target: events.DesiredFirmware{Version: "2.1.0", Checksum: checksum, URL: "https://fw/x.bin"},
				DeviceType: "camera", Devices: []string{"t/a", "t/b", "c", "d", "t/e", "f", "g"}, WaveSize: 5, Gate: 0.8,
				MaxFailure: 0.2, MinFinished: 3, OnFailure: "abort", DeviceTimeout: events.Duration(45 * time.Minute), Rate: 12.5,
				Soak: events.Duration(2 * time.Minute), CELGate: "fleet.online > 0"}}},
		{name: "create with defaults", args: []string{"create", "--type", "t", "--waves", "3"}, stdout: []string{"job : created", "plan:     3 waves;"},
			cmd: "create", req: events.RolloutRequest{Spec: &events.RolloutSpec{DeviceType: "t", Waves: 3}}},
		{name: "start", args: []string{"start", "j1"}, environ: []string{"USER=alice"}, stdout: []string{"job j1: running\n"},
			cmd: "start", actor: "alice", req: events.RolloutRequest{JobID: "j1"}},
		{name: "show", args: []string{"show", "j1"}, stdout: []string{"job j1: running\n"}, cmd: "show", req: events.RolloutRequest{JobID: "j1"}},
		{name: "show a job's waves", args: []string{"show", "waves"},
			stdout: []string{"job waves: running, wave 2 of 2\n", "  created:  2026-11-30T18:00:00Z; started 2026-11-30T18:01:00Z\n\n" +
				"WAVE  STATUS  TARGETED  QUEUED  PENDING  IN PROGRESS  COMPLETED  FAILED  TIMED OUT  OFFLINE  GATE\n" +
				"1     done    2         0       0        0            2          0       0          0        passed: 2 of 2 completed\n" +
				"2     open    3         0       1        1            0          1       0          0        waiting: 0 of 3 completed\n" +
				"all           5         0       1        1            2          1       0          0        \n"},
			cmd: "show", req: events.RolloutRequest{JobID: "waves"}},
		{name: "resume", args: []string{"resume", "j1"}, stdout: []string{"job j1: running\n"}, cmd: "resume", req: events.RolloutRequest{JobID: "j1"}},
		{name: "pause with a reason", args: []string{"pause", "--reason", "lunch", "j1"}, stdout: []string{"job j1: running\n"},
			cmd: "pause", req: events.RolloutRequest{JobID: "j1", Reason: "lunch"}},
		{name: "abort with a reason after the job", args: []string{"abort", "j1", "--reason", "bad build"}, stdout: []string{"job j1: running\n"},
			cmd: "abort", req: events.RolloutRequest{JobID: "j1", Reason: "bad build"}},
		{name: "retry-failed", args: []string{"retry-failed", "j1"},
			stdout: []string{"3 device(s) queued again (attempt 2)\n\njob j1: running\n", "  retries:  2 round(s) of retry-failed\n"},
			cmd:    "retry-failed", req: events.RolloutRequest{JobID: "j1"}},
		{name: "list", args: []string{"list"},
			stdout: []string{"JOB  STATUS     WAVE  DEVICES  COMPLETED  FAILED  TIMED OUT  TARGET  CREATED\n",
				"j2   running    1/3   9        4          1       0          2.1.0   2026-11-30T18:00:00Z\n",
				"j1   completed  2/2   4        3          0       1          2.0.0   2026-11-30T17:00:00Z\n"},
			cmd: "list"},
		{name: "list as JSON", args: []string{"list", "--json"}, stdout: []string{"{\n  \"jobs\": [\n    {\n      \"id\": \"j2\","},
			cmd: "list"},
		{name: "show as JSON", args: []string{"show", "j1", "--json"}, stdout: []string{"{\n  \"job\": {\n    \"id\": \"j1\",\n"},
			cmd: "show", req: events.RolloutRequest{JobID: "j1"}},
		{name: "a refused command", args: []string{"show", "refused"}, code: 1, stderr: []string{"otawatch rollout: no rollout job \"refused\"\n"},
			cmd: "show", req: events.RolloutRequest{JobID: "refused"}},
		{name: "no reply", args: []string{"resume", "silent", "--timeout", "300ms"}, code: 1,
			stderr: []string{"otawatch rollout: rollout resume: no reply within 300ms\n"},
			cmd:    "resume", req: events.RolloutRequest{JobID: "silent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for len(calls) > 0 {
				<-calls
			}
			var out, errb bytes.Buffer
			args := append([]string{"rollout"}, tt.args...)
			if len(tt.args) > 0 {
				args = append(args, "--nats", js.Server.ClientURL())
			}
			environ := append([]string{"OTAWATCH_DATA_DIR=" + dir}, tt.environ...)
			code := Main(context.Background(), args, &Env{Stdout: &out, Stderr: &errb, Environ: environ})
			checkRun(t, code, out.String(), errb.String(), tt.code, tt.stdout, tt.stderr)
			if tt.cmd == "" {
				if len(calls) > 0 {
					t.Errorf("sent %+v, want no request", <-calls)
				}
				return
			}
			var got rolloutCall
			select {
			case got = <-calls:
			case <-time.After(30 * time.Second):
				t.Fatalf("the service received no %s request", tt.cmd)
			}
			want := rolloutCall{cmd: tt.cmd, actor: tt.actor, req: tt.req}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("request:\n got %+v spec %+v\nwant %+v spec %+v", got, got.req.Spec, want, want.req.Spec)
			}
		})
	}
}

// checkRun fails t unless a command exited with code and its stdout and
// stderr hold every one of wantOut and wantErr.
func checkRun(t *testing.T, gotCode int, stdout, stderr string, code int, wantOut, wantErr []string) {
	t.Helper()
	if gotCode != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", gotCode, code, stdout, stderr)
	}
	for _, want := range wantOut {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	for _, want := range wantErr {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}
