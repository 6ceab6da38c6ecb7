package rollout

import (
	"fmt"
	"time"

	"github.com/otawatch/otawatch/events"
)

// Job is one rollout job's state: the fold of its ROLLOUT events (Apply).
// Nothing else writes it, so a restarted orchestrator that replays the
// events is exactly where the stopped one was.
type Job struct {
	ID     string
	Spec   events.RolloutSpec
	Status string

	CreatedAt, StartedAt, FinishedAt, UpdatedAt time.Time
	// Reason and By say why the job is paused or aborted.
	Reason, By string

	// Plan is the devices by wave, fixed at start.
	Plan [][]events.DeviceRef
	// Wave is the open wave, 1-based; 0 before the first starts.
	Wave  int
	Waves []WaveState
	// Attempt is the number of retry-failed rounds so far.
	Attempt int
	// PolicyWaived is the wave whose failure policy an operator waived by
	// resuming a job the policy had paused: the policy applies again from
	// the next wave.
	PolicyWaived int
	// LastSeq is the ROLLOUT stream sequence of the job's last event; the
	// next append expects it (optimistic concurrency).
	LastSeq uint64

	pausedWave int
	// want is the attempt a device must be sent (0, or the retry round that
	// queued it again); sent is 1 + the latest attempt the broker
	// acknowledged. A device of a started wave is due while sent <= want.
	want   map[events.DeviceRef]int
	sent   map[events.DeviceRef]int
	waveOf map[events.DeviceRef]int
	// retracted holds the devices of the plan whose retained desired state
	// was cleared after the job was aborted (devices_retracted).
	retracted map[events.DeviceRef]bool
}

// WaveState is what the events say about one wave.
type WaveState struct {
	StartedAt, GatedAt, CompletedAt time.Time
	// Gate and Progress are as recorded when the wave was gated; Progress
	// is replaced by the snapshot of wave_completed.
	Gate     *events.GateDecision
	Progress *events.WaveProgress
	// due counts the wave's devices still to send, so the sender skips
	// finished waves without scanning them.
	due int
}

