package app

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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
	dir := t.TempDir()
	emptySecret := filepath.Join(dir, "empty-secret")
	badCredentials := filepath.Join(dir, "credentials")
	for path, content := range map[string]string{emptySecret: "\n", badCredentials: "d-00001\n"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name     string
		args     []string
		environ  []string
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
		{
			name:    "the broker of the configuration",
			args:    []string{"simulate", "--devices", "5", "--rate", "0", "--count", "20", "--time-scale", "10000", "--progress", "0", "--client-prefix", "cfg"},
			environ: []string{"OTAWATCH_MQTT_BROKER=" + broker},
			wantOut: "sent=20 ",
		},
		{
			name:     "an unknown flag",
			args:     []string{"simulate", "--device", "5"},
			wantCode: 2,
			wantErr:  "flag provided but not defined: -device",
		},
		{
			name:     "a missing mqtt.password_file",
			args:     []string{"simulate", "--broker", broker},
			environ:  []string{"OTAWATCH_MQTT_PASSWORD_FILE=" + missing},
			wantCode: 1,
			wantErr:  "otawatch simulate: mqtt.password_file: read secret: open " + missing,
		},
		{
			name:     "a missing --api-token-file",
			args:     []string{"simulate", "--broker", broker, "--api-token-file", missing},
			wantCode: 1,
			wantErr:  "otawatch simulate: --api-token-file: read secret: open " + missing,
		},
		{
			name:     "a missing --credentials file",
			args:     []string{"simulate", "--broker", broker, "--credentials", missing},
			wantCode: 1,
			wantErr:  "otawatch simulate: --credentials: open " + missing,
		},
		{
			name:     "a --credentials line without a password",
			args:     []string{"simulate", "--broker", broker, "--credentials", badCredentials},
			wantCode: 1,
			wantErr:  "otawatch simulate: --credentials " + badCredentials + ": ",
		},
		{
			name:     "a missing --password-secret-file",
			args:     []string{"simulate", "--broker", broker, "--password-secret-file", missing},
			wantCode: 1,
			wantErr:  "otawatch simulate: --password-secret-file: read secret: open " + missing,
		},
		{
			name:     "an empty --password-secret-file",
			args:     []string{"simulate", "--broker", broker, "--password-secret-file", emptySecret},
			wantCode: 1,
			wantErr:  "otawatch simulate: --password-secret-file " + emptySecret + " is empty",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			code := Main(ctx, tt.args, &Env{Stdout: &out, Stderr: &errb, Environ: tt.environ})
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

// TestSimulateDevicesAsThemselves: with --password-secret-file the devices
// connect as themselves even when the configuration names the bridge's
// MQTT user (mqtt.username), which the simulator would refuse beside
// per-device credentials.
func TestSimulateDevicesAsThemselves(t *testing.T) {
	m := testutil.StartMosquitto(t) // anonymous: takes any username
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := Main(ctx, []string{"simulate", "--devices", "3", "--broker", m.URL, "--rate", "0", "--count", "6", "--time-scale", "10000",
		"--progress", "0", "--password-secret-file", secret}, &Env{Stdout: &out, Stderr: &errb, Environ: []string{"OTAWATCH_MQTT_USERNAME=bridge"}})
	if code != 0 || !strings.Contains(out.String(), "sent=6 ") {
		t.Fatalf("exit %d, want 0 and sent=6\nstdout: %s\nstderr: %s", code, out.String(), errb.String())
	}
}
