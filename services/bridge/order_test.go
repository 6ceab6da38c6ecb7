package bridge

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// orderBase is the firmware timestamp of the first report in the order
// tests.
var orderBase = time.Date(2025, 7, 22, 11, 30, 0, 0, time.UTC)

// orderReport is the k-th report (0, 1, 2) of device i in the order tests:
// in_progress twice (apart by a second, so both are stored), then
// completed or failed, as a device updating its firmware sends them.
func orderReport(i, k int) (events.ShadowReportedData, msg) {
	fw := events.Firmware{
		Version:         "5.0.0",
		Timestamp:       orderBase.Add(time.Duration(i)*10*time.Second + time.Duration(k)*time.Second),
		Status:          events.StatusInProgress,
		Checksum:        fmt.Sprintf("sha256:%064x", i+1),
		PreviousVersion: "4.9.0",
	}
	if k == 2 {
		fw.Status, fw.UpdateDuration = events.StatusCompleted, 120.5
		if i%2 == 1 {
			code := "E_FLASH"
			fw.Status, fw.ErrorCode = events.StatusFailed, &code
		}
	}
	typeID, deviceID := "gateway", fmt.Sprintf("ord-%04d", i)
	topic := events.ReportTopic(typeID, deviceID)
	return events.ShadowReportedData{TypeID: typeID, DeviceID: deviceID, Topic: topic, Firmware: fw},
		msg{topic: topic, payload: reportPayload(fw)}
}

// faultEvery makes one publish in every n fail, cycling through the ways a
// publish can fail: refused before sending, lost on the way (times out),
// stored with its PubAck lost (times out, the retry is a duplicate). It
// counts the faults of each kind.
type faultEvery struct {
	n      int64
	calls  atomic.Int64
	counts [faultLoseAck + 1]atomic.Int64
}

func (f *faultEvery) fault(*pending) publishFault {
	c := f.calls.Add(1)
	if c%f.n != 0 {
		return faultNone
	}
	kind := faultRefuse + publishFault((c/f.n)%3)
	f.counts[kind].Add(1)
	return kind
}

// TestDeviceOrderKept: 1,000 devices each publish 3 reports back to back,
// in bursts over several connections, while one JetStream publish in 13
// fails (refused, lost, or stored with its PubAck lost) and is retried.
// Every device's events are in SHADOW in the order it sent them, each
// once.
//
// Before the bridge kept each device's order, this failed in every run on
// both brokers: a retried report was stored after the device's later ones.
func TestDeviceOrderKept(t *testing.T) {
	const (
		devices = 1000
		perDev  = 3
		conns   = 8  // device i publishes on connection i%conns
		burst   = 25 // devices per burst: 75 messages, then wait for PUBACKs
	)
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			e := bk.start(t)
			faults := &faultEvery{n: 13}
			b := e.startBridge(t, Config{PublishTimeout: 300 * time.Millisecond}, hooks{publishFault: faults.fault})

			// which maps an event id to its device and place in the
			// device's sending order.
			type place struct{ dev, k int }
			which := map[string]place{}
			for i := range devices {
				for k := range perDev {
					d, _ := orderReport(i, k)
					which[events.ReportEventID(d.TypeID, d.DeviceID, d.Firmware)] = place{i, k}
				}
			}

			errs := make(chan error, conns)
			var wg sync.WaitGroup
			for c := range conns {
				p := e.publisher(t, fmt.Sprintf("order-fleet-%d", c))
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- publishBursts(p, c, conns, devices, perDev, burst)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			const total = devices * perDev
			// A publish whose PubAck was lost is stored as new and then
			// counted once, as a duplicate.
			testutil.Eventually(t, 90*time.Second, func() bool {
				st := b.s.Stats()
				return st.Accepted+st.Duplicates >= total && st.InFlight == 0
			}, "bridge stats %v, want %d reports stored and nothing in flight", lazy(func() any { return b.s.Stats() }), total)

			got := readEvents(t, e, events.StreamShadow)
			if len(got) != total {
				t.Fatalf("SHADOW holds %d events, want %d (stats %+v)", len(got), total, b.s.Stats())
			}
			// order[i] is device i's reports (their k) in stream order,
			// seqs their stream sequences.
			order := make([][]int, devices)
			seqs := make([][]uint64, devices)
			for _, se := range got {
				pl, ok := which[se.ev.ID]
				if !ok {
					t.Fatalf("seq %d: event %s is not one the test sent", se.raw.Sequence, se.ev.ID)
				}
				order[pl.dev] = append(order[pl.dev], pl.k)
				seqs[pl.dev] = append(seqs[pl.dev], se.raw.Sequence)
			}
			var bad []string
			for i := range devices {
				if fmt.Sprint(order[i]) != "[0 1 2]" {
					bad = append(bad, fmt.Sprintf("ord-%04d stored %v at seqs %v", i, order[i], seqs[i]))
				}
			}
			if len(bad) > 0 {
				t.Errorf("%d of %d devices' events are not in SHADOW in their send order [0 1 2]; first ones:\n%s",
					len(bad), devices, strings.Join(bad[:min(len(bad), 10)], "\n"))
			}

			// The faults happened, of every kind, and were retried:
			// without them the test would prove little.
			st := b.s.Stats()
			for _, kind := range []publishFault{faultRefuse, faultLose, faultLoseAck} {
				if faults.counts[kind].Load() == 0 {
					t.Errorf("no publish met fault %d", kind)
				}
			}
			if st.PublishRetries == 0 || st.Duplicates == 0 {
				t.Errorf("stats %+v: want retries, and duplicates from the stored publishes whose PubAck was lost", st)
			}
			t.Logf("faults refuse/lose/lose-ack %d/%d/%d; stats %+v", faults.counts[faultRefuse].Load(),
				faults.counts[faultLose].Load(), faults.counts[faultLoseAck].Load(), st)
		})
	}
}

