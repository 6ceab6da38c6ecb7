package app

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestSimulateCommand runs "otawatch simulate" in-process against the
// embedded NATS MQTT listener: a fixed count of reports, the summary line,
// and usage errors.
func TestSimulateCommand(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: true, NoStreams: true})
	broker := "tcp://" + js.Server.MQTTAddr()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{
			name: "a fixed count of reports",
			args: []string{"simulate", "--devices", "30", "--broker", broker, "--rate", "0", "--count", "120",
				"--time-scale", "10000", "--progress", "0"},
			wantOut: "sent=120 ",
		},
		{
			name: "for a duration, with progress lines",
			args: []string{"simulate", "--devices", "10", "--broker", broker, "--rate", "200", "--duration", "1500ms",
				"--time-scale", "1000", "--progress", "500ms", "--client-prefix", "dur"},
			wantOut: "reports/s devices=10",
		},
		{
			name:     "fleet mode with bad values",
			args:     []string{"simulate", "--mode", "fleet", "--devices", "0", "--failure-rate", "2", "--broker", broker},
			wantCode: 2,
			wantErr:  "devices: 0 is out of range",
		},
		{
			name:     "an extra argument",
			args:     []string{"simulate", "now"},
			wantCode: 2,
			wantErr:  `unexpected argument "now"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			code := Main(ctx, tt.args, &Env{Stdout: &out, Stderr: &errb})
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out.String(), errb.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout does not contain %q:\n%s", tt.wantOut, out.String())
			}
			if !strings.Contains(errb.String(), tt.wantErr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantErr, errb.String())
			}
		})
	}
}
