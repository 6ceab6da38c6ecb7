package simulator

import (
	"time"

	"github.com/otawatch/otawatch/services/internal/testutil"
)

// fakeClock is the shared manual clock (testutil.FakeClock).
type fakeClock = testutil.FakeClock

func newFakeClock() *fakeClock {
	return testutil.NewFakeClock(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
}
