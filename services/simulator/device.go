package simulator

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/otawatch/otawatch/events"
)

// link is a device's way to the broker: its own connection, or its share of
// a multiplexed one.
type link interface {
	// publish sends payload to topic at QoS 1 and calls done once with the
	// outcome: nil when the broker acknowledged it. done may run before
	// publish returns; callers hold no lock.
	publish(topic string, payload []byte, done func(error))
	// setOnline takes the device off the broker (false) or puts it back
	// (true); true returns once its desired-state messages flow again, or
	// with ctx's error.
	setOnline(ctx context.Context, on bool) error
}

// update is one firmware update of a device.
type update struct {
	target  events.DeltaFirmware
	deltaTS time.Time // the desired state's timestamp (fleet mode)
	from    string
	started time.Time
	dur     time.Duration // install time, device time
	fail    bool
	code    string

	status   string // the final status, once known
	final    []byte // the final report, once built
	reported bool   // the broker acknowledged the final report
}

// minBackoff is the shortest pause before a retry, whatever the time
// scale: sooner, a lost connection has not even begun to come back, and a
// fleet at time scale 1000 would spend its retries in milliseconds.
const minBackoff = 100 * time.Millisecond

// maxSeen bounds the desired-state hashes a device remembers.
const maxSeen = 32

// device is one simulated device. In fleet mode its methods run from MQTT
// handlers, timers and publish completions, so its state is under mu and no
// lock is held while it publishes; a method that decides under the lock
// returns the work to do after it (a func, run by then()).
type device struct {
	f           *Fleet
	idx         int
	typeID, id  string
	reportTopic string
	deltaTopic  string
	link        link
	// offlineAt and offlineFor schedule the device's outage, in device
	// time after the fleet is connected; offlineFor 0 means none.
	offlineAt, offlineFor time.Duration

	mu        sync.Mutex
	rng       *rand.Rand
	online    bool
	installed string
	cur       *update // the update under way
	last      *update // the last update that ended
	// next is a desired state for another version that arrived during cur.
	next *events.ShadowDelta
	// pendingOffline asks for an outage when cur ends, for pendingFor
	// (negative: until SetOnline).
	pendingOffline bool
	pendingFor     time.Duration
	lastTS         time.Time
	installs       int
	seen           []uint64
	deltas         int // received, less redeliveries of seen content
	deliveries     int // every delivery
	localFailures  int
	reconnects     int
}

func then(f func()) {
	if f != nil {
		f()
	}
}

// stamp returns the time for a new report: the clock's, in milliseconds,
// strictly after the device's previous report, so two reports of one device
// never share the identity the bridge deduplicates on.
func (d *device) stamp() time.Time {
	t := d.f.clock.Now().UTC().Truncate(time.Millisecond)
	if !t.After(d.lastTS) {
		t = d.lastTS.Add(time.Millisecond)
	}
	d.lastTS = t
	return t
}

// draw decides an update's fate: four draws from the device's RNG, always
// four, so the n-th update of a device comes out the same in every run.
func (d *device) draw(u *update) {
	cfg := &d.f.cfg
	dur := d.f.durs.draw(d.rng)
	failU := d.rng.Float64()
	code := cfg.ErrorCodes[d.rng.IntN(len(cfg.ErrorCodes))]
	frac := d.rng.Float64()
	u.fail = failU < cfg.FailureRate
	if u.fail {
		// A failing install stops somewhere along the way.
		dur = time.Duration(float64(dur) * (0.2 + 0.8*frac))
		u.code = code
	}
	u.dur = dur
}

// report builds a report of u with status; elapsed is the update duration
// of a final report (device time).
func (d *device) report(u *update, status, code string, elapsed time.Duration) []byte {
	fw := events.Firmware{
		Version:         u.target.Version,
		Timestamp:       d.stamp(),
		Status:          status,
		Checksum:        u.target.Checksum,
		PreviousVersion: u.from,
	}
	if status != statusInProgress {
		fw.UpdateDuration = seconds(elapsed)
	}
	if status == statusFailed {
		fw.ErrorCode = &code
	}
	return encodeReport(fw)
}

