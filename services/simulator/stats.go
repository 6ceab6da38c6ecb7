package simulator

import (
	"fmt"
	"sync/atomic"

	"github.com/otawatch/otawatch/events"
)

// Stats is a snapshot of what a fleet has done so far.
type Stats struct {
	// Devices is the fleet size; Connected the devices whose MQTT
	// connection is up; Offline the devices simulating an outage now.
	Devices   int
	Connected int
	Offline   int

	// Published counts report publishes attempted (retries included);
	// Sent* count reports the broker acknowledged, by status.
	Published     int64
	SentProgress  int64
	SentCompleted int64
	SentFailed    int64
	// PublishErrors counts attempts that failed or timed out; Retries the
	// attempts made after one.
	PublishErrors int64
	Retries       int64

	// DeltaDeliveries counts every desired-state message delivered;
	// DeltasReceived the ones that were not redeliveries of content the
	// device already had (see the package doc).
	DeltaDeliveries int64
	DeltasReceived  int64
	// DeltasIgnored counts desired states that asked for nothing new (the
	// installed version, the update under way, an update already failed).
	DeltasIgnored int64
	// BadDeltas counts messages on a delta topic that were not a ShadowDelta.
	BadDeltas int64

	// Installs counts updates started; Completed and Failed the ones whose
	// final report was acknowledged; LocalFailures the ones given up because
	// a report could not be delivered.
	Installs      int64
	Completed     int64
	Failed        int64
	LocalFailures int64

	// OfflineEvents counts simulated outages begun; Reconnects connections
	// restored (after an outage or a lost connection); Reconciles HTTP delta
	// lookups and their errors; Republished reports sent again because the
	// device found the cloud did not know its state.
	OfflineEvents   int64
	Reconnects      int64
	Reconciles      int64
	ReconcileErrors int64
	Republished     int64
	// OnlineSent counts "online" presence messages the broker
	// acknowledged (one per connection of a device with presence).
	OnlineSent int64
}

// Sent is the number of reports the broker acknowledged.
func (s Stats) Sent() int64 { return s.SentProgress + s.SentCompleted + s.SentFailed }

// String is the one-line summary the CLI prints.
func (s Stats) String() string {
	return fmt.Sprintf("devices=%d connected=%d offline=%d published=%d sent=%d (in_progress=%d completed=%d failed=%d) errors=%d retries=%d deltas=%d installs=%d completed=%d failed=%d local_failures=%d reconnects=%d",
		s.Devices, s.Connected, s.Offline, s.Published, s.Sent(), s.SentProgress, s.SentCompleted, s.SentFailed,
		s.PublishErrors, s.Retries, s.DeltasReceived, s.Installs, s.Completed, s.Failed, s.LocalFailures, s.Reconnects)
}

// counters are the live, atomic form of Stats.
type counters struct {
	connected, offline                                  atomic.Int64
	published, sentProgress, sentCompleted, sentFailed  atomic.Int64
	publishErrors, retries                              atomic.Int64
	deltaDeliveries, deltasReceived, deltasIgnored      atomic.Int64
	badDeltas                                           atomic.Int64
	installs, completed, failed, localFailures          atomic.Int64
	offlineEvents, reconnects, reconciles, reconcileErr atomic.Int64
	republished                                         atomic.Int64
	presence                                            atomic.Int64
}

func (c *counters) sent(status string) {
	switch status {
	case statusInProgress:
		c.sentProgress.Add(1)
	case statusCompleted:
		c.sentCompleted.Add(1)
	default:
		c.sentFailed.Add(1)
	}
}

func (c *counters) snapshot(devices int) Stats {
	return Stats{
		Devices:         devices,
		Connected:       int(c.connected.Load()),
		Offline:         int(c.offline.Load()),
		Published:       c.published.Load(),
		SentProgress:    c.sentProgress.Load(),
		SentCompleted:   c.sentCompleted.Load(),
		SentFailed:      c.sentFailed.Load(),
		PublishErrors:   c.publishErrors.Load(),
		Retries:         c.retries.Load(),
		DeltaDeliveries: c.deltaDeliveries.Load(),
		DeltasReceived:  c.deltasReceived.Load(),
		DeltasIgnored:   c.deltasIgnored.Load(),
		BadDeltas:       c.badDeltas.Load(),
		Installs:        c.installs.Load(),
		Completed:       c.completed.Load(),
		Failed:          c.failed.Load(),
		LocalFailures:   c.localFailures.Load(),
		OfflineEvents:   c.offlineEvents.Load(),
		Reconnects:      c.reconnects.Load(),
		Reconciles:      c.reconciles.Load(),
		ReconcileErrors: c.reconcileErr.Load(),
		Republished:     c.republished.Load(),
		OnlineSent:      c.presence.Load(),
	}
}

// Short names for the statuses of events.
const (
	statusInProgress = events.StatusInProgress
	statusCompleted  = events.StatusCompleted
	statusFailed     = events.StatusFailed
)
