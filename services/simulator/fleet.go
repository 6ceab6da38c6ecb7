package simulator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// Fleet is a simulated device fleet. Build it with NewFleet, run it with
// Run, and observe it with Stats, DeltasReceived and Device from any
// goroutine.
type Fleet struct {
	cfg   FleetConfig
	log   *slog.Logger
	clock svc.Clock
	durs  durations
	api   *apiClient

	devs  []*device
	byID  map[string]*device
	conns []*conn
	slots chan struct{} // connection attempts in progress

	counters counters
	ready    chan struct{}
	started  atomic.Bool
	stopped  atomic.Bool
	runCtx   atomic.Pointer[context.Context]

	warnMu   sync.Mutex
	lastWarn time.Time
}

// NewFleet builds a fleet from cfg (defaults filled in, every problem
// reported at once). It does no I/O.
func NewFleet(cfg FleetConfig, log *slog.Logger) (*Fleet, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{
		cfg:   cfg,
		log:   log.With("component", "simulator"),
		clock: cfg.Clock,
		durs:  newDurations(cfg.DurationMean, cfg.DurationStddev),
		byID:  make(map[string]*device, cfg.Devices),
		slots: make(chan struct{}, cfg.ConnectConcurrency),
		ready: make(chan struct{}),
	}
	if cfg.APIURL != "" {
		f.api = newAPIClient(cfg.APIURL, cfg.APIToken)
	}
	width := max(5, len(strconv.Itoa(cfg.Devices)))
	f.devs = make([]*device, cfg.Devices)
	for i := range f.devs {
		typeID := cfg.Types[i%len(cfg.Types)]
		id := DeviceID(i+1, width)
		d := &device{
			f: f, idx: i, typeID: typeID, id: id,
			reportTopic: events.ReportTopic(typeID, id),
			deltaTopic:  events.DeltaTopic(typeID, id),
			rng:         rand.New(rand.NewPCG(cfg.Seed, uint64(i))),
			online:      true,
			installed:   cfg.FromVersion,
		}
		f.devs[i] = d
		f.byID[id] = d
	}
	if cfg.Mode == ModeFleet && cfg.OfflineShare > 0 {
		// The outage schedule has its own stream, so it never shifts the
		// devices' update draws.
		rng := rand.New(rand.NewPCG(cfg.Seed, math.MaxUint64))
		n := int(math.Round(cfg.OfflineShare * float64(cfg.Devices)))
		for _, i := range rng.Perm(cfg.Devices)[:n] {
			d := f.devs[i]
			d.offlineAt = time.Duration(rng.Float64() * float64(cfg.OfflineWithin))
			d.offlineFor = time.Duration((0.5 + rng.Float64()) * float64(cfg.OfflineFor))
		}
	}
	return f, nil
}

// DeviceID is the id of the n-th device (1-based), zero-padded to width
// digits: d-00001.
func DeviceID(n, width int) string {
	s := strconv.Itoa(n)
	for len(s) < width {
		s = "0" + s
	}
	return "d-" + s
}

// Run connects the fleet and runs it until ctx ends (or, standalone with a
// Count, until that many reports are acknowledged or failed), then
// disconnects. It returns nil on a clean stop. A fleet runs once.
func (f *Fleet) Run(ctx context.Context) error {
	if !f.started.CompareAndSwap(false, true) {
		return errors.New("simulator: a fleet runs once")
	}
	f.runCtx.Store(&ctx)
	f.buildConns()
	defer f.shutdown()

	t0 := time.Now()
	if err := f.connectAll(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	f.log.Info("fleet connected", "devices", len(f.devs), "connections", len(f.conns), "mode", f.cfg.Mode,
		"took", time.Since(t0).Round(time.Millisecond))
	close(f.ready)

	if f.cfg.Mode == ModeStandalone {
		if most := f.sustainableRate(); f.cfg.Rate == 0 || f.cfg.Rate > most {
			f.log.Info("standalone rate is bounded by install times once every device is busy",
				"rate", f.cfg.Rate, "sustainable_rate", math.Round(most), "devices", len(f.devs),
				"duration_mean", f.cfg.DurationMean, "time_scale", f.cfg.TimeScale)
		}
		return f.emit(ctx)
	}
	for _, d := range f.devs {
		if d.offlineFor > 0 {
			d := d
			f.clock.AfterFunc(f.scale(d.offlineAt), func() { d.wantOffline(d.offlineFor) })
		}
	}
	<-ctx.Done()
	return nil
}

// sustainableRate is about the most reports per second a standalone fleet
// keeps up once every device is busy: each device sends two reports per
// install, and an install takes DurationMean/TimeScale.
func (f *Fleet) sustainableRate() float64 {
	return 2 * float64(len(f.devs)) / f.scale(f.cfg.DurationMean).Seconds()
}

// buildConns gives every device its link.
func (f *Fleet) buildConns() {
	prefix := f.cfg.ClientIDPrefix
	if f.cfg.Connections == 0 {
		f.conns = make([]*conn, len(f.devs))
		for i, d := range f.devs {
			c := newConn(f, prefix+"-"+d.typeID+"-"+d.id, []*device{d}, true)
			d.link = ownLink{c}
			f.conns[i] = c
		}
		return
	}
	k := min(f.cfg.Connections, len(f.devs))
	groups := make([][]*device, k)
	for i, d := range f.devs {
		groups[i%k] = append(groups[i%k], d)
	}
	f.conns = make([]*conn, k)
	for i, g := range groups {
		c := newConn(f, prefix+"-conn-"+strconv.Itoa(i+1), g, false)
		for _, d := range g {
			d.link = muxLink{conn: c, d: d}
		}
		f.conns[i] = c
	}
}

// connectAll opens every connection, ConnectConcurrency at a time.
func (f *Fleet) connectAll(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for _, c := range f.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.connectLoop(ctx); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("connect fleet: %w", err)
	default:
		return nil
	}
}

