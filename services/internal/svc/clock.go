package svc

import "time"

// Clock is every service's time source (Deps.Clock). Event handlers take
// time from events; what a service does on its own timers (ticks, leases,
// waits) reads this clock, so a test can run them on a fake one.
type Clock interface {
	// Now is the current time.
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not happened; it reports whether it
	// did prevent it.
	Stop() bool
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// ClockOf is d's clock, the wall clock when none is set.
func (d Deps) ClockOf() Clock {
	if d.Clock == nil {
		return RealClock{}
	}
	return d.Clock
}
