package rollout

import (
	"fmt"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/waves"
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

	// Ledger holds the plan (Plan, fixed at start), the retry-failed
	// rounds (Attempt) and which sends the broker acknowledged: the part
	// of the fold that wave progress reads, shared with the api service.
	waves.Ledger
	// Wave is the open wave, 1-based; 0 before the first starts.
	Wave  int
	Waves []WaveState
	// PolicyWaived is the wave whose failure policy an operator waived by
	// resuming a job the policy had paused: the policy applies again from
	// the next wave.
	PolicyWaived int
	// LastSeq is the ROLLOUT stream sequence of the job's last event; the
	// next append expects it (optimistic concurrency).
	LastSeq uint64

	pausedWave int
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
			Ledger: waves.NewLedger(d.JobID, time.Duration(d.Spec.DeviceTimeout)), retracted: map[events.DeviceRef]bool{}}
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
		if err := j.Ledger.Apply(e.Type, d); err != nil {
			return j, err
		}
		j.Status, j.StartedAt = events.RolloutRunning, e.Time
		j.Waves = make([]WaveState, len(j.Plan))
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
	case events.TypeRolloutDevicesSent, events.TypeRolloutDevicesRetried:
		if err := j.Ledger.Apply(e.Type, d); err != nil {
			return j, err
		}
	case events.TypeRolloutDevicesRetracted:
		for _, ref := range d.Devices {
			if j.WaveOf(ref) > 0 {
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

// Send is one device's desired state to send: which wave and attempt.
type Send = waves.Send

// Due returns up to limit devices of the started waves whose desired state
// is still to be sent, in plan order.
func (j *Job) Due(limit int) []Send { return j.DueIn(j.Wave, limit) }

// Active reports whether the job may still act on devices (running or
// paused).
func (j *Job) Active() bool {
	return j.Status == events.RolloutRunning || j.Status == events.RolloutPaused
}
