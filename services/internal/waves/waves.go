package waves

import (
	"fmt"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// State is a device's state in a job, as events.WaveProgress counts it.
type State string

// The exclusive states of a planned device.
const (
	// Queued: its desired state (the current attempt) is not acknowledged
	// by the broker yet; every device of a wave not started is queued.
	Queued State = "queued"
	// Pending: sent, and no report toward the target since.
	Pending State = "pending"
	// InProgress: reported in_progress since its desired state.
	InProgress State = "in_progress"
	// Completed: reported completed on the target version.
	Completed State = "completed"
	// Failed: reported failed since its desired state.
	Failed State = "failed"
	// TimedOut: neither completed nor failed within the job's device
	// timeout.
	TimedOut State = "timed_out"
	// Offline: potentially offline, or offline by its presence will,
	// without a report since its desired state.
	Offline State = "offline"
)

// Fleet is what Progress reads of the fleet state (*fleet.State).
type Fleet interface {
	Device(typeID, deviceID string) (fleet.Device, bool)
}

// Ledger is what a job's ROLLOUT events say about its devices: the plan
// fixed at job_started and, per device, the send attempt it is due
// (retry-failed raises it) and the latest one the broker acknowledged
// (devices_sent). Apply folds it; the zero Ledger is not usable, NewLedger
// makes one.
type Ledger struct {
	// JobID and DeviceTimeout are the job's, from job_created.
	JobID         string
	DeviceTimeout time.Duration
	// Plan is the devices by wave, fixed at start; nil before.
	Plan [][]events.DeviceRef
	// Attempt is the number of retry-failed rounds so far.
	Attempt int

	// want is the attempt a device must be sent (0, or the retry round that
	// queued it again); sent is 1 + the latest attempt the broker
	// acknowledged. A device is due (queued) while sent <= want.
	want   map[events.DeviceRef]int
	sent   map[events.DeviceRef]int
	waveOf map[events.DeviceRef]int
	// due counts each wave's devices still to send, so a sender skips
	// finished waves without scanning them.
	due []int
}

// NewLedger returns the ledger of a job just created.
func NewLedger(jobID string, deviceTimeout time.Duration) Ledger {
	return Ledger{JobID: jobID, DeviceTimeout: deviceTimeout,
		want: map[events.DeviceRef]int{}, sent: map[events.DeviceRef]int{}, waveOf: map[events.DeviceRef]int{}}
}

// Apply folds one ROLLOUT event of the job (its type and data): job_created
// sets the job id and device timeout, job_started the plan, devices_sent and
// devices_retried the sends. Other types change nothing.
func (l *Ledger) Apply(typ string, d events.RolloutData) error {
	switch typ {
	case events.TypeRolloutJobCreated:
		if d.Spec != nil {
			l.DeviceTimeout = time.Duration(d.Spec.DeviceTimeout)
		}
		l.JobID = d.JobID
	case events.TypeRolloutJobStarted:
		if d.Plan == nil {
			return fmt.Errorf("job %s: job_started without a plan", l.JobID)
		}
		if l.Plan != nil {
			return fmt.Errorf("job %s: started twice", l.JobID)
		}
		l.Plan = d.Plan.Waves
		l.due = make([]int, len(l.Plan))
		for i, w := range l.Plan {
			for _, ref := range w {
				l.waveOf[ref] = i + 1
				if l.isDue(ref) {
					l.due[i]++
				}
			}
		}
	case events.TypeRolloutDevicesSent:
		for _, ref := range d.Devices {
			l.mark(ref, func() {
				if l.sent[ref] < d.Attempt+1 {
					l.sent[ref] = d.Attempt + 1
				}
			})
		}
	case events.TypeRolloutDevicesRetried:
		if d.Attempt > l.Attempt {
			l.Attempt = d.Attempt
		}
		for _, ref := range d.Devices {
			l.mark(ref, func() {
				if l.want[ref] < d.Attempt {
					l.want[ref] = d.Attempt
				}
			})
		}
	}
	return nil
}

// mark runs change on a device's send bookkeeping and keeps its wave's due
// count right.
func (l *Ledger) mark(ref events.DeviceRef, change func()) {
	before := l.isDue(ref)
	change()
	after := l.isDue(ref)
	if w := l.waveOf[ref]; w > 0 && before != after {
		if after {
			l.due[w-1]++
		} else {
			l.due[w-1]--
		}
	}
}

func (l *Ledger) isDue(ref events.DeviceRef) bool { return l.sent[ref] <= l.want[ref] }

// Send is one device's desired state to send: which wave and attempt.
type Send struct {
	Ref     events.DeviceRef
	Wave    int
	Attempt int
}

// DueIn returns up to limit devices of waves 1..started whose desired state
// is still to be sent, in plan order.
func (l *Ledger) DueIn(started, limit int) []Send {
	var out []Send
	for w := 1; w <= min(started, len(l.Plan)) && len(out) < limit; w++ {
		if l.due[w-1] == 0 {
			continue
		}
		for _, ref := range l.Plan[w-1] {
			if l.isDue(ref) {
				out = append(out, Send{Ref: ref, Wave: w, Attempt: l.want[ref]})
				if len(out) == limit {
					break
				}
			}
		}
	}
	return out
}

// Sent reports whether the device's current attempt was acknowledged by the
// broker.
func (l *Ledger) Sent(ref events.DeviceRef) bool { return !l.isDue(ref) }

// EverSent reports whether the broker acknowledged any attempt for the
// device.
func (l *Ledger) EverSent(ref events.DeviceRef) bool { return l.sent[ref] > 0 }

// Devices returns how many devices the plan holds.
func (l *Ledger) Devices() int { return len(l.waveOf) }

// WaveOf is the 1-based wave of a device, 0 when the job does not target it.
func (l *Ledger) WaveOf(ref events.DeviceRef) int { return l.waveOf[ref] }

// DeviceState is one planned device's state at now. A device that went
// silent after it started the update is not offline: it stays in the gate's
// denominator and times out, so a firmware that bricks devices cannot pass
// a gate because the bricked devices dropped out of "online".
func (l *Ledger) DeviceState(ref events.DeviceRef, fv Fleet, now time.Time) State {
	if !l.Sent(ref) {
		return Queued
	}
	d, ok := fv.Device(ref.TypeID, ref.DeviceID)
	if !ok || d.JobID != l.JobID || d.Target == nil {
		// Sent, but the fleet fold has not seen the desired event yet.
		return Pending
	}
	switch d.JobStatus {
	case fleet.JobCompleted:
		return Completed
	case fleet.JobFailed:
		return Failed
	}
	// Offline: known to the fleet (it reported, or the broker told its
	// presence) and not online, with nothing reported since its desired
	// state.
	if d.JobStatus == fleet.JobPending && d.Known() && !d.Online {
		return Offline
	}
	if l.DeviceTimeout > 0 && now.Sub(d.DesiredAt) > l.DeviceTimeout {
		return TimedOut
	}
	if d.JobStatus == fleet.JobInProgress {
		return InProgress
	}
	return Pending
}

// Count adds one device in state st to p.
func Count(p *events.WaveProgress, st State) {
	p.Targeted++
	switch st {
	case Queued:
		p.Queued++
	case Pending:
		p.Pending++
	case InProgress:
		p.InProgress++
	case Completed:
		p.Completed++
	case Failed:
		p.Failed++
	case TimedOut:
		p.TimedOut++
	case Offline:
		p.Offline++
	}
}

// Progress is a wave's devices by state at now (wave is 1-based; the zero
// progress outside the plan). Targeted is the wave's size in the plan and
// the other fields add up to it.
func (l *Ledger) Progress(wave int, fv Fleet, now time.Time) events.WaveProgress {
	var p events.WaveProgress
	if wave < 1 || wave > len(l.Plan) {
		return p
	}
	for _, ref := range l.Plan[wave-1] {
		Count(&p, l.DeviceState(ref, fv, now))
	}
	return p
}
