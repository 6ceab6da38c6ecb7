package events

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestParseDeviceRef(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"sensor/d-1", "sensor/d-1", ""},
		{"d-1", "/d-1", ""},
		{"a.b/c", "", `type id "a.b" has '.'`},
		{"t/", "", "device id is empty"},
		{"t/a/b", "", `device id "a/b" has '/'`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDeviceRef(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, want an error with %q", err, tt.err)
				}
				return
			}
			if err != nil || got.TypeID+"/"+got.DeviceID != tt.want {
				t.Fatalf("got %+v %v, want %s", got, err, tt.want)
			}
		})
	}
}

func FuzzParseDeviceRef(f *testing.F) {
	for _, s := range []string{"sensor/d-1", "d-1", "a.b/c", "t/", "/", "t/a/b", "*", "t/>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseDeviceRef(s)
		if err != nil {
			return
		}
		// Whatever parses is made of valid subject tokens.
		if ValidateID("device id", ref.DeviceID) != nil || (ref.TypeID != "" && ValidateID("type id", ref.TypeID) != nil) {
			t.Fatalf("%q parsed to invalid ids %+v", s, ref)
		}
		if ref.TypeID != "" && ref.String() != s {
			t.Fatalf("%q round-trips to %q", s, ref.String())
		}
	})
}

func TestDurationJSON(t *testing.T) {
	var s struct{ D Duration }
	if err := json.Unmarshal([]byte(`{"D":"1h30m"}`), &s); err != nil || time.Duration(s.D) != 90*time.Minute {
		t.Fatalf("got %v %v", s.D, err)
	}
	if err := json.Unmarshal([]byte(`{"D":1000}`), &s); err != nil || time.Duration(s.D) != time.Microsecond {
		t.Fatalf("nanoseconds: got %v %v", s.D, err)
	}
	if err := json.Unmarshal([]byte(`{"D":"soon"}`), &s); err == nil {
		t.Fatal("accepted a bad duration")
	}
	b, _ := json.Marshal(struct{ D Duration }{Duration(30 * time.Minute)})
	if string(b) != `{"D":"30m0s"}` {
		t.Fatalf("marshal: %s", b)
	}
}

func TestRolloutEventName(t *testing.T) {
	for typ, want := range map[string]string{
		TypeRolloutWaveGated:       "wave_gated",
		TypeRolloutDevicesSent:     "devices_sent",
		TypeShadowReported:         "",
		"io.otawatch.rollout..v1":  "",
		"io.otawatch.rollout.x.v2": "",
	} {
		if got := RolloutEventName(typ); got != want {
			t.Errorf("%s: %q, want %q", typ, got, want)
		}
	}
}

// A downstream program drives rollouts over NATS: create and start a job,
// then read its per-wave progress.
func ExampleRolloutRequestDo() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := RolloutRequestDo(ctx, nc, "create", RolloutRequest{Start: true, Spec: &RolloutSpec{
		ID:         "fw-4-2-0",
		Target:     DesiredFirmware{Version: "4.2.0", Checksum: "sha256:...", URL: "https://fw.example/4.2.0.bin"},
		DeviceType: "sensor",
	}})
	if err != nil {
		fmt.Println(err) // e.g. "cannot create job fw-4-2-0: it already exists"
		return
	}
	fmt.Println(rep.Job.Status, rep.Job.WaveCount)
	rep, err = RolloutRequestDo(ctx, nc, "show", RolloutRequest{JobID: "fw-4-2-0"})
	if err == nil {
		for _, w := range rep.Job.Waves {
			fmt.Println(w.Wave, w.Status, w.Progress.Completed, w.Progress.Targeted)
		}
	}
}