// handleDelta is a desired-state message from the broker.
func (d *device) handleDelta(payload []byte, retained, dup bool) {
	if len(payload) == 0 {
		// An empty retained message clears the topic; it asks nothing.
		return
	}
	c := &d.f.counters
	d.mu.Lock()
	if !d.online || d.f.stopped.Load() {
		// Offline (a multiplexed device whose unsubscribe is under way):
		// missed, as it would be.
		d.mu.Unlock()
		return
	}
	h := fnv.New64a()
	h.Write(payload)
	sum := h.Sum64()
	seen := false
	for _, s := range d.seen {
		if s == sum {
			seen = true
			break
		}
	}
	if !seen {
		if len(d.seen) == maxSeen {
			d.seen = append(d.seen[:0], d.seen[1:]...)
		}
		d.seen = append(d.seen, sum)
	}
	d.deliveries++
	c.deltaDeliveries.Add(1)
	if !seen || (!retained && !dup) {
		d.deltas++
		c.deltasReceived.Add(1)
	}
	var delta events.ShadowDelta
	if err := json.Unmarshal(payload, &delta); err != nil {
		d.mu.Unlock()
		c.badDeltas.Add(1)
		d.f.log.Debug("desired state is not a shadow delta", "device_id", d.id, "err", err)
		return
	}
	next := d.consider(delta, false)
	d.mu.Unlock()
	then(next)
}

// consider decides what a desired state asks of the device; d.mu is held.
// reconcile is true for the delta the device fetched itself on coming back
// online, which tells it the cloud's view of its state.
func (d *device) consider(delta events.ShadowDelta, reconcile bool) func() {
	c := &d.f.counters
	fw := delta.State.Firmware
	if fw == nil || fw.Version == "" {
		// In sync.
		return nil
	}
	if d.cur != nil {
		if fw.Version != d.cur.target.Version {
			// A new target: after the update under way, as a device would.
			d.next = &delta
			return nil
		}
		c.deltasIgnored.Add(1)
		return nil
	}
	if fw.Version == d.installed {
		c.deltasIgnored.Add(1)
		if reconcile || (d.last != nil && !d.last.reported) {
			// The cloud asks for what runs here: it does not know.
			return d.republish()
		}
		return nil
	}
	if l := d.last; l != nil && l.target.Version == fw.Version && !delta.Timestamp.After(l.deltaTS) {
		// The desired state whose update already failed here, delivered
		// again: not a new request (a newer one would retry).
		c.deltasIgnored.Add(1)
		if reconcile || !l.reported {
			return d.republish()
		}
		return nil
	}
	return d.startInstall(delta)
}

// startInstall begins an update to delta's firmware; d.mu is held.
func (d *device) startInstall(delta events.ShadowDelta) func() {
	fw := *delta.State.Firmware
	if fw.Checksum == "" {
		fw.Checksum = Checksum(fw.Version)
	}
	u := &update{target: fw, deltaTS: delta.Timestamp, from: d.installed, started: d.f.clock.Now()}
	d.draw(u)
	d.cur = u
	d.installs++
	d.f.counters.installs.Add(1)
	p := d.report(u, statusInProgress, "", 0)
	return func() {
		d.send(p, statusInProgress, func() { d.downloading(u) }, func() { d.giveUp(u) })
	}
}

// downloading starts the install once in_progress is acknowledged.
func (d *device) downloading(u *update) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != u || d.f.stopped.Load() {
		return
	}
	d.f.clock.AfterFunc(d.f.scale(u.dur), func() { d.installEnd(u) })
}

// installEnd ends the install: the final report goes out.
func (d *device) installEnd(u *update) {
	d.mu.Lock()
	if d.cur != u || d.f.stopped.Load() {
		d.mu.Unlock()
		return
	}
	u.status = statusCompleted
	if u.fail {
		u.status = statusFailed
	}
	u.final = d.report(u, u.status, u.code, u.dur)
	p, status := u.final, u.status
	d.mu.Unlock()
	d.send(p, status, func() { d.finish(u) }, func() { d.giveUp(u) })
}

