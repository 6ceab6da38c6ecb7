package bridge

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestBridgeTakesTimeFromDepsClock: the bridge's one time seam is
// svc.Deps.Clock. An event's time is the clock's, and a failed publish
// waits for its retry on the clock: nothing is sent again until the test
// moves it past the backoff.
func TestBridgeTakesTimeFromDepsClock(t *testing.T) {
	e := brokerKinds[0].start(t)
	at := time.Date(2031, 3, 4, 5, 6, 7, 8, time.FixedZone("x", 3600))
	clock := testutil.NewFakeClock(at)
	e.clock = clock
	var publishes atomic.Int64
	refuseFirst := func(*pending) publishFault {
		if publishes.Add(1) == 1 {
			return faultRefuse
		}
		return faultNone
	}
	b := e.startBridge(t, Config{}, hooks{publishFault: refuseFirst})
	_, m := report(1)
	publishAll(t, e.publisher(t, "clock-pub"), []msg{m})

	testutil.Eventually(t, 20*time.Second, func() bool { return clock.Pending() == 1 },
		"the refused publish's retry is not waiting on the clock (%d timers)", clock.Pending())
	if st := b.s.Stats(); st.PublishRetries != 0 || st.Accepted != 0 {
		t.Fatalf("before the clock moved: %+v, want no retry and nothing stored", st)
	}
	clock.Advance(time.Minute)
	b.settle(t, 1)
	if st := b.s.Stats(); st.PublishRetries != 1 || st.Accepted != 1 {
		t.Fatalf("after the clock moved: %+v, want one retry and one report stored", st)
	}
	got := readEvents(t, e, events.StreamShadow)
	if len(got) != 1 || !got[0].ev.Time.Equal(at) || got[0].ev.Time.Location() != time.UTC {
		t.Fatalf("stored %d events, first at %v; want one at the clock's %v in UTC", len(got), got[0].ev.Time, at.UTC())
	}
}

// TestNewReportsEveryProblem: New applies the defaults, then refuses a
// configuration with a *conf.Error that lists every problem under its key.
func TestNewReportsEveryProblem(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	deps := svc.Deps{NC: js.NC}
	if _, err := New(Config{}, deps); err != nil {
		t.Fatalf("New with every key at its default: %v", err)
	}
	_, err := New(Config{MaxInFlight: -1, MaxPayload: 10, KeepAlive: time.Millisecond, PublishTimeout: -time.Second}, deps)
	var ce *conf.Error
	if !errors.As(err, &ce) {
		t.Fatalf("New: error %v (%T), want a *conf.Error", err, err)
	}
	want := map[string]bool{"mqtt.max_in_flight": true, "mqtt.max_payload": true, "mqtt.keep_alive": true, "mqtt.publish_timeout": true}
	for _, p := range ce.Problems {
		delete(want, p.Key)
	}
	if len(want) > 0 {
		t.Fatalf("problems %+v lack the keys %v", ce.Problems, want)
	}
}
