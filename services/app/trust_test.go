package app

import (
	"strings"
	"testing"
)

// TestConfigRefusesOpenDoors: anonymous access is refused on a listener
// that is not loopback, ports must be ports, and TLS files must load.
func TestConfigRefusesOpenDoors(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want string // "" means valid
	}{
		{name: "defaults", want: ""},
		{name: "anonymous on loopback", env: []string{"OTAWATCH_NATS_ANONYMOUS=true", "OTAWATCH_NATS_MQTT_ANONYMOUS=true"}, want: ""},
		{name: "authenticated on every interface", env: []string{"OTAWATCH_NATS_LISTEN=0.0.0.0:4222", "OTAWATCH_NATS_MQTT_LISTEN=0.0.0.0:1883"}, want: ""},
		{name: "anonymous NATS on every interface", env: []string{"OTAWATCH_NATS_LISTEN=0.0.0.0:4222", "OTAWATCH_NATS_ANONYMOUS=true"},
			want: "nats.anonymous: is allowed only on a loopback listen address"},
		{name: "anonymous MQTT on every interface", env: []string{"OTAWATCH_NATS_MQTT_LISTEN=:1883", "OTAWATCH_NATS_MQTT_ANONYMOUS=true"},
			want: "nats.mqtt_anonymous: is allowed only on a loopback"},
		{name: "port out of range", env: []string{"OTAWATCH_NATS_MQTT_LISTEN=127.0.0.1:70000"}, want: "nats.mqtt_listen: \"127.0.0.1:70000\": port \"70000\" is not a number from 0 to 65535"},
		{name: "port not a number", env: []string{"OTAWATCH_NATS_LISTEN=127.0.0.1:nats"}, want: "nats.listen:"},
		{name: "missing certificate", env: []string{"OTAWATCH_NATS_MQTT_TLS_CERT_FILE=/nonexistent.pem", "OTAWATCH_NATS_MQTT_TLS_KEY_FILE=/nonexistent-key.pem"},
			want: "nats.mqtt_tls.cert_file: load certificate"},
		{name: "client CA without TLS", env: []string{"OTAWATCH_NATS_TLS_CLIENT_CA_FILE=/ca.pem"}, want: "nats.tls.client_ca_file"},
		{name: "bridge TLS on a plain broker", env: []string{"OTAWATCH_MQTT_TLS_CA_FILE=/etc/hostname"}, want: "mqtt.tls"},
		{name: "user without password", env: []string{"OTAWATCH_NATS_URL=nats://n1:4222", "OTAWATCH_NATS_USERNAME=otawatch"}, want: "nats.password_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig("", tt.env)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted, want a problem %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("problems:\n%v\nwant one containing %q", err, tt.want)
			}
		})
	}
}
