package app

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

func TestRulesCommand(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	env := []string{"OTAWATCH_NATS_URL=" + js.Server.ClientURL()}
	t0 := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	publish := func(dev, status string, at time.Duration) {
		fw := events.Firmware{Version: "2", Timestamp: t0.Add(at), Status: status}
		ev, err := events.New(events.ReportEventID("t", dev, fw), events.SourceBridge, events.TypeShadowReported,
			events.ShadowReportedSubject("t", dev), t0.Add(at), events.ShadowReportedData{TypeID: "t", DeviceID: dev, Firmware: fw})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := ev.Marshal()
		msg := nats.NewMsg(events.ShadowReportedSubject("t", dev))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		if _, err := js.JS.PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	publish("d1", events.StatusFailed, time.Minute)
	publish("d1", events.StatusCompleted, 5*time.Minute)
	publish("d2", events.StatusFailed, 10*time.Minute)
	publish("d3", events.StatusFailed, 30*time.Minute)

	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "x.yaml"), []byte("id: x\nseverity: info\ncondition: device.satus == \"failed\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	failing := t.TempDir()
	if err := os.WriteFile(filepath.Join(failing, "x.yaml"), []byte("id: x\nseverity: info\ncondition: device.status == \"failed\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(failing, "x.test.yaml"), []byte("cases:\n  - name: wrong on purpose\n    steps: [{at: 0s, reported: {device: d1, status: failed}}]\n    expect: {fires: false}\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		not    []string
	}{
		{name: "check the shipped rules", args: []string{"check", "../../rules"}, code: 0,
			stdout: []string{"ok   ../../rules/device-failed.yaml:7: device-failed (critical", "success-rate-low (critical/warning, fleet scope"}},
		{name: "check a bad rule", args: []string{"check", bad}, code: 1,
			stdout: []string{filepath.Join(bad, "x.yaml") + ":3:18: rule x: device has no field \"satus\""}},
		{name: "test the built-in rules", args: []string{"test"}, code: 0, stdout: []string{"29 cases, 29 passed, 0 failed"}},
		{name: "test the shipped rules", args: []string{"test", "../../rules"}, code: 0, stdout: []string{"29 cases, 29 passed, 0 failed"}},
		{name: "a failing case fails", args: []string{"test", failing}, code: 1,
			stdout: []string{"FAIL " + filepath.Join(failing, "x.test.yaml") + ":2: wrong on purpose", "fires: got true, want false", "1 cases, 0 passed, 1 failed"}},
		{name: "backtest a time range", args: []string{"backtest", "../../rules/device-failed.yaml", "--from", "2026-03-01T08:02:00Z", "--to", "2026-03-01T08:20:00Z"}, code: 0,
			stdout: []string{
				"2026-03-01T08:05:00Z  resolved  critical  device-failed  t/d1",
				"2026-03-01T08:10:00Z  raised    critical  device-failed  t/d2",
				"device-failed: 1 raised, 1 resolved, 1 active at the end, 1 devices",
			},
			not: []string{"08:01:00Z", "t/d3"}},
		{name: "backtest as JSON", args: []string{"backtest", "--json", "../../rules/device-failed.yaml"}, code: 0,
			stdout: []string{`"at":"2026-03-01T08:30:00Z","key":"device-failed/t/d3"`}},
		{name: "backtest without a file", args: []string{"backtest", "--from", "2026-03-01"}, code: 2},
		{name: "unknown subcommand", args: []string{"lint"}, code: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), append([]string{"rules"}, tt.args...), &Env{Stdout: &out, Stderr: &errb, Environ: env})
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out.String(), errb.String())
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out.String(), s) {
					t.Errorf("stdout does not contain %q:\n%s", s, out.String())
				}
			}
			for _, s := range tt.not {
				if strings.Contains(out.String(), s) {
					t.Errorf("stdout contains %q:\n%s", s, out.String())
				}
			}
		})
	}
	if n := js.Count(t, events.StreamAlerts); n != 0 {
		t.Errorf("backtest published %d alert events", n)
	}
}
