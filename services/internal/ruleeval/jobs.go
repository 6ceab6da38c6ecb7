package ruleeval

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/otawatch/otawatch/events"
)

// Jobs is the fold of the ROLLOUT stream that rules need: each job's
// status, target and current wave, and which job is "the" active one. Like
// fleet.State it takes time only from events.
type Jobs struct {
	jobs map[string]*Job
	// current is the job most recently started, resumed or given a wave.
	current string
	// LastSeq is the stream sequence of the last applied ROLLOUT event.
	LastSeq uint64
}

// NewJobs returns an empty fold.
func NewJobs() *Jobs { return &Jobs{jobs: map[string]*Job{}} }

// Job returns a job by id (the zero Job with that id when unknown).
func (j *Jobs) Job(id string) Job {
	if id == "" {
		return Job{}
	}
	if job := j.jobs[id]; job != nil {
		return *job
	}
	return Job{ID: id}
}

// Current returns the job fleet rules see as `rollout`: the job most
// recently started, resumed or given a wave if it is still active, else
// the most recently started active job, else the last current job (not
// active), else the zero Job.
func (j *Jobs) Current() Job {
	if c := j.jobs[j.current]; c != nil && c.Active() {
		return *c
	}
	var best *Job
	for _, job := range j.jobs {
		if job.Active() && (best == nil || job.StartedAt.After(best.StartedAt) ||
			job.StartedAt.Equal(best.StartedAt) && job.ID > best.ID) {
			best = job
		}
	}
	if best != nil {
		return *best
	}
	if c := j.jobs[j.current]; c != nil {
		return *c
	}
	return Job{}
}

// Len is the number of known jobs.
func (j *Jobs) Len() int { return len(j.jobs) }

// Apply folds one ROLLOUT event. Other event types, and rollout types that
// do not change what rules see (devices_sent, wave_gated), are ignored; a
// malformed event is an error and changes nothing.
func (j *Jobs) Apply(seq uint64, e events.Event) (bool, error) {
	name := events.RolloutEventName(e.Type)
	if name == "" {
		return false, nil
	}
	var d events.RolloutData
	if err := e.DecodeData(&d); err != nil {
		return false, err
	}
	if err := events.ValidateID("job id", d.JobID); err != nil {
		return false, fmt.Errorf("rollout event %s: %w", e.ID, err)
	}
	job := j.jobs[d.JobID]
	if job == nil {
		job = &Job{ID: d.JobID}
	}
	changed := true
	switch e.Type {
	case events.TypeRolloutJobCreated:
		job.Status = events.RolloutCreated
		job.CreatedAt = e.Time
		if d.Target != nil {
			job.TargetVersion = d.Target.Version
		} else if d.Spec != nil {
			job.TargetVersion = d.Spec.Target.Version
		}
	case events.TypeRolloutJobStarted:
		job.Status = events.RolloutRunning
		job.StartedAt = e.Time
		j.current = d.JobID
	case events.TypeRolloutJobResumed:
		job.Status = events.RolloutRunning
		j.current = d.JobID
	case events.TypeRolloutJobPaused:
		job.Status = events.RolloutPaused
	case events.TypeRolloutJobAborted:
		job.Status = events.RolloutAborted
	case events.TypeRolloutJobCompleted:
		job.Status = events.RolloutCompleted
	case events.TypeRolloutWaveStarted:
		if d.Wave > job.Wave {
			job.Wave = d.Wave
			job.WaveStartedAt = e.Time
		}
		if job.Status == "" || job.Status == events.RolloutCreated {
			job.Status = events.RolloutRunning
			if job.StartedAt.IsZero() {
				job.StartedAt = e.Time
			}
		}
		j.current = d.JobID
	default:
		changed = false
	}
	j.jobs[d.JobID] = job
	if seq > j.LastSeq {
		j.LastSeq = seq
	}
	return changed, nil
}

type jobsSnapshot struct {
	LastSeq uint64 `json:"lastSeq"`
	Current string `json:"current"`
	Jobs    []*Job `json:"jobs"`
}

// MarshalJSON serialises the fold for a snapshot.
func (j *Jobs) MarshalJSON() ([]byte, error) {
	s := jobsSnapshot{LastSeq: j.LastSeq, Current: j.current, Jobs: make([]*Job, 0, len(j.jobs))}
	for _, job := range j.jobs {
		s.Jobs = append(s.Jobs, job)
	}
	sort.Slice(s.Jobs, func(a, b int) bool { return s.Jobs[a].ID < s.Jobs[b].ID })
	return json.Marshal(s)
}

// UnmarshalJSON restores a fold written by MarshalJSON.
func (j *Jobs) UnmarshalJSON(b []byte) error {
	var s jobsSnapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("decode jobs snapshot: %w", err)
	}
	*j = *NewJobs()
	j.LastSeq, j.current = s.LastSeq, s.Current
	for _, job := range s.Jobs {
		j.jobs[job.ID] = job
	}
	return nil
}
