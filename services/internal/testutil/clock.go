package testutil

import (
	"time"

	"github.com/otawatch/otawatch/services/internal/svc"
)

// FakeClock is a manual svc.Clock (what a test sets in svc.Deps.Clock):
// time moves only in Advance, which runs the timers that fall due
// synchronously, in time order, so a test sees every step of a timing
// exactly. It is svc.ManualClock, which replays also run on.
type FakeClock = svc.ManualClock

// NewFakeClock returns a clock at now.
func NewFakeClock(now time.Time) *FakeClock { return svc.NewManualClock(now) }
