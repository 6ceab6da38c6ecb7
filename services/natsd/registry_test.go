package natsd_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/internal/identity"
	"github.com/otawatch/otawatch/services/natsd"
)

// TestRegistryChangesWithoutRestart runs the embedded listener on a real
// device registry, as otawatch run does: a device added while the server
// runs can connect, and once removed its open connection is closed and it
// cannot come back.
func TestRegistryChangesWithoutRestart(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "devices.json")
	store, err := identity.OpenStore(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	var srv *natsd.Server
	s := startLocked(t, func(c *natsd.Config) { c.Auth.Devices = store })
	srv = s.srv
	store.OnChange(func(removed []string) { srv.DisconnectDevices(removed) })

	if _, err := s.mqttClient(t, "late-1", "late", "late-pw"); err == nil {
		t.Fatal("an unregistered device connected")
	}
	if err := identity.Add(reg, "late", "late-pw", identity.MinCost); err != nil {
		t.Fatal(err)
	}
	var c interface{ IsConnectionOpen() bool }
	waitFor(t, "the added device to connect", func() bool {
		cl, err := s.mqttClient(t, "late-2", "late", "late-pw")
		if err != nil {
			return false
		}
		c = cl
		return true
	})
	if err := identity.Remove(reg, "late"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the removed device's connection to close", func() bool { return !c.IsConnectionOpen() })
	time.Sleep(100 * time.Millisecond)
	if _, err := s.mqttClient(t, "late-3", "late", "late-pw"); err == nil {
		t.Error("a removed device connected again")
	}
}
