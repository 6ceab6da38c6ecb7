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

// TestLedgerClone: a clone answers as the ledger did when it was taken,
// whatever the ledger applies afterwards, and the other way round.
func TestLedgerClone(t *testing.T) {
	plan := [][]events.DeviceRef{{ref("a"), ref("b")}, {ref("c")}}
	l := NewLedger("j", time.Minute)
	before := l.Clone() // not started: the plan's indexes come later
	if err := l.Apply(events.TypeRolloutJobStarted, events.RolloutData{JobID: "j", Plan: &events.RolloutPlan{Waves: plan}}); err != nil {
		t.Fatal(err)
	}
	if before.Plan != nil || before.WaveOf(ref("a")) != 0 {
		t.Errorf("a clone taken before the start sees the plan: %+v", before)
	}
	c := l.Clone()
	want, _ := json.Marshal(c)
	if err := l.Apply(events.TypeRolloutDevicesSent, events.RolloutData{JobID: "j", Devices: []events.DeviceRef{ref("a"), ref("c")}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Apply(events.TypeRolloutDevicesRetried, events.RolloutData{JobID: "j", Attempt: 1, Devices: []events.DeviceRef{ref("b")}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(c); string(got) != string(want) {
		t.Errorf("the clone changed with the ledger:\n got %s\nwant %s", got, want)
	}
	if due := c.DueIn(2, 10); len(due) != 3 {
		t.Errorf("the clone's due %+v, want all three devices", due)
	}
	if err := c.Apply(events.TypeRolloutDevicesSent, events.RolloutData{JobID: "j", Devices: []events.DeviceRef{ref("b")}}); err != nil {
		t.Fatal(err)
	}
	if !l.Sent(ref("a")) || l.Sent(ref("b")) {
		t.Errorf("the ledger changed with its clone")
	}
}
