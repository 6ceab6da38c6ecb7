package app

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/identity"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// buildBinary builds otawatch once per test binary.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "otawatch-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "otawatch")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/otawatch/otawatch").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

type process struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan error
}

// lockedBuffer is a process's stderr: the process writes it while a test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startOtawatch(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: exec.Command(bin, args...), stderr: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends SIGTERM and returns the exit error (nil for exit 0).
func (p *process) stop(t *testing.T) error {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatalf("otawatch did not stop within 60s after SIGTERM\n%s", p.stderr)
		return nil
	}
}

// TestRunStopsCleanlyAndKeepsTheLog runs the one-process mode for real: the
// embedded server with its MQTT listener, the bridge and the API. A report
// published over MQTT lands in SHADOW; SIGTERM stops the process with exit 0;
// a restart on the same data dir still holds the event.
func TestRunStopsCleanlyAndKeepsTheLog(t *testing.T) {
	dataDir := t.TempDir()
	natsPort, mqttPort, httpPort := testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)
	env := []string{
		"OTAWATCH_DATA_DIR=" + dataDir,
		fmt.Sprintf("OTAWATCH_NATS_LISTEN=127.0.0.1:%d", natsPort),
		fmt.Sprintf("OTAWATCH_NATS_MQTT_LISTEN=127.0.0.1:%d", mqttPort),
		fmt.Sprintf("OTAWATCH_MQTT_BROKER=tcp://127.0.0.1:%d", mqttPort),
		fmt.Sprintf("OTAWATCH_HTTP_LISTEN=127.0.0.1:%d", httpPort),
		"OTAWATCH_CLICKHOUSE_ADDR=",
	}
	// The device is registered, as otawatch devices add does.
	if err := identity.Add(filepath.Join(dataDir, "devices.json"), "dev-1", "dev-1-password", 4); err != nil {
		t.Fatal(err)
	}
	p := startOtawatch(t, env, "run", "bridge", "api")
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort)
	testutil.Eventually(t, 60*time.Second, func() bool {
		resp, err := http.Get(readyz)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "otawatch never became ready\n%s", p.stderr)

	// A device reports over MQTT, as itself. Anonymous clients are
	// refused by default.
	anon := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)).SetClientID("anon"))
	if tok := anon.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
		anon.Disconnect(0)
		t.Fatal("an anonymous MQTT client connected")
	}
	opts := mqtt.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)).SetClientID("device-1").
		SetUsername("dev-1").SetPassword("dev-1-password")
	dev := mqtt.NewClient(opts)
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device connect: %v", tok.Error())
	}
	payload := `{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"2025-07-22T11:30:00Z","status":"completed","checksum":"sha256:abc","previousVersion":"4.1.5","updateDuration":127,"errorCode":null}}}}`
	if tok := dev.Publish(events.ReportTopic("gw", "dev-1"), 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device publish: %v", tok.Error())
	}
	dev.Disconnect(100)

	countShadow := func() uint64 {
		// As the CLI: with the password the first start made.
		pw, err := os.ReadFile(filepath.Join(dataDir, "credentials", events.IdentityCLI))
		if err != nil {
			return 0
		}
		nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), nats.UserInfo(events.IdentityCLI, strings.TrimSpace(string(pw))))
		if err != nil {
			return 0
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		return testutil.StreamMsgs(js, events.StreamShadow)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return countShadow() == 1 }, "report never reached SHADOW\n%s", p.stderr)

	if err := p.stop(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want exit 0\n%s", err, p.stderr)
	}
	for _, want := range []string{`msg="service stopped" service=bridge`, `msg="service stopped" service=api`, `msg="stopped on request"`} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, p.stderr)
		}
	}

	// The log survives a restart on the same data dir.
	p2 := startOtawatch(t, env, "run", "api")
	testutil.Eventually(t, 60*time.Second, func() bool { return countShadow() == 1 }, "after restart SHADOW does not hold the event\n%s", p2.stderr)
	if err := p2.stop(t); err != nil {
		t.Fatalf("second exit: %v\n%s", err, p2.stderr)
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("data_dir: /tmp/x\nnats:\n  replicas: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("nats:\n  replicas: 9\n  bogus: 1\nmqtt:\n  broker: foo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		env      []string
		wantCode int
		wantOut  []string
	}{
		{"good file", []string{"check", "config", "-c", good}, nil, 0, []string{"good.yaml: ok"}},
		{"every problem with its line", []string{"check", "config", "-c", bad}, nil, 1, []string{
			"bad.yaml:2: nats.replicas: 9 is out of range 1..5",
			"bad.yaml:3: nats.bogus: field bogus is not a known key",
			`bad.yaml:5: mqtt.broker: "foo" is not an MQTT broker URL`,
		}},
		{"environment checked too", []string{"check", "config", "-c", good}, []string{"OTAWATCH_NATS_REPLICAS=zero"}, 1, []string{
			`nats.replicas: from OTAWATCH_NATS_REPLICAS: "zero" is not an integer`,
		}},
		{"missing file", []string{"check", "config", "-c", filepath.Join(dir, "nope.yaml")}, nil, 1, []string{"no such file"}},
		{"unknown command", []string{"frobnicate"}, nil, 2, []string{`unknown command "frobnicate"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := Main(context.Background(), tt.args, &Env{Stdout: &out, Stderr: &out, Environ: tt.env})
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\n%s", code, tt.wantCode, out.String())
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
