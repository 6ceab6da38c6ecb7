package bridge

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// referenceEvent is what the bridge must publish for a report, byte for
// byte: encoding/json on the contract's structs.
func referenceEvent(t testing.TB, id, subject string, at time.Time, d events.ShadowReportedData) []byte {
	t.Helper()
	data, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(events.Event{SpecVersion: events.SpecVersion, ID: id, Source: events.SourceBridge,
		Type: events.TypeShadowReported, Subject: subject, Time: at.UTC(), DataContentType: "application/json", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkEncoding(t testing.TB, id, subject string, at time.Time, d events.ShadowReportedData) {
	t.Helper()
	got, err := reportEvent(id, subject, at, &d)
	want := referenceEvent(t, id, subject, at, d)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the bridge's report event differs from encoding/json's (err %v)\n got: %s\nwant: %s", err, got, want)
	}
}

func TestEncodeReportEventMatchesEvents(t *testing.T) {
	at := time.Date(2026, 11, 25, 18, 0, 0, 123456789, time.FixedZone("x", 3600))
	code := "E_<&>\"\\\u2028\xff"
	tests := []struct {
		name string
		fw   events.Firmware
	}{
		{"zero", events.Firmware{}},
		{"seed", events.Firmware{Version: "4.2.1", Timestamp: time.Date(2025, 7, 22, 11, 30, 0, 0, time.UTC),
			Status: "completed", Checksum: "sha256:abc", PreviousVersion: "4.1.5", UpdateDuration: 127}},
		{"offset timestamp", events.Firmware{Version: "1", Timestamp: time.Date(2025, 7, 22, 11, 30, 0, 5, time.FixedZone("", -5*3600)), Status: "failed"}},
		{"escapes", events.Firmware{Version: "<v&1>", Status: "é", Checksum: "\x01\t", ErrorCode: &code}},
		{"small duration", events.Firmware{Version: "1", UpdateDuration: 1e-7}},
		{"large duration", events.Firmware{Version: "1", UpdateDuration: 1e21}},
		{"huge duration", events.Firmware{Version: "1", UpdateDuration: 1.7976931348623157e308}},
		{"fraction", events.Firmware{Version: "1", UpdateDuration: 0.1 + 0.2}},
		{"empty error code", events.Firmware{Version: "1", ErrorCode: new(string)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := events.ShadowReportedData{TypeID: "gateway", DeviceID: "dev-1", Topic: "iot-2/type/gateway/id/dev-1/update/shadow", Firmware: tc.fw}
			checkEncoding(t, "sr-1", "shadow.reported.gateway.dev-1", at, d)
			checkEncoding(t, "sr-2", "", at, d)
		})
	}
}

func BenchmarkEncodeReportEvent(b *testing.B) {
	d, _ := report(5)
	at := time.Now()
	b.Run("events", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := reportEvent("sr-1", "shadow.reported.gateway.dev-1", at, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			referenceEvent(b, "sr-1", "shadow.reported.gateway.dev-1", at, d)
		}
	})
}

func BenchmarkDecodeReport(b *testing.B) {
	_, m := report(5)
	b.ReportAllocs()
	for range b.N {
		if _, err := DecodeReport(m.topic, m.payload, DefaultMaxPayload); err != nil {
			b.Fatal(err)
		}
	}
}
