package waves

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// TestLedgerJSONRoundTrip: a ledger read back from its JSON is the ledger
// that was written, indexes included, at every stage of a job: created,
// started, partly sent, sent, retried.
func TestLedgerJSONRoundTrip(t *testing.T) {
	plan := [][]events.DeviceRef{{ref("a"), ref("b"), ref("c")}, {ref("d"), ref("e")}}
	l := NewLedger("j", 0)
	stages := []struct {
		name string
		typ  string
		d    events.RolloutData
	}{
		{"created", events.TypeRolloutJobCreated, events.RolloutData{JobID: "j", Spec: &events.RolloutSpec{ID: "j", DeviceTimeout: events.Duration(time.Minute)}}},
		{"started", events.TypeRolloutJobStarted, events.RolloutData{JobID: "j", Plan: &events.RolloutPlan{Waves: plan}}},
		{"wave 1 partly sent", events.TypeRolloutDevicesSent, events.RolloutData{JobID: "j", Devices: []events.DeviceRef{ref("a"), ref("b")}}},
		{"wave 1 sent", events.TypeRolloutDevicesSent, events.RolloutData{JobID: "j", Devices: []events.DeviceRef{ref("c")}}},
		{"retry of b queued", events.TypeRolloutDevicesRetried, events.RolloutData{JobID: "j", Attempt: 1, Devices: []events.DeviceRef{ref("b")}}},
	}
	for _, st := range stages {
		if err := l.Apply(st.typ, st.d); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		var back Ledger
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if !reflect.DeepEqual(back, l) {
			t.Errorf("%s: read back\n%+v\nwant\n%+v\n(json %s)", st.name, back, l, b)
		}
		if got, want := back.DueIn(2, 10), l.DueIn(2, 10); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: DueIn %+v, want %+v", st.name, got, want)
		}
	}
	if got := l.DueIn(2, 10); len(got) != 3 || got[0].Ref != ref("b") || got[0].Attempt != 1 {
		t.Errorf("after the retry, due %+v, want b's attempt 1 then d and e", got)
	}
}

func TestLedgerJSONRefusesJunk(t *testing.T) {
	var l Ledger
	if err := json.Unmarshal([]byte(`{"jobId": 3}`), &l); err == nil {
		t.Error("a ledger with a numeric job id was accepted")
	}
}
