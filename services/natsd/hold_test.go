package natsd_test

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/services/natsd"
)

// TestHoldDevicesUntilReportsAreSubscribed: with HoldDevices, the MQTT
// listener refuses devices (after HoldTimeout) while no persistent session
// subscribes to device reports, admits the services' identities all along,
// and admits devices once the bridge has subscribed. Restarted on the same
// store, where the bridge's session is kept, it admits devices at once,
// and a report sent then, while the bridge is away, reaches the bridge
// when it comes back.
func TestHoldDevicesUntilReportsAreSubscribed(t *testing.T) {
	store := t.TempDir()
	hold := func(c *natsd.Config) {
		c.StoreDir = store
		c.HoldDevices = true
		c.HoldTimeout = 2 * time.Second
	}
	s := startLocked(t, hold)
	if _, err := s.mqttClient(t, "victim", "victim", "victim-pw"); err == nil {
		t.Fatal("a device connected before anything subscribed to reports")
	}
	// The rollout service connects, and its subscription to desired
	// state does not count as one to reports.
	rollout := s.mustMQTT(t, "rollout", natsd.UserRollout, rolloutPassword)
	subscribe(t, rollout, delta("+", "+"), &inbox{})
	if _, err := s.mqttClient(t, "victim", "victim", "victim-pw"); err == nil {
		t.Fatal("a device connected while only desired state had a subscriber")
	}

	var got inbox
	bridge := func(s *lockedServer) mqtt.Client {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + s.srv.MQTTAddr()).SetClientID("bridge").
			SetUsername(natsd.UserBridge).SetPassword(bridgePassword).SetCleanSession(false).
			SetAutoReconnect(false).SetDefaultPublishHandler(got.handler)
		c := mqtt.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("bridge connect: %v", tok.Error())
		}
		return c
	}
	b := bridge(s)
	subscribe(t, b, report("+", "+"), &got)
	var dev mqtt.Client
	waitFor(t, "the device admitted once the bridge subscribed", func() bool {
		c, err := s.mqttClient(t, "victim", "victim", "victim-pw")
		dev = c
		return err == nil
	})
	publish(dev, report("gw", "victim"), "first", false)
	waitFor(t, "the bridge to receive the first report", func() bool { return got.has("first") })

	// Restart: the bridge's session is in the store, so devices are
	// admitted at once, before the bridge is back, and what they report
	// waits for it.
	b.Disconnect(100)
	dev.Disconnect(100)
	rollout.Disconnect(100)
	s.nc.Close()
	s.srv.Shutdown()
	s = startLocked(t, hold)
	dev = s.mustMQTT(t, "victim", "victim", "victim-pw")
	publish(dev, report("gw", "victim"), "while-away", false)
	b = bridge(s)
	defer b.Disconnect(100)
	waitFor(t, "the report sent while the bridge was away", func() bool { return got.has("while-away") })
}