// finish records an update whose final report was acknowledged.
func (d *device) finish(u *update) {
	c := &d.f.counters
	d.mu.Lock()
	if d.cur != u {
		d.mu.Unlock()
		return
	}
	u.reported = true
	if u.status == statusCompleted {
		d.installed = u.target.Version
		c.completed.Add(1)
	} else {
		c.failed.Add(1)
	}
	d.cur, d.last = nil, u
	next := d.afterUpdate()
	d.mu.Unlock()
	then(next)
}

// giveUp ends an update whose report could not be delivered after every
// retry: the device keeps its firmware and marks the update failed locally,
// to be reported when it reconciles.
func (d *device) giveUp(u *update) {
	d.mu.Lock()
	if d.cur != u {
		d.mu.Unlock()
		return
	}
	elapsed := time.Duration(float64(d.f.clock.Now().Sub(u.started)) * d.f.cfg.TimeScale)
	u.status, u.code, u.reported = statusFailed, ErrCodeReportUndelivered, false
	u.final = d.report(u, statusFailed, u.code, elapsed)
	d.cur, d.last = nil, u
	d.localFailures++
	d.f.counters.localFailures.Add(1)
	next := d.afterUpdate()
	d.mu.Unlock()
	d.f.log.Debug("update failed locally: report undelivered", "device_id", d.id, "version", u.target.Version)
	then(next)
}

// afterUpdate is what a device does once an update ended; d.mu is held.
func (d *device) afterUpdate() func() {
	if d.next != nil {
		n := *d.next
		d.next = nil
		if f := d.consider(n, false); f != nil {
			return f
		}
	}
	if d.pendingOffline {
		d.pendingOffline = false
		return d.goOffline(d.pendingFor)
	}
	return nil
}

// republish sends the device's current state again; d.mu is held.
func (d *device) republish() func() {
	u := d.last
	var p []byte
	status := statusCompleted
	if u != nil && u.final != nil {
		p, status = u.final, u.status
	} else {
		// Nothing reported since the start: report what runs.
		p = encodeReport(events.Firmware{
			Version: d.installed, Timestamp: d.stamp(), Status: statusCompleted,
			Checksum: Checksum(d.installed), PreviousVersion: d.installed,
		})
	}
	d.f.counters.republished.Add(1)
	return func() {
		d.send(p, status, func() {
			if u != nil {
				d.mu.Lock()
				u.reported = true
				d.mu.Unlock()
			}
		}, func() {})
	}
}

// send publishes a report, retrying after each of the configured backoffs
// (device time) when a publish fails; ok runs once it is acknowledged,
// giveUp when the last retry failed.
func (d *device) send(p []byte, status string, ok, giveUp func()) {
	d.attempt(p, status, 0, ok, giveUp)
}

func (d *device) attempt(p []byte, status string, n int, ok, giveUp func()) {
	if d.f.stopped.Load() {
		return
	}
	c := &d.f.counters
	c.published.Add(1)
	if n > 0 {
		c.retries.Add(1)
	}
	d.link.publish(d.reportTopic, p, func(err error) {
		if err == nil {
			c.sent(status)
			ok()
			return
		}
		if d.f.stopped.Load() {
			return // the connection closed under it at shutdown
		}
		c.publishErrors.Add(1)
		if n >= len(d.f.cfg.Backoff) {
			giveUp()
			return
		}
		d.f.clock.AfterFunc(max(minBackoff, d.f.scale(d.f.cfg.Backoff[n])), func() { d.attempt(p, status, n+1, ok, giveUp) })
	})
}

