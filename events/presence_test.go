package events

import (
	"strings"
	"testing"
)

func TestParsePresenceTopic(t *testing.T) {
	tests := []struct {
		name, topic, typ, dev string
		wantErr               string
	}{
		{"plain", "iot-2/type/gw/id/d1/presence", "gw", "d1", ""},
		{"built by PresenceTopic", PresenceTopic("sensor", "d-00001"), "sensor", "d-00001", ""},
		{"report topic", "iot-2/type/gw/id/d1/update/shadow", "", "", "is not iot-2/type/{typeId}/id/{deviceId}/presence"},
		{"extra level", "iot-2/type/gw/id/d1/presence/x", "", "", "is not"},
		{"wrong root", "iot-3/type/gw/id/d1/presence", "", "", "is not"},
		{"bad device id", "iot-2/type/gw/id/d.1/presence", "", "", `device id "d.1" has '.'`},
		{"empty type id", "iot-2/type//id/d1/presence", "", "", "type id is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, dev, err := ParsePresenceTopic(tt.topic)
			if tt.wantErr == "" {
				if err != nil || typ != tt.typ || dev != tt.dev {
					t.Fatalf("ParsePresenceTopic(%q) = %q, %q, %v; want %q, %q", tt.topic, typ, dev, err, tt.typ, tt.dev)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParsePresenceTopic(%q) = %v, want error containing %q", tt.topic, err, tt.wantErr)
			}
		})
	}
	if IsPresenceTopic(ReportTopic("gw", "d1")) || !IsPresenceTopic(PresenceTopic("gw", "d1")) {
		t.Error("IsPresenceTopic confuses report and presence topics")
	}
}

func TestParsePresencePayload(t *testing.T) {
	tests := []struct {
		name, payload, want, wantErr string
	}{
		{"online", "online", PresenceOnline, ""},
		{"offline", "offline", PresenceOffline, ""},
		{"upper case", "ONLINE", "", `presence payload "ONLINE" (6 bytes) is not "online" or "offline"`},
		{"newline", "offline\n", "", `"offline\n"`},
		{"json", `{"state":"online"}`, "", "is not"},
		{"empty", "", "", `presence payload "" (0 bytes)`},
		{"potentially_offline is otawatch's word, not a device's", PresencePotentiallyOffline, "", "is not"},
		{"long payload is cut", strings.Repeat("x", 100), "", `"` + strings.Repeat("x", 32) + `" (100 bytes)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePresencePayload([]byte(tt.payload))
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("ParsePresencePayload(%q) = %q, %v; want %q", tt.payload, got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParsePresencePayload(%q) = %q, %v; want error containing %q", tt.payload, got, err, tt.wantErr)
			}
		})
	}
}
