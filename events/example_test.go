package events_test

import (
	"fmt"
	"time"

	"github.com/otawatch/otawatch/events"
)

// A downstream subscriber receives a message from the SHADOW stream (here
// built by hand) and decodes the envelope and its data.
func Example() {
	fw := events.Firmware{
		Version: "4.2.1", Status: events.StatusCompleted, Timestamp: time.Date(2025, 7, 22, 11, 30, 0, 0, time.UTC),
		Checksum: "sha256:abc123", PreviousVersion: "4.1.5", UpdateDuration: 127,
	}
	e, _ := events.New(events.ReportEventID("gateway", "dev-1", fw), events.SourceBridge, events.TypeShadowReported,
		events.ShadowReportedSubject("gateway", "dev-1"), time.Date(2025, 7, 22, 11, 30, 1, 0, time.UTC),
		events.ShadowReportedData{TypeID: "gateway", DeviceID: "dev-1", Firmware: fw})
	msg, _ := e.Marshal() // what a message on shadow.reported.gateway.dev-1 carries

	got, err := events.Decode(msg)
	if err != nil {
		fmt.Println("not an otawatch event:", err)
		return
	}
	switch got.Type {
	case events.TypeShadowReported:
		var r events.ShadowReportedData
		if err := got.DecodeData(&r); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s/%s %s %s -> %s in %gs\n", r.TypeID, r.DeviceID, r.Firmware.Status,
			r.Firmware.PreviousVersion, r.Firmware.Version, r.Firmware.UpdateDuration)
	}
	// Output: gateway/dev-1 completed 4.1.5 -> 4.2.1 in 127s
}