// wantOffline starts an outage of for (device time; negative until
// SetOnline), now or when the update under way ends.
func (d *device) wantOffline(dur time.Duration) {
	d.mu.Lock()
	if !d.online || d.f.stopped.Load() {
		d.mu.Unlock()
		return
	}
	if d.cur != nil {
		// A device does not lose power mid-flash in this simulation: an
		// outage that falls into an update starts when it ends.
		d.pendingOffline, d.pendingFor = true, dur
		d.mu.Unlock()
		return
	}
	next := d.goOffline(dur)
	d.mu.Unlock()
	then(next)
}

// goOffline takes the device off the broker; d.mu is held.
func (d *device) goOffline(dur time.Duration) func() {
	d.online = false
	d.f.counters.offline.Add(1)
	d.f.counters.offlineEvents.Add(1)
	return func() {
		if err := d.link.setOnline(d.f.ctx(), false); err != nil {
			d.f.log.Debug("device disconnect", "device_id", d.id, "err", err)
		}
		if dur >= 0 {
			d.f.clock.AfterFunc(d.f.scale(dur), d.comeBack)
		}
	}
}

// comeBack ends an outage: the device reconnects and reconciles.
func (d *device) comeBack() {
	if d.f.stopped.Load() {
		return
	}
	d.mu.Lock()
	if d.online {
		d.mu.Unlock()
		return
	}
	// Online before the connection is: what the broker delivers on
	// connecting is for a device that is back.
	d.online = true
	d.mu.Unlock()
	err := d.link.setOnline(d.f.ctx(), true)
	d.f.counters.offline.Add(-1)
	if err != nil {
		return // stopping
	}
	d.reconnected()
}

// reconnected is called when the device's messages flow again after an
// outage or a lost connection.
func (d *device) reconnected() {
	d.mu.Lock()
	d.reconnects++
	d.mu.Unlock()
	d.f.counters.reconnects.Add(1)
	d.reconcile()
}

// reconcile compares the device's state with the cloud's: with an API it
// asks for its shadow delta and acts on it; an outcome the cloud never
// acknowledged is reported again.
func (d *device) reconcile() {
	if d.f.stopped.Load() || d.f.cfg.Mode != ModeFleet {
		return
	}
	var delta *events.ShadowDelta
	if d.f.api != nil {
		d.f.counters.reconciles.Add(1)
		got, err := d.f.api.delta(d.f.ctx(), d.typeID, d.id)
		if err != nil {
			d.f.counters.reconcileErr.Add(1)
			d.f.log.Debug("shadow delta lookup", "device_id", d.id, "err", err)
		} else {
			delta = &got
		}
	}
	d.mu.Lock()
	if !d.online {
		d.mu.Unlock()
		return
	}
	var next func()
	if delta != nil {
		next = d.consider(*delta, true)
	}
	if next == nil && d.cur == nil && d.last != nil && !d.last.reported {
		next = d.republish()
	}
	d.mu.Unlock()
	then(next)
}

// DeviceState is a snapshot of one simulated device.
type DeviceState struct {
	TypeID string
	ID     string
	Online bool
	// Installed is the firmware the device runs; Installing the one it is
	// installing ("" when idle).
	Installed  string
	Installing string
	// Installs counts updates started.
	Installs int
	// DeltasReceived counts desired-state messages received, less
	// redeliveries of content already seen; DeltaDeliveries every one.
	DeltasReceived  int
	DeltaDeliveries int
	// LastStatus is the final status of the last update that ended ("" if
	// none); LastReported says the broker acknowledged it.
	LastStatus    string
	LastVersion   string
	LastErrorCode string
	LastReported  bool
	LocalFailures int
	Reconnects    int
}

func (d *device) state() DeviceState {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := DeviceState{
		TypeID: d.typeID, ID: d.id, Online: d.online, Installed: d.installed,
		Installs: d.installs, DeltasReceived: d.deltas, DeltaDeliveries: d.deliveries,
		LocalFailures: d.localFailures, Reconnects: d.reconnects,
	}
	if d.cur != nil {
		s.Installing = d.cur.target.Version
	}
	if l := d.last; l != nil {
		s.LastStatus, s.LastVersion, s.LastErrorCode, s.LastReported = l.status, l.target.Version, l.code, l.reported
	}
	return s
}
