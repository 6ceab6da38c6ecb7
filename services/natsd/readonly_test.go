package natsd_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/services/natsd"
)

// TestNoMQTTLeavesDeviceSessionsAlone: without the MQTT listener (a
// command that only reads the log) the devices' account does not load its
// store of sessions, which stays on disk for the next start with MQTT.
func TestNoMQTTLeavesDeviceSessionsAlone(t *testing.T) {
	dir := t.TempDir()
	cfg := natsd.Config{StoreDir: dir, Listen: "127.0.0.1:-1", MQTTListen: "127.0.0.1:-1", Auth: natsd.Auth{AnonymousMQTT: true}}
	srv, err := natsd.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !srv.JetStreamEnabled(natsd.DevicesAccount) {
		t.Fatal("with MQTT on, the devices' account has no JetStream")
	}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + srv.MQTTAddr()).SetClientID("persistent").SetCleanSession(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	if tok := c.Subscribe("iot-2/type/t/id/d/shadow/delta", 1, nil); !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("subscribe timed out")
	}
	c.Disconnect(50)
	srv.Shutdown()
	sessions := filepath.Join(dir, "jetstream", natsd.DevicesAccount)
	if _, err := os.Stat(sessions); err != nil {
		t.Fatalf("no device session store after MQTT use: %v", err)
	}

	cfg.MQTTListen = ""
	srv, err = natsd.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if srv.JetStreamEnabled(natsd.DevicesAccount) {
		t.Error("without MQTT the devices' account loaded its store")
	}
	if !srv.JetStreamEnabled(natsd.ServicesAccount) {
		t.Error("the services' account has no JetStream")
	}
	srv.Shutdown()
	if _, err := os.Stat(sessions); err != nil {
		t.Errorf("the device session store is gone: %v", err)
	}
}
