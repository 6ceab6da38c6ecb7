package rollout

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// FuzzApply folds arbitrary event data of every rollout type into a
// started job and runs Decide, Due and View on the result: whatever the log
// holds, the fold must return an error or a usable state, never panic.
func FuzzApply(f *testing.F) {
	types := []string{
		events.TypeRolloutJobCreated, events.TypeRolloutJobStarted, events.TypeRolloutJobPaused,
		events.TypeRolloutJobResumed, events.TypeRolloutJobAborted, events.TypeRolloutJobCompleted,
		events.TypeRolloutWaveStarted, events.TypeRolloutWaveGated, events.TypeRolloutWaveCompleted,
		events.TypeRolloutDevicesSent, events.TypeRolloutDevicesRetried, "io.otawatch.rollout.future.v1",
		events.TypeRolloutDevicesRetracted,
	}
	f.Add(uint8(6), `{"jobId":"j","wave":1}`)
	f.Add(uint8(6), `{"jobId":"j","wave":9}`)
	f.Add(uint8(9), `{"jobId":"j","devices":[{"typeId":"t","deviceId":"a"}],"attempt":3}`)
	f.Add(uint8(10), `{"jobId":"j","devices":[{"typeId":"t","deviceId":"zz"}],"attempt":1}`)
	f.Add(uint8(1), `{"jobId":"j","plan":{"waves":[[],[{"typeId":"t","deviceId":"a"}]]}}`)
	f.Add(uint8(7), `{"jobId":"j","wave":1,"gate":{"passed":true}}`)
	f.Add(uint8(0), `{"jobId":"j"}`)
	f.Add(uint8(3), `not json`)
	f.Add(uint8(12), `{"jobId":"j","devices":[{"typeId":"t","deviceId":"a"},{"typeId":"t","deviceId":"nope"}]}`)
	f.Fuzz(func(t *testing.T, ti uint8, data string) {
		spec := events.RolloutSpec{ID: "j", Target: events.DesiredFirmware{Version: "2"}, Devices: []string{"t/a", "t/b", "t/c"},
			WaveSize: 2, Gate: 0.9, MaxFailure: 0.1, MinFinished: 1, OnFailure: "pause", DeviceTimeout: events.Duration(time.Minute), Rate: 10}
		mk := func(typ string, d any) events.Event {
			e, err := events.New("x", events.SourceRollout, typ, "j", t0, d)
			if err != nil {
				t.Fatal(err)
			}
			return e
		}
		j, err := Apply(nil, 1, mk(events.TypeRolloutJobCreated, events.RolloutData{JobID: "j", Spec: &spec}))
		if err != nil {
			t.Fatal(err)
		}
		plan := &events.RolloutPlan{Waves: [][]events.DeviceRef{{{TypeID: "t", DeviceID: "a"}, {TypeID: "t", DeviceID: "b"}}, {{TypeID: "t", DeviceID: "c"}}}}
		if j, err = Apply(j, 2, mk(events.TypeRolloutJobStarted, events.RolloutData{JobID: "j", Plan: plan})); err != nil {
			t.Fatal(err)
		}
		e := mk(types[int(ti)%len(types)], nil)
		e.Data = json.RawMessage(data)
		j2, err := Apply(j, 3, e)
		if err == nil && j2 == nil {
			t.Fatal("no error and no job")
		}
		if j2 == nil {
			return
		}
		fl := fleet.New()
		Decide(j2, fl, t0.Add(time.Hour), nil)
		j2.Due(10)
		Retractions(j2, fl, 10)
		v := View(j2, fl, t0, nil, true)
		if strings.Contains(data, `"wave":1`) && v.WaveCount != len(j2.Plan) {
			t.Fatalf("view has %d waves, plan %d", v.WaveCount, len(j2.Plan))
		}
	})
}