// withConnectSlot runs connect holding one of ConnectConcurrency slots.
func (f *Fleet) withConnectSlot(ctx context.Context, connect func(context.Context) error) error {
	select {
	case f.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-f.slots }()
	return connect(ctx)
}

// warnConnect logs a failed connection attempt, at most every 5 s: a broker
// that is down fails every device at once.
func (f *Fleet) warnConnect(err error) {
	f.warnMu.Lock()
	defer f.warnMu.Unlock()
	if now := time.Now(); now.Sub(f.lastWarn) >= 5*time.Second {
		f.lastWarn = now
		f.log.Warn("connection attempt failed; retrying", "broker", f.cfg.Broker, "err", err)
	}
}

// shutdown stops every device and closes every connection.
func (f *Fleet) shutdown() {
	f.stopped.Store(true)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range f.conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.disconnect()
		}()
	}
	wg.Wait()
}

// ctx is Run's context (Background before Run).
func (f *Fleet) ctx() context.Context {
	if p := f.runCtx.Load(); p != nil {
		return *p
	}
	return context.Background()
}

// scale turns a device-time duration into clock time.
func (f *Fleet) scale(d time.Duration) time.Duration {
	return time.Duration(float64(d) / f.cfg.TimeScale)
}

// Ready is closed once every device is connected (and, in fleet mode,
// subscribed to its desired-state topic).
func (f *Fleet) Ready() <-chan struct{} { return f.ready }

// Stats returns what the fleet has done so far.
func (f *Fleet) Stats() Stats { return f.counters.snapshot(len(f.devs)) }

// DeviceIDs returns the ids of the fleet's devices, in order.
func (f *Fleet) DeviceIDs() []string {
	ids := make([]string, len(f.devs))
	for i, d := range f.devs {
		ids[i] = d.id
	}
	return ids
}

// DeltasReceived is the number of desired-state messages the device
// received, less redeliveries of content it already had (see the package
// doc); 0 for an unknown device.
func (f *Fleet) DeltasReceived(deviceID string) int {
	d := f.byID[deviceID]
	if d == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.deltas
}

// Device returns a snapshot of one device.
func (f *Fleet) Device(deviceID string) (DeviceState, bool) {
	d := f.byID[deviceID]
	if d == nil {
		return DeviceState{}, false
	}
	return d.state(), true
}

// SetOffline starts an outage of a fleet-mode device that lasts until
// SetOnline: it disconnects now, or when the update under way ends.
func (f *Fleet) SetOffline(deviceID string) error {
	d, err := f.controllable(deviceID)
	if err != nil {
		return err
	}
	d.wantOffline(-1)
	return nil
}

// SetOnline ends a device's outage: it reconnects and reconciles. It
// returns once the device is back (or ctx of Run ended).
func (f *Fleet) SetOnline(deviceID string) error {
	d, err := f.controllable(deviceID)
	if err != nil {
		return err
	}
	d.mu.Lock()
	if d.pendingOffline {
		d.pendingOffline = false
	}
	d.mu.Unlock()
	d.comeBack()
	return nil
}

func (f *Fleet) controllable(deviceID string) (*device, error) {
	d := f.byID[deviceID]
	switch {
	case d == nil:
		return nil, fmt.Errorf("no device %q in the fleet", deviceID)
	case f.cfg.Mode != ModeFleet:
		return nil, errors.New("outages are simulated in fleet mode only")
	}
	select {
	case <-f.ready:
		return d, nil
	default:
		return nil, errors.New("the fleet is not connected yet")
	}
}
