package app

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/rollout"
)

func TestRolloutCommand(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	url := js.Server.ClientURL()
	run := func(args ...string) (code int, stdout, stderr string) {
		var out, errb bytes.Buffer
		code = Main(context.Background(), append([]string{"rollout"}, append(args, "--nats", url)...),
			&Env{Stdout: &out, Stderr: &errb})
		return code, out.String(), errb.String()
	}

	// Before the service runs: a clear hint.
	code, _, stderr := run("list")
	if code != 1 || !strings.Contains(stderr, "is otawatch running?") {
		t.Fatalf("list without a service: code %d, stderr %q", code, stderr)
	}

	// No broker is needed to create, show and steer jobs: sends wait for
	// the MQTT connection.
	cfg := rollout.Config{Broker: "tcp://127.0.0.1:1", Tick: 20 * time.Millisecond, LeaseTTL: time.Second}
	s, err := rollout.New(cfg, svc.Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), NC: js.NC, JS: js.JS,
		Streams: events.StreamOptions{Replicas: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, 10*time.Second, func() bool { c, _, _ := run("list"); return c == 0 }, "the service never answered")

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string // substrings
		stderr string
		// wait: the driver acts between ticks, so poll until stdout matches.
		wait bool
	}{
		{"no jobs yet", []string{"list"}, 0, []string{"no rollout jobs"}, "", false},
		{"create without devices", []string{"create", "--target-version", "2.0.0", "--checksum", "sha256:" + strings.Repeat("aa", 32), "--url", "https://x"}, 2, nil,
			"name the devices: --type, --devices or --devices-file", false},
		{"create with both plans", []string{"create", "--type", "t", "--waves", "3", "--wave-size", "5"}, 2, nil, "give --waves or --wave-size, not both", false},
		{"create an invalid spec", []string{"create", "--type", "t", "--gate", "1.5"}, 1, nil,
			"invalid job spec: target version is empty; target checksum is empty; target url is empty; gate 1.5 is out of range (0, 1]", false},
		{"create", []string{"create", "--id", "j1", "--target-version", "2.0.0", "--checksum", "sha256:" + strings.Repeat("aa", 32), "--url", "https://x",
			"--devices", "t/a,t/b,t/c,t/d", "--waves", "2", "--device-timeout", "5m"}, 0,
			[]string{"job j1: created", "plan:     2 waves; gate 90% of online devices", "device timeout 5m0s"}, "", false},
		{"create it again", []string{"create", "--id", "j1", "--target-version", "2.0.0", "--checksum", "sha256:" + strings.Repeat("aa", 32), "--url", "https://x",
			"--devices", "t/a"}, 1, nil, "cannot create job j1: it already exists", false},
		{"pause before start", []string{"pause", "j1"}, 1, nil, "cannot pause job j1: it has not started", false},
		{"start", []string{"start", "j1"}, 0, []string{"job j1: running, wave 0 of 2"}, "", false},
		{"show with flags after the job", []string{"show", "j1", "--timeout", "5s"}, 0,
			[]string{"WAVE", "1     open", "2     planned", "waiting: sending: 2 of 2 devices still queued"}, "", true},
		{"pause", []string{"pause", "j1", "--reason", "lunch"}, 0, []string{"job j1: paused", "why:      lunch (operator)"}, "", false},
		{"pause twice", []string{"pause", "j1"}, 1, nil, "cannot pause job j1: it is already paused", false},
		{"retry with nothing failed", []string{"retry-failed", "j1"}, 1, nil,
			"cannot retry-failed job j1: no device of its started waves has failed or timed out", false},
		{"resume", []string{"resume", "j1"}, 0, []string{"job j1: running"}, "", false},
		{"abort", []string{"abort", "j1"}, 0, []string{"job j1: aborted", "aborted by an operator"}, "", false},
		{"resume an aborted job", []string{"resume", "j1"}, 1, nil, "cannot resume job j1: it is aborted", false},
		{"show an unknown job", []string{"show", "nope"}, 1, nil, `no rollout job "nope"`, false},
		{"show without a job", []string{"show"}, 2, nil, "rollout show needs one JOB argument", false},
		{"list", []string{"list"}, 0, []string{"JOB", "j1   aborted  1/2"}, "", false},
		{"json", []string{"show", "--json", "j1"}, 0, []string{`"status": "aborted"`, `"deviceTimeout": "5m0s"`}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(tt.args...)
			if tt.wait {
				testutil.Eventually(t, 5*time.Second, func() bool {
					code, stdout, stderr = run(tt.args...)
					return strings.Contains(stdout, tt.stdout[len(tt.stdout)-1])
				}, "never printed %q", tt.stdout[len(tt.stdout)-1])
			}
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, stderr)
			}
		})
	}
}
