package fleet

import (
	"encoding/json"
	"math/rand"
	"sort"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func reported(t *testing.T, dev, version, status string, dur float64, at time.Time) events.Event {
	t.Helper()
	fw := events.Firmware{Version: version, Status: status, Timestamp: at, UpdateDuration: dur}
	if status == events.StatusFailed {
		code := "E_FLASH"
		fw.ErrorCode = &code
	}
	e, err := events.New(events.ReportEventID("t", dev, fw), events.SourceBridge, events.TypeShadowReported,
		dev, at, events.ShadowReportedData{TypeID: "t", DeviceID: dev, Firmware: fw})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func desired(t *testing.T, dev, version string, wave int, at time.Time) events.Event {
	t.Helper()
	e, err := events.New("d-"+dev, events.SourceRollout, events.TypeShadowDesired, dev, at,
		events.ShadowDesiredData{TypeID: "t", DeviceID: dev, JobID: "job1", Wave: wave, Firmware: events.DesiredFirmware{Version: version}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func presence(t *testing.T, dev, state string, lastSeen, at time.Time) events.Event {
	t.Helper()
	e, err := events.New("p-"+dev, events.SourceAlerting, events.TypeDevicePresence, dev, at,
		events.DevicePresenceData{TypeID: "t", DeviceID: dev, State: state, LastSeen: lastSeen})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestApply(t *testing.T) {
	min := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	tests := []struct {
		name   string
		events func(t *testing.T) []events.Event
		want   Metrics
		wave   WaveCounts
	}{
		{
			name: "completed and failed make the success rate",
			events: func(t *testing.T) []events.Event {
				return []events.Event{
					reported(t, "a", "2", events.StatusCompleted, 100, min(0)),
					reported(t, "b", "2", events.StatusCompleted, 300, min(0)),
					reported(t, "c", "1", events.StatusFailed, 50, min(0)),
					reported(t, "d", "1", events.StatusInProgress, 0, min(0)),
				}
			},
			want: Metrics{Devices: 4, Online: 4, InProgress: 1, Completed: 2, Failed: 1, Finished: 3,
				SuccessRate: 2.0 / 3, AvgDuration: 200, P95Duration: 300},
		},
		{
			name: "a later report replaces the device's share",
			events: func(t *testing.T) []events.Event {
				return []events.Event{
					reported(t, "a", "1", events.StatusFailed, 10, min(0)),
					reported(t, "a", "2", events.StatusInProgress, 0, min(1)),
					reported(t, "a", "2", events.StatusCompleted, 120, min(2)),
				}
			},
			want: Metrics{Devices: 1, Online: 1, Completed: 1, Finished: 1, SuccessRate: 1, AvgDuration: 120, P95Duration: 120},
		},
		{
			name: "potentially offline devices leave the rate until they report again",
			events: func(t *testing.T) []events.Event {
				return []events.Event{
					reported(t, "a", "2", events.StatusCompleted, 100, min(0)),
					reported(t, "b", "1", events.StatusFailed, 10, min(0)),
					presence(t, "b", events.PresencePotentiallyOffline, min(0), min(11)),
				}
			},
			want: Metrics{Devices: 2, Online: 1, PotentiallyOffline: 1, Completed: 1, Finished: 1, SuccessRate: 1,
				AvgDuration: 100, P95Duration: 100},
		},
		{
			name: "a stale presence event does not hide a newer report",
			events: func(t *testing.T) []events.Event {
				return []events.Event{
					reported(t, "b", "1", events.StatusFailed, 10, min(0)),
					reported(t, "b", "1", events.StatusInProgress, 0, min(12)),
					presence(t, "b", events.PresencePotentiallyOffline, min(0), min(11)),
				}
			},
			want: Metrics{Devices: 1, Online: 1, InProgress: 1, SuccessRate: 1},
		},
		{
			name: "wave counts follow job status",
			events: func(t *testing.T) []events.Event {
				return []events.Event{
					reported(t, "a", "1", events.StatusCompleted, 100, min(0)),
					desired(t, "a", "2", 1, min(1)),
					desired(t, "b", "2", 1, min(1)),
					desired(t, "c", "2", 1, min(1)),
					desired(t, "e", "2", 1, min(1)),
					reported(t, "a", "2", events.StatusInProgress, 0, min(2)),
					reported(t, "a", "2", events.StatusCompleted, 60, min(3)),
					reported(t, "b", "2", events.StatusInProgress, 0, min(2)),
					reported(t, "c", "1", events.StatusFailed, 30, min(2)),
					presence(t, "c", events.PresencePotentiallyOffline, min(2), min(13)),
				}
			},
			want: Metrics{Devices: 3, Online: 2, PotentiallyOffline: 1, InProgress: 1, Completed: 1, Finished: 1,
				SuccessRate: 1, AvgDuration: 60, P95Duration: 60},
			wave: WaveCounts{Targeted: 4, Pending: 1, InProgress: 1, Completed: 1, Failed: 1, Offline: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			for i, e := range tt.events(t) {
				if _, err := s.Apply(uint64(i+1), e); err != nil {
					t.Fatalf("apply %d: %v", i, err)
				}
			}
			if got := s.Metrics(); got != tt.want {
				t.Errorf("metrics\n got %+v\nwant %+v", got, tt.want)
			}
			if got := s.Wave("job1", 1); got != tt.wave {
				t.Errorf("wave\n got %+v\nwant %+v", got, tt.wave)
			}
			// A snapshot restores to the same metrics.
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			r := New()
			if err := json.Unmarshal(b, r); err != nil {
				t.Fatal(err)
			}
			if r.Metrics() != s.Metrics() || r.Wave("job1", 1) != s.Wave("job1", 1) || r.LastSeq != s.LastSeq {
				t.Errorf("restored snapshot differs: %+v vs %+v", r.Metrics(), s.Metrics())
			}
		})
	}
}

func TestP95MatchesSort(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	s := New()
	var durs []float64
	for i := 0; i < 2000; i++ {
		d := float64(1 + rng.Intn(900))
		durs = append(durs, d)
		dev := string(rune('a'+i%26)) + time.Duration(i).String()
		if _, err := s.Apply(uint64(i+1), reported(t, dev, "2", events.StatusCompleted, d, t0)); err != nil {
			t.Fatal(err)
		}
	}
	sort.Float64s(durs)
	want := durs[int(0.95*float64(len(durs))+0.999999999)-1]
	if got := s.Metrics().P95Duration; got != want {
		t.Errorf("p95 = %v, want %v (nearest rank)", got, want)
	}
}

func TestStale(t *testing.T) {
	s := New()
	for i, dev := range []string{"b", "a", "c"} {
		if _, err := s.Apply(uint64(i+1), reported(t, dev, "1", events.StatusInProgress, 0, t0.Add(time.Duration(i)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	got := s.Stale(t0.Add(11*time.Minute+30*time.Second), DefaultOfflineAfter)
	if len(got) != 2 || got[0].DeviceID != "a" || got[1].DeviceID != "b" {
		t.Fatalf("stale = %+v, want devices a and b", got)
	}
}
