package bridge

import (
	"fmt"
	"strings"
	"testing"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// orderBenchMsgs makes n reports of benchPayloadSize bytes from devices
// devices, unique across rounds: round-robin (device i%devices sends the
// i-th) or, with backToBack, each device's reports one after another.
func orderBenchMsgs(b *testing.B, round, n, devices int, backToBack bool) []msg {
	per := n / devices
	out := make([]msg, n)
	for i := range n {
		dev := i % devices
		if backToBack {
			dev = i / per
		}
		d, _ := report(i)
		d.DeviceID = fmt.Sprintf("o%d-dev-%06d", round, dev)
		payload := reportPayload(d.Firmware)
		pad := benchPayloadSize - len(payload) - len(`"clientToken":"",`)
		if pad < 0 {
			b.Fatalf("report %d is %d bytes, over %d", i, len(payload), benchPayloadSize)
		}
		payload = append([]byte(`{"clientToken":"`+strings.Repeat("p", pad)+`",`), payload[1:]...)
		out[i] = msg{topic: events.ReportTopic(d.TypeID, d.DeviceID), payload: payload}
	}
	return out
}

// BenchmarkIngestDevices measures the bridge (publisher -> Mosquitto ->
// bridge -> SHADOW) as BenchmarkIngest does, with the same number of
// reports coming from fewer devices: the bridge stores at most one report
// per device at a time, to keep each device's order, so a device's reports
// take one JetStream round trip each. "rr" interleaves the devices' reports
// (a fleet), "b2b" sends each device's reports back to back (a device
// flooding). Metrics are medians over the iterations, in msg/s.
//
// Knobs: OTAWATCH_BENCH_MSGS (reports per case, default 50000).
func BenchmarkIngestDevices(b *testing.B) {
	n := benchEnvInt(b, "OTAWATCH_BENCH_MSGS", 50000)
	cases := []struct {
		name       string
		devices    int
		backToBack bool
	}{
		{"1-per-device", n, false},
		{"1000-devices-rr", 1000, false},
		{"1000-devices-b2b", 1000, true},
		{"100-devices-b2b", 100, true},
		{"10-devices-b2b", 10, true},
	}
	m := testutil.StartMosquitto(b)
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	rates := make([][]float64, len(cases))
	b.ResetTimer()
	for round := 0; round < b.N; round++ {
		for i, c := range cases {
			b.StopTimer()
			msgs := orderBenchMsgs(b, round*len(cases)+i, n, c.devices, c.backToBack)
			b.StartTimer()
			r := benchBridge(b, m.URL, js, round*len(cases)+i, msgs, DefaultMaxInFlight)
			rates[i] = append(rates[i], r)
			b.Logf("round %d: %s: bridge %.0f msg/s (%d msgs from %d devices)", round+1, c.name, r, n, c.devices)
		}
	}
	for i, c := range cases {
		b.ReportMetric(median(rates[i]), c.name+"_msg/s")
	}
}
