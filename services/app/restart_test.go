package app

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/internal/lease"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestRestartAfterCrashResumesItsLease: a one-process otawatch (embedded
// server, its MQTT listener, the bridge) is SIGKILLed, so its bridge lease
// stays in the store with most of its TTL left, and is started again on the
// same data dir. The lease TTL is ten minutes, far beyond this test's
// patience: the restart is ready (its bridge active and connected) only
// because it resumes the lease its dead predecessor held. Meanwhile a
// second otawatch on the same data dir is refused, naming the reason.
func TestRestartAfterCrashResumesItsLease(t *testing.T) {
	dataDir := t.TempDir()
	natsPort, mqttPort, httpPort := testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)
	env := []string{
		"OTAWATCH_DATA_DIR=" + dataDir,
		fmt.Sprintf("OTAWATCH_NATS_LISTEN=127.0.0.1:%d", natsPort),
		fmt.Sprintf("OTAWATCH_NATS_MQTT_LISTEN=127.0.0.1:%d", mqttPort),
		fmt.Sprintf("OTAWATCH_MQTT_BROKER=tcp://127.0.0.1:%d", mqttPort),
		fmt.Sprintf("OTAWATCH_HTTP_LISTEN=127.0.0.1:%d", httpPort),
		"OTAWATCH_MQTT_LEASE_TTL=10m",
		"OTAWATCH_CLICKHOUSE_ADDR=",
	}
	ready := func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	p := startOtawatch(t, env, "run", "bridge")
	testutil.Eventually(t, 60*time.Second, ready, "otawatch never became ready\n%s", p.stderr)

	// Another process on the same data dir (other ports) is refused: two
	// embedded servers would share one store.
	other := startOtawatch(t, []string{
		"OTAWATCH_DATA_DIR=" + dataDir,
		fmt.Sprintf("OTAWATCH_NATS_LISTEN=127.0.0.1:%d", testutil.FreePort(t)),
		"OTAWATCH_NATS_MQTT_LISTEN=",
		fmt.Sprintf("OTAWATCH_HTTP_LISTEN=127.0.0.1:%d", testutil.FreePort(t)),
		"OTAWATCH_CLICKHOUSE_ADDR=",
	}, "run", "api")
	select {
	case err := <-other.done:
		if err == nil || !strings.Contains(other.stderr.String(), lease.ErrInstanceInUse.Error()) {
			t.Errorf("a second otawatch on the data dir: exit %v, want a refusal naming %q\n%s", err, lease.ErrInstanceInUse, other.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("a second otawatch on the same data dir kept running\n%s", other.stderr)
	}

	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL: the lease is not released
		t.Fatal(err)
	}
	<-p.done
	restarted := time.Now()
	p2 := startOtawatch(t, env, "run", "bridge")
	testutil.Eventually(t, 60*time.Second, ready,
		"the restart never became ready: it did not resume its own lease (TTL 10m)\n%s", p2.stderr)
	t.Logf("ready %s after the restart began", time.Since(restarted).Round(time.Millisecond))
	if want := "bridge lease resumed"; !strings.Contains(p2.stderr.String(), want) {
		t.Errorf("the restart's log lacks %q\n%s", want, p2.stderr)
	}
	if err := p2.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, p2.stderr)
	}
	if _, err := lease.ClaimInstance(filepath.Clean(dataDir)); err != nil {
		t.Errorf("the data dir is still claimed after a clean stop: %v", err)
	}
}
