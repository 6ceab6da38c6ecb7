package fleet

import (
	"fmt"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// clock drives a State as alerting does, on a fake clock: events at their
// times, and a tick every minute that applies a potentially_offline event
// for each device Stale names. It counts the presence events it wrote.
type clock struct {
	t        *testing.T
	s        *State
	now      time.Time
	seq      uint64
	presence int
}

func newClock(t *testing.T) *clock { return &clock{t: t, s: New(), now: t0} }

func (c *clock) apply(e events.Event) {
	c.t.Helper()
	c.seq++
	if _, err := c.s.Apply(c.seq, e); err != nil {
		c.t.Fatalf("apply %s: %v", e.Type, err)
	}
}

// advance moves the clock to now+d, ticking every minute on the way.
func (c *clock) advance(d time.Duration) {
	c.t.Helper()
	end := c.now.Add(d)
	for c.now.Before(end) {
		c.now = c.now.Add(time.Minute)
		for _, dev := range c.s.Stale(c.now, DefaultOfflineAfter) {
			c.apply(presence(c.t, dev.DeviceID, events.PresencePotentiallyOffline, dev.LastSeen, c.now))
			c.presence++
		}
	}
}

func (c *clock) report(dev, version, status string, dur float64) {
	c.t.Helper()
	c.apply(reported(c.t, dev, version, status, dur, c.now))
}

func (c *clock) desired(dev, version string) {
	c.t.Helper()
	c.apply(desired(c.t, dev, version, 1, c.now))
}

// broker is a presence event the bridge stores from a device's presence
// topic: state online or offline, no lastSeen.
func (c *clock) broker(dev, state string) {
	c.t.Helper()
	e, err := events.New(events.PresenceMessageID("t", dev, state, c.now), events.SourceBridge, events.TypeDevicePresence,
		events.DevicePresenceSubject("t", dev), c.now, events.DevicePresenceData{TypeID: "t", DeviceID: dev, State: state})
	if err != nil {
		c.t.Fatal(err)
	}
	c.apply(e)
}

func (c *clock) device(dev string) Device {
	c.t.Helper()
	d, ok := c.s.Device("t", dev)
	if !ok {
		c.t.Fatalf("no device %s", dev)
	}
	return d
}

// A rollout of 100 devices finishes (95 completed, 5 failed) and the fleet
// stays silent for a day, as devices that report on change do: none is
// potentially offline, no presence event is written, and the success rate
// is over all 100.
func TestFinishedFleetSilentForADayStaysOnline(t *testing.T) {
	c := newClock(t)
	for i := range 100 {
		c.report(fmt.Sprintf("d%03d", i), "1", events.StatusCompleted, 60)
	}
	c.advance(time.Hour)
	for i := range 100 {
		c.desired(fmt.Sprintf("d%03d", i), "2")
	}
	c.advance(time.Minute)
	for i := range 100 {
		dev := fmt.Sprintf("d%03d", i)
		c.report(dev, "2", events.StatusInProgress, 0)
		if i%20 == 19 {
			c.report(dev, "1", events.StatusFailed, 90)
		} else {
			c.report(dev, "2", events.StatusCompleted, 120)
		}
	}
	c.advance(24 * time.Hour)

	want := Metrics{Devices: 100, Online: 100, Completed: 95, Failed: 5, Finished: 100, SuccessRate: 0.95,
		AvgDuration: 120, P95Duration: 120}
	if got := c.s.Metrics(); got != want {
		t.Errorf("metrics after a silent day\n got %+v\nwant %+v", got, want)
	}
	if c.presence != 0 {
		t.Errorf("%d presence events written for finished, silent devices; want 0", c.presence)
	}
	if got := c.s.Wave("job1", 1); got != (WaveCounts{Targeted: 100, Completed: 95, Failed: 5}) {
		t.Errorf("wave %+v, want 95 completed and 5 failed of 100, none offline", got)
	}
}

// A device sent a desired state that stays silent for 10 minutes owes a
// report: it goes potentially offline (one presence event), leaves the
// rate, and is back with its next report.
func TestDeviceSilentAfterADeltaGoesPotentiallyOffline(t *testing.T) {
	c := newClock(t)
	for i := range 19 {
		c.report(fmt.Sprintf("ok%02d", i), "2", events.StatusCompleted, 60)
	}
	c.report("quiet", "1", events.StatusFailed, 30) // an earlier failure
	c.advance(time.Hour)
	c.desired("quiet", "2")
	if m := c.s.Metrics(); m.SuccessRate != 0.95 || m.PotentiallyOffline != 0 {
		t.Fatalf("before the silence: %+v", m)
	}

	c.advance(9 * time.Minute)
	if d := c.device("quiet"); !d.Online || c.presence != 0 {
		t.Fatalf("potentially offline after 9 minutes of silence: %+v", d)
	}
	c.advance(2 * time.Minute)
	if d := c.device("quiet"); d.Online || c.presence != 1 {
		t.Fatalf("after 11 minutes of silence: online %v, %d presence events; want potentially offline, 1 event", d.Online, c.presence)
	}
	want := Metrics{Devices: 20, Online: 19, PotentiallyOffline: 1, Completed: 19, Finished: 19, SuccessRate: 1,
		AvgDuration: 60, P95Duration: 60}
	if got := c.s.Metrics(); got != want {
		t.Errorf("metrics while it is potentially offline\n got %+v\nwant %+v", got, want)
	}
	if got := c.s.Wave("job1", 1); got != (WaveCounts{Targeted: 1, Pending: 1, Offline: 1}) {
		t.Errorf("wave %+v, want 1 pending and offline", got)
	}
	c.advance(time.Hour)
	if c.presence != 1 {
		t.Errorf("%d presence events after another hour; want 1: one per transition", c.presence)
	}

	c.report("quiet", "2", events.StatusInProgress, 0)
	if d := c.device("quiet"); !d.Online {
		t.Fatalf("not online after its report: %+v", d)
	}
	if m := c.s.Metrics(); m.PotentiallyOffline != 0 || m.Online != 20 || m.InProgress != 1 {
		t.Errorf("metrics after its report: %+v", m)
	}
	// in_progress owes the final report: silent again, offline again.
	c.advance(11 * time.Minute)
	if d := c.device("quiet"); d.Online || c.presence != 2 {
		t.Errorf("silent 11 minutes in progress: online %v, %d presence events; want potentially offline, 2 events", d.Online, c.presence)
	}
	c.report("quiet", "2", events.StatusCompleted, 700)
	c.advance(24 * time.Hour)
	want = Metrics{Devices: 20, Online: 20, Completed: 20, Finished: 20, SuccessRate: 1, AvgDuration: 92, P95Duration: 60}
	if got := c.s.Metrics(); got != want || c.presence != 2 {
		t.Errorf("finished, then silent a day (%d presence events)\n got %+v\nwant %+v", c.presence, got, want)
	}
}

// A device that follows the presence contract is offline the moment the
// broker publishes its will, out of the rate at once, and online again
// with "online" (or its next report); while the broker says online it is
// never guessed offline from silence.
func TestWillSaysOfflineAtOnce(t *testing.T) {
	c := newClock(t)
	c.broker("w", events.PresenceOnline)
	if m := c.s.Metrics(); m != (Metrics{Devices: 1, Online: 1, SuccessRate: 1}) {
		t.Errorf("a device known by its presence only: %+v", m)
	}
	c.report("w", "2", events.StatusCompleted, 60)
	c.report("x", "1", events.StatusFailed, 60)
	if m := c.s.Metrics(); m.SuccessRate != 0.5 {
		t.Fatalf("rate %v before the will, want 0.5", m.SuccessRate)
	}

	c.broker("w", events.PresenceOffline)
	want := Metrics{Devices: 2, Online: 1, Offline: 1, Failed: 1, Finished: 1, SuccessRate: 0}
	if got := c.s.Metrics(); got != want {
		t.Errorf("right after the will\n got %+v\nwant %+v", got, want)
	}
	if d := c.device("w"); d.Online || d.Presence != events.PresenceOffline {
		t.Errorf("device after its will: online %v presence %q", d.Online, d.Presence)
	}
	c.broker("w", events.PresenceOnline)
	if got := c.s.Metrics(); got.Online != 2 || got.Offline != 0 || got.SuccessRate != 0.5 {
		t.Errorf("after online: %+v", got)
	}

	// Sent a desired state and silent for a day while the broker says it
	// is connected: not guessed offline.
	c.desired("w", "3")
	c.advance(24 * time.Hour)
	if d := c.device("w"); !d.Online || c.presence != 0 {
		t.Errorf("broker-online device silent a day: online %v, %d presence events", d.Online, c.presence)
	}
	// A potentially_offline guess computed before the broker's "online"
	// does not override it.
	c.apply(presence(t, "w", events.PresencePotentiallyOffline, c.device("w").LastSeen, c.now))
	if d := c.device("w"); !d.Online {
		t.Error("a guess from silence overrode the broker's online")
	}

	// Offline again; its next report brings it back, and silence decides
	// from there.
	c.broker("w", events.PresenceOffline)
	c.report("w", "3", events.StatusInProgress, 0)
	if d := c.device("w"); !d.Online || d.Presence != "" {
		t.Errorf("after a report following the will: online %v presence %q", d.Online, d.Presence)
	}
	c.advance(11 * time.Minute)
	if d := c.device("w"); d.Online || c.presence != 1 {
		t.Errorf("silent in progress without presence: online %v, %d presence events", d.Online, c.presence)
	}
}

func TestPresenceStateMustBeKnown(t *testing.T) {
	s := New()
	e := presence(t, "a", "asleep", t0, t0)
	if _, err := s.Apply(1, e); err == nil {
		t.Fatal("a presence event with state asleep was applied")
	}
	if s.Len() != 0 || s.LastSeq != 0 {
		t.Errorf("a refused event changed the state: %d devices, seq %d", s.Len(), s.LastSeq)
	}
}
