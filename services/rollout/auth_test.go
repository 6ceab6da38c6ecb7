package rollout

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/bridge"
	"github.com/otawatch/otawatch/services/internal/identity"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/simulator"
)

// newAuthRig is newBareRigOn on a Mosquitto locked down as deploy/mosquitto
// ships it: devices d-00001..d-NNNNN registered with passwords derived from
// secret, the bridge logged in as otawatch-bridge. It returns the rig and
// the rollout service's password file.
func newAuthRig(t *testing.T, devices int, secret []byte) (*rig, string) {
	t.Helper()
	var creds []identity.Credential
	for i := 1; i <= devices; i++ {
		id := simulator.DeviceID(i, 5)
		creds = append(creds, identity.Credential{ID: id, Password: identity.DerivePassword(secret, id)})
	}
	m := testutil.StartMosquittoAuth(t, testutil.MosquittoAuth{Devices: creds})
	dir := t.TempDir()
	bridgePW, rolloutPW := filepath.Join(dir, "bridge"), filepath.Join(dir, "rollout")
	for f, pw := range map[string]string{bridgePW: testutil.BridgePassword, rolloutPW: testutil.RolloutPassword} {
		if err := os.WriteFile(f, []byte(pw), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	r := &rig{t: t, js: js, broker: m.URL}
	nc := r.connect()
	jsb, _ := jetstream.New(nc)
	health := svc.NewHealth()
	b, err := bridge.New(bridge.Config{Broker: r.broker, ClientID: "bridge-" + strings.ReplaceAll(t.Name(), "/", "-"),
		Username: testutil.BridgeUser, PasswordFile: bridgePW},
		svc.Deps{Log: testLog(), NC: nc, JS: jsb, Streams: events.StreamOptions{Replicas: 1}, Health: health})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, 30*time.Second, func() bool { return len(health.Status()) > 0 && health.Ready() },
		"the bridge never subscribed: %v", health.Status())
	return r, rolloutPW
}

// TestSimulatedFleetRolloutAuthenticated: the simulated-fleet rollout on
// a locked-down Mosquitto, every device logged in as itself: the rollout
// service's user delivers every desired state, the bridge's user reads
// every report, and the job completes with each device served once.
func TestSimulatedFleetRolloutAuthenticated(t *testing.T) {
	const devices = 300
	secret := []byte("rollout-test-secret")
	r, rolloutPW := newAuthRig(t, devices, secret)
	f := r.startFleet(simulator.FleetConfig{Devices: devices, PasswordSecret: secret, TimeScale: 1000, Seed: 5})
	cfg := testConfig(r.broker)
	cfg.Username, cfg.PasswordFile = testutil.RolloutUser, rolloutPW
	r.start("a", cfg, nil)
	spec := fleetSpec("sim-auth", f, simulator.DefaultType)
	spec.WaveSize, spec.Rate = 100, 1000
	r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: spec})
	job := r.waitStatus("sim-auth", 60*time.Second, events.RolloutCompleted, events.RolloutPaused, events.RolloutAborted)
	if job.Status != events.RolloutCompleted {
		t.Fatalf("job %s: %s; fleet %s", job.Status, job.Reason, f.Stats())
	}
	r.checkWaves("sim-auth", 3)
	checkReceivedOnce(t, f)
}