// Apply folds one ROLLOUT event of the job into its state and returns it.
// j is nil before job_created. An event at or below j.LastSeq was already
// applied and changes nothing (a driver applies its own appends at once and
// sees them again from the stream). Unknown types are skipped, for events a
// newer version may write.
func Apply(j *Job, seq uint64, e events.Event) (*Job, error) {
	if j != nil && seq != 0 && seq <= j.LastSeq {
		return j, nil
	}
	var d events.RolloutData
	if err := e.DecodeData(&d); err != nil {
		return j, err
	}
	if e.Type == events.TypeRolloutJobCreated {
		if j != nil {
			return j, fmt.Errorf("job %s: created twice (seq %d)", d.JobID, seq)
		}
		if d.Spec == nil {
			return nil, fmt.Errorf("job %s: job_created without a spec", d.JobID)
		}
		j = &Job{ID: d.JobID, Spec: *d.Spec, Status: events.RolloutCreated, CreatedAt: e.Time,
			want: map[events.DeviceRef]int{}, sent: map[events.DeviceRef]int{}, waveOf: map[events.DeviceRef]int{},
			retracted: map[events.DeviceRef]bool{}}
		j.UpdatedAt, j.LastSeq = e.Time, seq
		return j, nil
	}
	if j == nil {
		return nil, fmt.Errorf("job %s: %s before job_created", d.JobID, events.RolloutEventName(e.Type))
	}
	if d.JobID != j.ID {
		return j, fmt.Errorf("event %s of job %s applied to job %s", e.ID, d.JobID, j.ID)
	}
	wave := func() (*WaveState, error) {
		if d.Wave < 1 || d.Wave > len(j.Waves) {
			return nil, fmt.Errorf("job %s: %s of wave %d, the plan has %d", j.ID, events.RolloutEventName(e.Type), d.Wave, len(j.Waves))
		}
		return &j.Waves[d.Wave-1], nil
	}
	switch e.Type {
	case events.TypeRolloutJobStarted:
		if d.Plan == nil {
			return j, fmt.Errorf("job %s: job_started without a plan", j.ID)
		}
		if j.Plan != nil {
			return j, fmt.Errorf("job %s: started twice (seq %d)", j.ID, seq)
		}
		j.Status, j.StartedAt = events.RolloutRunning, e.Time
		j.Plan = d.Plan.Waves
		j.Waves = make([]WaveState, len(j.Plan))
		for i, w := range j.Plan {
			for _, ref := range w {
				j.waveOf[ref] = i + 1
				if j.isDue(ref) {
					j.Waves[i].due++
				}
			}
		}
	case events.TypeRolloutWaveStarted:
		ws, err := wave()
		if err != nil {
			return j, err
		}
		j.Wave, ws.StartedAt = d.Wave, e.Time
	case events.TypeRolloutWaveGated:
		ws, err := wave()
		if err != nil {
			return j, err
		}
		ws.GatedAt, ws.Gate, ws.Progress = e.Time, d.Gate, d.Progress
	case events.TypeRolloutWaveCompleted:
		ws, err := wave()
		if err != nil {
			return j, err
		}
		ws.CompletedAt = e.Time
		if d.Progress != nil {
			ws.Progress = d.Progress
		}
	case events.TypeRolloutDevicesSent:
		for _, ref := range d.Devices {
			j.mark(ref, func() {
				if j.sent[ref] < d.Attempt+1 {
					j.sent[ref] = d.Attempt + 1
				}
			})
		}
	case events.TypeRolloutDevicesRetried:
		if d.Attempt > j.Attempt {
			j.Attempt = d.Attempt
		}
		for _, ref := range d.Devices {
			j.mark(ref, func() {
				if j.want[ref] < d.Attempt {
					j.want[ref] = d.Attempt
				}
			})
		}
	case events.TypeRolloutDevicesRetracted:
		for _, ref := range d.Devices {
			if j.waveOf[ref] > 0 {
				j.retracted[ref] = true
			}
		}
	case events.TypeRolloutJobPaused:
		j.Status, j.Reason, j.By, j.pausedWave = events.RolloutPaused, d.Reason, d.By, d.Wave
	case events.TypeRolloutJobResumed:
		if j.By == events.ByFailurePolicy {
			j.PolicyWaived = j.pausedWave
		}
		j.Status, j.Reason, j.By = events.RolloutRunning, "", ""
	case events.TypeRolloutJobAborted:
		j.Status, j.Reason, j.By, j.FinishedAt = events.RolloutAborted, d.Reason, d.By, e.Time
	case events.TypeRolloutJobCompleted:
		j.Status, j.FinishedAt = events.RolloutCompleted, e.Time
	default:
		// A type this version does not know: skip it, keep the sequence.
	}
	j.UpdatedAt = e.Time
	if seq > j.LastSeq {
		j.LastSeq = seq
	}
	return j, nil
}

// mark runs change on a device's send bookkeeping and keeps its wave's due
// count right.
func (j *Job) mark(ref events.DeviceRef, change func()) {
	before := j.isDue(ref)
	change()
	after := j.isDue(ref)
	if w := j.waveOf[ref]; w > 0 && before != after {
		if after {
			j.Waves[w-1].due++
		} else {
			j.Waves[w-1].due--
		}
	}
}

func (j *Job) isDue(ref events.DeviceRef) bool { return j.sent[ref] <= j.want[ref] }

// Send is one device's desired state to send: which wave and attempt.
type Send struct {
	Ref     events.DeviceRef
	Wave    int
	Attempt int
}

// Due returns up to limit devices of the started waves whose desired state
// is still to be sent, in plan order.
func (j *Job) Due(limit int) []Send {
	var out []Send
	for w := 1; w <= min(j.Wave, len(j.Waves)) && len(out) < limit; w++ {
		if j.Waves[w-1].due == 0 {
			continue
		}
		for _, ref := range j.Plan[w-1] {
			if j.isDue(ref) {
				out = append(out, Send{Ref: ref, Wave: w, Attempt: j.want[ref]})
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
func (j *Job) Sent(ref events.DeviceRef) bool { return !j.isDue(ref) }

// Active reports whether the job may still act on devices (running or
// paused).
func (j *Job) Active() bool {
	return j.Status == events.RolloutRunning || j.Status == events.RolloutPaused
}

// Devices returns how many devices the plan holds.
func (j *Job) Devices() int { return len(j.waveOf) }

// WaveOf is the 1-based wave of a device, 0 when the job does not target it.
func (j *Job) WaveOf(ref events.DeviceRef) int { return j.waveOf[ref] }
