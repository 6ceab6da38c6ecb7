package svc

import (
	"slices"
	"testing"
	"time"
)

// TestManualClock: Advance runs the timers due, in time order (ties in the
// order they were set), at their own times, including timers set by
// timers; a stopped timer does not run.
func TestManualClock(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	c := NewManualClock(t0)
	var got []string
	note := func(name string) func() {
		return func() { got = append(got, name+"@"+c.Now().Sub(t0).String()) }
	}
	c.AfterFunc(3*time.Second, note("c"))
	c.AfterFunc(time.Second, note("a1"))
	c.AfterFunc(time.Second, note("a2"))
	stopped := c.AfterFunc(2*time.Second, note("stopped"))
	c.AfterFunc(2*time.Second, func() {
		note("b")()
		c.AfterFunc(0, note("b-then"))
		c.AfterFunc(5*time.Second, note("late"))
	})
	if !stopped.Stop() || stopped.Stop() {
		t.Error("Stop did not report the first stop only")
	}
	if n := c.Pending(); n != 4 {
		t.Errorf("Pending = %d, want 4", n)
	}
	c.Advance(4 * time.Second)
	want := []string{"a1@1s", "a2@1s", "b@2s", "b-then@2s", "c@3s"}
	if !slices.Equal(got, want) {
		t.Errorf("ran %q, want %q", got, want)
	}
	if now := c.Now(); !now.Equal(t0.Add(4 * time.Second)) {
		t.Errorf("Now = %s, want t0+4s", now)
	}
	if n := c.Pending(); n != 1 {
		t.Errorf("Pending = %d, want 1 (late)", n)
	}
	c.Advance(3 * time.Second)
	if got[len(got)-1] != "late@7s" {
		t.Errorf("last ran %q, want late@7s", got[len(got)-1])
	}
}
