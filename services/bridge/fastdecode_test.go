package bridge

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// fastSeeds are payloads at the edges of what the fast path takes: each is
// either taken by both paths with the same firmware, or declined by the
// fast path and judged by the schema path.
var fastSeeds = []string{
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed"}}}}`,
	` {"state" : {"reported" : {"firmware" : {"version" : "1" , "timestamp" : "2025-07-22T11:30:00.123456789+05:30" , "status" : "failed" , "errorCode" : "E42" } } } } `,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed","errorCode":null,"updateDuration":0}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":-0}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":1e308}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":1e309}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":0.000001}}}}`,
	// the duration's bound: the float64 and the schema's exact decimal
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":604800}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":604799.99999999999999999}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":604800.00000000000000001}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":6048e2}}}}`,
	// escapes, non-ASCII, duplicates: declined, judged by the schema
	`{"state":{"reported":{"firmware":{"version":"4.\u0032","timestamp":"2025-07-22T11:30:00Z","status":"completed"}}}}`,
	`{"st\u0061te":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"é","timestamp":"2025-07-22T11:30:00Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","version":"2","timestamp":"2025-07-22T11:30:00Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{}},"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed"}}}}`,
	`{"state":1,"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed"}}}}`,
	// timestamps
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22t11:30:00z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2016-12-31T23:59:60Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-02-29T11:30:00Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2024-02-29T11:30:00-23:59","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"0000-01-01T00:00:00Z","status":"completed"}}}}`,
	// the timestamp window's edges, in UTC and with an offset
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"1999-12-31T23:59:59.999999999Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2000-01-01T00:00:00Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2000-01-01T00:59:59+01:00","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2099-12-31T23:59:59.999999999Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2100-01-01T00:30:00+01:00","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2100-01-01T00:00:00Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"9999-12-31T23:59:59Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T24:00:00Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00.1234567891Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00,5Z","status":"completed"}}}}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00+24:00","status":"completed"}}}}`,
	// what devices add besides the firmware
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed","x":[1,{"y":"\ud83d\ude00\n"},null,true,false,-0.5e+3]}},"desired":{"a":[]}},"clientToken":"\u00e9t\u00e9"}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed"}}},"x":"bad \x escape"}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed"}}},"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed"}}},"x":01}`,
	`{"state":{"reported":{"firmware":{"version":"1","timestamp":"2025-07-22T11:30:00Z","status":"completed"}}}} x`,
}

// checkFast is the fast path's contract: whatever it takes, the schema path
// takes too, with the same firmware.
func checkFast(t *testing.T, d *Decoder, payload []byte) (taken bool) {
	t.Helper()
	fast, ok := decodeFast(payload)
	if !ok {
		return false
	}
	slow, err := d.decodeSchema(payload)
	if err != nil {
		t.Fatalf("fast path took a payload the schema refuses (%v):\n%s", err, payload)
	}
	if !sameFirmware(fast, slow) {
		t.Fatalf("fast path and schema disagree on\n%s\nfast:   %s\nschema: %s", payload, mustJSON(fast), mustJSON(slow))
	}
	return true
}

func TestDecodeFastAgreesWithSchema(t *testing.T) {
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	var taken int
	for _, s := range fastSeeds {
		if checkFast(t, d, []byte(s)) {
			taken++
		}
	}
	for name, p := range readCorpus(t, "") {
		if checkFast(t, d, p) {
			taken++
		} else if name[:4] == "good" {
			t.Errorf("%s: the fast path declined a plain report", name)
		}
	}
	// The fast path declines the unusual seeds; it must still take the
	// plain ones, or the bridge has silently lost its fast path.
	if taken < 10 {
		t.Errorf("fast path took only %d of the seeds and good payloads", taken)
	}
}

// TestDecodeFastTakesDeviceReports: the reports the project's own device
// simulator and tests send all take the fast path.
func TestDecodeFastTakesDeviceReports(t *testing.T) {
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		_, m := report(i)
		if !checkFast(t, d, m.payload) {
			t.Fatalf("fast path declined test report %d:\n%s", i, m.payload)
		}
	}
	// The simulator's encoding: events.Firmware marshalled as it is.
	code := "E_FLASH_VERIFY"
	at := time.Date(2026, 11, 25, 20, 1, 2, 345678000, time.UTC)
	for _, fw := range []events.Firmware{
		{Version: "4.2.1", PreviousVersion: "4.2.0", Timestamp: at, Status: events.StatusInProgress},
		{Version: "4.2.1", PreviousVersion: "4.2.0", Timestamp: at, Status: events.StatusCompleted, Checksum: "sha256:" + strings.Repeat("ab", 32), UpdateDuration: 127},
		{Version: "4.2.1", PreviousVersion: "4.2.0", Timestamp: at.Round(time.Second), Status: events.StatusFailed, UpdateDuration: 3.5, ErrorCode: &code},
	} {
		var r struct {
			State struct {
				Reported struct {
					Firmware events.Firmware `json:"firmware"`
				} `json:"reported"`
			} `json:"state"`
		}
		r.State.Reported.Firmware = fw
		p, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		if !checkFast(t, d, p) {
			t.Fatalf("fast path declined a %s report as the simulator sends it:\n%s", fw.Status, p)
		}
	}
}

// FuzzDecodeFast: for any payload, the fast path either declines it or
// gives the firmware the schema path gives.
func FuzzDecodeFast(f *testing.F) {
	d, err := NewDecoder()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	for _, p := range readCorpus(f, "") {
		f.Add(p)
	}
	for i := range 5 {
		_, m := report(i)
		f.Add(m.payload)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		checkFast(t, d, payload)
	})
}

func ExampleDecodeReport() {
	d, err := DecodeReport("iot-2/type/gateway/id/dev-0001/update/shadow",
		[]byte(`{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":127}}}}`),
		DefaultMaxPayload)
	fmt.Println(d.DeviceID, d.Firmware.Version, d.Firmware.Status, d.Firmware.UpdateDuration, err)
	// Output: dev-0001 4.2.1 completed 127 <nil>
}
