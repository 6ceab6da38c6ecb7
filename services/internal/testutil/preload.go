package testutil

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// PreloadReports stores n completed reports of devices t/fleet-00000 ...
// on SHADOW directly (as the bridge would), stamped now: a fleet for a
// benchmark or test to start from.
func PreloadReports(tb testing.TB, js jetstream.JetStream, n int) {
	tb.Helper()
	now := time.Now().UTC()
	for i := 0; i < n; i++ {
		dev := fmt.Sprintf("fleet-%05d", i)
		fw := events.Firmware{Version: "4.2.1", Timestamp: now, Status: events.StatusCompleted, UpdateDuration: float64(60 + i%60)}
		ev, err := events.New(events.ReportEventID("t", dev, fw), events.SourceBridge, events.TypeShadowReported,
			events.ShadowReportedSubject("t", dev), now, events.ShadowReportedData{TypeID: "t", DeviceID: dev, Firmware: fw})
		if err != nil {
			tb.Fatal(err)
		}
		data, err := ev.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		msg := nats.NewMsg(events.ShadowReportedSubject("t", dev))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		if _, err := js.PublishMsgAsync(msg); err != nil {
			tb.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		tb.Fatal("preload did not complete")
	}
}

// Drain empties a buffered channel without blocking.
func Drain[T any](ch chan T) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
