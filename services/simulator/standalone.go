package simulator

import (
	"container/heap"
	"context"
	"time"
)

// emitTick is how often the standalone emitter wakes to spend its rate.
const emitTick = 5 * time.Millisecond

// due is a standalone device whose install ends at at.
type due struct {
	at time.Time
	d  *device
}

type dueHeap []due

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(due)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// emit runs a standalone fleet: one loop spends the rate on the next report
// due, an install that ended (completed or failed) first, else a new update
// of the longest idle device (in_progress). Devices whose install has not
// ended wait, so the rate is a ceiling the fleet reaches when enough devices
// are idle. A publish that fails is counted, not retried: this mode is load,
// not device behaviour.
func (f *Fleet) emit(ctx context.Context) error {
	var (
		pending  dueHeap
		idle     = make([]*device, len(f.devs)) // a FIFO: the head is idle the longest
		inflight = make(chan struct{}, f.cfg.MaxInFlight)
		emitted  int64
		credit   float64
		last     = f.clock.Now()
		burst    = max(1, f.cfg.Rate/10) // at most 100 ms of rate at once after a stall
	)
	copy(idle, f.devs)
	c := &f.counters
	for ctx.Err() == nil && (f.cfg.Count == 0 || emitted < f.cfg.Count) {
		now := f.clock.Now()
		if f.cfg.Rate > 0 {
			credit = min(credit+f.cfg.Rate*now.Sub(last).Seconds(), burst)
		}
		last = now
		for f.cfg.Rate == 0 || credit >= 1 {
			if f.cfg.Count > 0 && emitted >= f.cfg.Count {
				break
			}
			var (
				d       *device
				payload []byte
				status  string
			)
			switch {
			case len(pending) > 0 && !pending[0].at.After(now):
				d = heap.Pop(&pending).(due).d
				payload, status = f.finishStandalone(d)
				idle = append(idle, d)
			case len(idle) > 0:
				d = idle[0]
				idle = idle[1:]
				var end time.Duration
				payload, end = f.startStandalone(d)
				status = statusInProgress
				heap.Push(&pending, due{at: now.Add(f.scale(end)), d: d})
			}
			if d == nil {
				break // every device is installing
			}
			select {
			case inflight <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			c.published.Add(1)
			d.link.publish(d.reportTopic, payload, func(err error) {
				<-inflight
				if err != nil {
					c.publishErrors.Add(1)
					return
				}
				c.sent(status)
				switch status {
				case statusCompleted:
					c.completed.Add(1)
				case statusFailed:
					c.failed.Add(1)
				}
			})
			emitted++
			credit--
		}
		if f.cfg.Count > 0 && emitted >= f.cfg.Count {
			break
		}
		if err := sleep(ctx, f.clock, emitTick); err != nil {
			return nil
		}
	}
	// Wait for the reports in flight: taking every slot means none is left.
	for i := 0; i < cap(inflight); i++ {
		select {
		case inflight <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// startStandalone begins a standalone device's next update (to the next
// patch version, or again to the one that failed) and returns its
// in_progress report and its install time.
func (f *Fleet) startStandalone(d *device) ([]byte, time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	target, _ := bumpPatch(d.installed)
	if l := d.last; l != nil && l.status == statusFailed {
		target = l.target.Version
	}
	u := &update{from: d.installed, started: f.clock.Now()}
	u.target.Version = target
	u.target.Checksum = Checksum(target)
	d.draw(u)
	d.cur = u
	d.installs++
	f.counters.installs.Add(1)
	return d.report(u, statusInProgress, "", 0), u.dur
}

// finishStandalone ends a standalone device's update and returns its final
// report.
func (f *Fleet) finishStandalone(d *device) ([]byte, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := d.cur
	u.status = statusCompleted
	if u.fail {
		u.status = statusFailed
	} else {
		d.installed = u.target.Version
	}
	u.final = d.report(u, u.status, u.code, u.dur)
	u.reported = true
	d.cur, d.last = nil, u
	return u.final, u.status
}
