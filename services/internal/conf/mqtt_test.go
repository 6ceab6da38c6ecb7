package conf

import "testing"

func TestCheckMQTT(t *testing.T) {
	tests := []struct {
		name, broker, id string
		want             int
	}{
		{"tcp", "tcp://127.0.0.1:1883", "otawatch-bridge", 0},
		{"websocket", "wss://broker.example:443/mqtt", "", 0},
		{"no scheme", "broker:1883", "", 1},
		{"unknown scheme", "http://broker:1883", "", 1},
		{"no host", "tcp://", "", 1},
		{"wildcard id", "tcp://b:1883", "bridge/#", 1},
		{"both wrong", "foo", "a b", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewProblems()
			CheckMQTTBroker(p, "broker", tt.broker)
			CheckMQTTClientID(p, "client_id", tt.id)
			if got := len(p.List()); got != tt.want {
				t.Fatalf("%d problems %+v, want %d", got, p.List(), tt.want)
			}
		})
	}
}