// publishBursts publishes, on connection c of conns, the reports of its
// devices (i%conns == c): burst devices at a time, each device's reports
// back to back, without waiting; then waits for the burst's PUBACKs.
func publishBursts(p mqtt.Client, c, conns, devices, perDev, burst int) error {
	var mine []int
	for i := c; i < devices; i += conns {
		mine = append(mine, i)
	}
	for len(mine) > 0 {
		n := min(burst, len(mine))
		var toks []mqtt.Token
		for _, i := range mine[:n] {
			for k := range perDev {
				_, m := orderReport(i, k)
				toks = append(toks, p.Publish(m.topic, 1, false, m.payload))
			}
		}
		for _, tok := range toks {
			if !tok.WaitTimeout(30 * time.Second) {
				return fmt.Errorf("connection %d: no PUBACK after 30s", c)
			}
			if err := tok.Error(); err != nil {
				return fmt.Errorf("connection %d: publish: %w", c, err)
			}
		}
		mine = mine[n:]
	}
	return nil
}

// lazy formats as what f returns when it is formatted, so a failure
// message shows the state at the failure rather than at the call.
type lazy func() any

func (l lazy) String() string { return fmt.Sprintf("%+v", l()) }

func TestDeviceKey(t *testing.T) {
	for _, tc := range []struct {
		name, topic, want string
	}{
		{"report", "iot-2/type/gateway/id/dev-1/update/shadow", "iot-2/type/gateway/id/dev-1"},
		{"other topic of the device", "iot-2/type/gateway/id/dev-1/update/status", "iot-2/type/gateway/id/dev-1"},
		{"same id, other type", "iot-2/type/sensor/id/dev-1/update/shadow", "iot-2/type/sensor/id/dev-1"},
		{"id is a prefix of another", "iot-2/type/gateway/id/dev-10/update/shadow", "iot-2/type/gateway/id/dev-10"},
		{"empty id", "iot-2/type/gateway/id//update/shadow", "iot-2/type/gateway/id/"},
		{"short topic", "iot-2/type/gateway", "iot-2/type/gateway"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := deviceKey(tc.topic); got != tc.want {
				t.Errorf("deviceKey(%q) = %q, want %q", tc.topic, got, tc.want)
			}
		})
	}
}
