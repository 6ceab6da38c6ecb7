package app

import (
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
	o := newOneProcess(t, dataDir, "OTAWATCH_MQTT_LEASE_TTL=10m")
	env, ready := o.env, readyz(o.httpPort)
	p := startOtawatch(t, env, "run", "bridge")
	testutil.Eventually(t, 60*time.Second, ready, "otawatch never became ready\n%s", p.stderr)

	// Another process on the same data dir (other ports) is refused: two
	// embedded servers would share one store.
	other := startOtawatch(t, newOneProcess(t, dataDir).env, "run", "api")
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
