package app

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestSignalsHandledOnce: otawatch run, with signals caught once in Main,
// reloads on SIGHUP and keeps running, then stops with exit 0 on SIGTERM.
func TestSignalsHandledOnce(t *testing.T) {
	dataDir := t.TempDir()
	env := []string{
		"OTAWATCH_DATA_DIR=" + dataDir,
		fmt.Sprintf("OTAWATCH_NATS_LISTEN=127.0.0.1:%d", testutil.FreePort(t)),
		"OTAWATCH_NATS_MQTT_LISTEN=",
		fmt.Sprintf("OTAWATCH_HTTP_LISTEN=127.0.0.1:%d", testutil.FreePort(t)),
		"OTAWATCH_CLICKHOUSE_ADDR=",
	}
	p := startOtawatch(t, env, "run", "alerting")
	testutil.Eventually(t, 60*time.Second, func() bool { return strings.Contains(p.stderr.String(), `msg="service started" service=alerting`) },
		"alerting never started\n%s", p.stderr)
	for i := 0; i < 2; i++ {
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		want := i + 1
		testutil.Eventually(t, 10*time.Second, func() bool { return strings.Count(p.stderr.String(), "reloading on request") >= want },
			"SIGHUP %d did not reload\n%s", want, p.stderr)
	}
	select {
	case err := <-p.done:
		t.Fatalf("otawatch ended after SIGHUP: %v\n%s", err, p.stderr)
	default:
	}
	if err := p.stop(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v, want exit 0\n%s", err, p.stderr)
	}
}
