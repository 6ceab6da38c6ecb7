package projector

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/otawatch/otawatch/events"
)

func fastSeeds() [][]byte {
	var out [][]byte
	for _, p := range []published{
		report("gateway", "dev-1", "4.2.1", events.StatusFailed, t0, 12.5, "E_CHECKSUM"),
		report("gateway", "dev-2", "4.2.1", events.StatusInProgress, t0, 0, ""),
		desired("gateway", "dev-1", "job-1", 2, "4.2.1", t0),
	} {
		b, _ := p.ev.Marshal()
		out = append(out, b)
	}
	return append(out,
		[]byte(`{"specversion":"1.0","id":"a","source":"s","type":"t","time":"2025-07-22T11:00:00Z","data":null}`),
		[]byte(` { "specversion" : "1.0" , "id":"a","source":"s","type":"io.otawatch.shadow.reported.v1","time":"2025-07-22T11:00:00.123+02:00",`+
			`"data":{"firmware":{"errorCode":null,"updateDuration":1e2,"timestamp":"2025-07-22T11:00:00Z"},"typeId":"x","extra":[1,{"a":[]}]}} `),
		[]byte(`{"specversion":"1.0","ID":"a","id":"b","source":"s","type":"t","time":"2025-07-22T11:00:00Z"}`),
		[]byte(`{"specversion":"1.0","id":"a\u0062","source":"s","type":"t","time":"2025-07-22T11:00:00Z","data":{"firmware":{"version":"\n"}}}`),
		[]byte(`{"specversion":"1.0","id":"a","source":"s","type":"t","time":"2025-07-22T11:00:00Z","data":{"firmware":{"updateDuration":"12"}}}`),
		[]byte(`{"specversion":"1.0","id":"a","source":"s","type":"t","time":"2025-07-22T11:00:00Z"`),
		[]byte(`{"specversion":"1.0","id":"a","id":"b","source":"s","type":"t","time":"2025-07-22T11:00:00Z"}`),
		[]byte(`{"specversion":"1.0","id":"a","source":"s","type":"t","time":"2025-07-22 11:00:00"}`),
	)
}

// FuzzFastDecode: whenever the fast path reads an envelope or a report, the
// slow path (events.Decode, encoding/json) accepts it too and reads the same
// values.
func FuzzFastDecode(f *testing.F) {
	for _, s := range fastSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, ok := fastEnvelope(raw)
		if ok {
			slow, err := events.Decode(raw)
			if err != nil {
				t.Fatalf("fast path read an envelope the slow path refuses (%v): %q", err, raw)
			}
			if !bytes.Equal(ev.Data, slow.Data) {
				t.Fatalf("data %q, slow path %q", ev.Data, slow.Data)
			}
			ev.Data, slow.Data = nil, nil
			if !reflect.DeepEqual(ev, slow) {
				t.Fatalf("envelope %+v, slow path %+v", ev, slow)
			}
		}
		data := raw
		if ok {
			data = ev.Data
		}
		d, ok := fastReport(data)
		if !ok {
			return
		}
		var slow events.ShadowReportedData
		if err := json.Unmarshal(data, &slow); err != nil {
			t.Fatalf("fast path read a report the slow path refuses (%v): %q", err, data)
		}
		if !reflect.DeepEqual(d, slow) {
			t.Fatalf("report %+v, slow path %+v", d, slow)
		}
	})
}

// TestFastDecodeTakesCommonEvents: the events otawatch writes take the fast
// path (else it would be dead code).
func TestFastDecodeTakesCommonEvents(t *testing.T) {
	for i, raw := range fastSeeds()[:2] {
		ev, ok := fastEnvelope(raw)
		if !ok {
			t.Fatalf("seed %d: envelope not read by the fast path: %s", i, raw)
		}
		if _, ok := fastReport(ev.Data); !ok {
			t.Fatalf("seed %d: report not read by the fast path: %s", i, ev.Data)
		}
	}
}
