package app

import "testing"

func TestRolloutBrokerFollowsMQTT(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"defaults", nil, "tcp://127.0.0.1:1883"},
		{"the bridge's broker", []string{"OTAWATCH_MQTT_BROKER=tcp://broker:1883"}, "tcp://broker:1883"},
		{"its own", []string{"OTAWATCH_MQTT_BROKER=tcp://broker:1883", "OTAWATCH_ROLLOUT_BROKER=tcp://other:1883"}, "tcp://other:1883"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadConfig("", tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if c.Rollout.Broker != tt.want {
				t.Errorf("rollout.broker %q, want %q", c.Rollout.Broker, tt.want)
			}
		})
	}
}
