package simulator

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/internal/identity"
)

// TestFleetCredentialsFile: devices authenticate with passwords from a
// credentials file (the format "otawatch devices import" takes) on a
// locked-down broker, and their reports reach the bridge's user.
func TestFleetCredentialsFile(t *testing.T) {
	url := brokers[2].start(t)
	var file strings.Builder
	for i := 1; i <= 10; i++ {
		id := DeviceID(i, 5)
		file.WriteString(id + " " + identity.DerivePassword(testSecret, id) + "\n")
	}
	creds, err := ReadCredentials(strings.NewReader(file.String()))
	if err != nil {
		t.Fatal(err)
	}
	col := collect(t, url)
	f, err := NewFleet(FleetConfig{Broker: url, DevicePasswords: creds, Devices: 10, Count: 20, Rate: 0, TimeScale: 1000, Seed: 2}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := f.Run(ctx); err != nil || ctx.Err() != nil {
		t.Fatalf("run: %v (ctx %v)", err, ctx.Err())
	}
	col.wait(t, 20)
	if n := len(col.byDevice(t)); n != 10 {
		t.Errorf("%d devices reported, want 10", n)
	}
}

// TestFleetRefusedCredentials: a fleet whose devices the broker refuses
// stops with an error naming a device, instead of retrying forever.
func TestFleetRefusedCredentials(t *testing.T) {
	url := brokers[2].start(t)
	f, err := NewFleet(FleetConfig{Broker: url, PasswordSecret: []byte("not the secret"), Devices: 3, Mode: ModeFleet}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = f.Run(ctx)
	if ctx.Err() != nil {
		t.Fatal("the fleet kept retrying refused credentials")
	}
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") || !strings.Contains(err.Error(), "sim-sensor-d-0000") {
		t.Fatalf("run: %v; want a refusal naming the device", err)
	}
}

func TestFleetAuthConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  FleetConfig
		want string
	}{
		{"multiplexed", FleetConfig{Devices: 4, PasswordSecret: []byte("s"), Connections: 2}, "need a connection each"},
		{"both sources", FleetConfig{Devices: 1, PasswordSecret: []byte("s"), DevicePasswords: map[string]string{"d-00001": "x"}}, "not both"},
		{"shared username", FleetConfig{Devices: 1, PasswordSecret: []byte("s"), Username: "u"}, "username"},
		{"missing passwords", FleetConfig{Devices: 5, DevicePasswords: map[string]string{"d-00001": "x"}}, "no password for 4 of 5 devices (d-00002, d-00003, d-00004 ...)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewFleet(tt.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}
