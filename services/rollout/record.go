package rollout

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// Recorded is one stored event of the log, with where and when the stream
// stored it.
type Recorded struct {
	Seq     uint64
	Stored  time.Time
	Subject string
	Event   events.Event
}

// Recording is what the log holds about one job, for its replay (Replay)
// and its what-if (WhatIf): the job's ROLLOUT events, the fleet as it was
// when the job was created, and the SHADOW events stored since.
type Recording struct {
	JobID string
	// Job is the job's ROLLOUT events (rollout.{jobId}.>) in stream order.
	Job []Recorded
	// Shadow is the SHADOW events stored at or after the job's
	// job_created, in stream order: the job's devices' events, or every
	// device's when AllDevices (a CEL gate reads fleet-wide metrics).
	Shadow     []Recorded
	AllDevices bool
	// base is the fleet state folded from the SHADOW events stored before
	// job_created, as a snapshot each run starts from (fleet.State's JSON).
	base []byte
	// ReadAt is when the recording was read: a running job's replay checks
	// decisions up to then.
	ReadAt time.Time
	// Undecodable counts SHADOW messages that are no event envelope (the
	// live fold rejects them too); they are left out.
	Undecodable int
}

// Base returns a fresh copy of the fleet as it was when the job was created.
func (r *Recording) Base() (*fleet.State, error) {
	f := fleet.New()
	if r.base == nil {
		return f, nil
	}
	if err := f.UnmarshalJSON(r.base); err != nil {
		return nil, err
	}
	return f, nil
}

// SetBase records the fleet state the job started from (tests build
// recordings by hand; ReadRecording sets it from the stream).
func (r *Recording) SetBase(f *fleet.State) error {
	b, err := f.MarshalJSON()
	if err != nil {
		return fmt.Errorf("snapshot fleet: %w", err)
	}
	r.base = b
	return nil
}

// Spec is the job's spec as job_created recorded it.
func (r *Recording) Spec() (events.RolloutSpec, error) {
	for _, e := range r.Job {
		if e.Event.Type != events.TypeRolloutJobCreated {
			continue
		}
		var d events.RolloutData
		if err := e.Event.DecodeData(&d); err != nil {
			return events.RolloutSpec{}, fmt.Errorf("job %s: job_created (seq %d): %w", r.JobID, e.Seq, err)
		}
		if d.Spec == nil {
			return events.RolloutSpec{}, fmt.Errorf("job %s: job_created (seq %d) has no spec", r.JobID, e.Seq)
		}
		return *d.Spec, nil
	}
	return events.RolloutSpec{}, fmt.Errorf("job %s: the recording has no job_created", r.JobID)
}

// plan is the job's plan as job_started recorded it, and when it started.
func (r *Recording) plan() ([][]events.DeviceRef, time.Time, error) {
	for _, e := range r.Job {
		if e.Event.Type != events.TypeRolloutJobStarted {
			continue
		}
		var d events.RolloutData
		if err := e.Event.DecodeData(&d); err != nil {
			return nil, time.Time{}, fmt.Errorf("job %s: job_started (seq %d): %w", r.JobID, e.Seq, err)
		}
		if d.Plan == nil {
			return nil, time.Time{}, fmt.Errorf("job %s: job_started (seq %d) has no plan", r.JobID, e.Seq)
		}
		return d.Plan.Waves, e.Event.Time, nil
	}
	return nil, time.Time{}, fmt.Errorf("job %s never started: there is nothing to replay", r.JobID)
}

// ReadOptions say what ReadRecording keeps and how it reports progress.
type ReadOptions struct {
	// AllDevices keeps every device's SHADOW events, not only the job's
	// (set it for a CEL gate; a job with one gets them anyway).
	AllDevices bool
	// Progress, when set, receives a progress line about every
	// ProgressEvery (default 1 s) while SHADOW is read.
	Progress      func(string)
	ProgressEvery time.Duration
}

// ReadRecording reads what the log holds about job jobID: its ROLLOUT
// events, and SHADOW from the start to where it ends now (events before
// the job's creation folded into the fleet the job started from). It
// only reads: nothing is recorded anywhere, an undecodable message
// included.
func ReadRecording(ctx context.Context, js jetstream.JetStream, jobID string, o ReadOptions) (*Recording, error) {
	if err := events.ValidateID("job id", jobID); err != nil {
		return nil, err
	}
	rec := &Recording{JobID: jobID, ReadAt: time.Now()}
	filter := events.SubjectRollout + "." + jobID + ".>"
	last, err := consume.LastMsg(ctx, js, events.StreamRollout, filter)
	switch {
	case err != nil:
		return nil, fmt.Errorf("find the events of job %s: %w", jobID, err)
	case last == nil:
		return nil, fmt.Errorf("no rollout job %q in the %s stream", jobID, events.StreamRollout)
	}
	lastJob := last.Sequence
	var bad error
	err = readTo(ctx, js, events.StreamRollout, []string{filter}, lastJob, func(m consume.Msg) {
		e, err := events.Decode(m.Data)
		if err != nil {
			bad = cmp(bad, fmt.Errorf("job %s: %s seq %d is not an event: %w", jobID, events.StreamRollout, m.Seq, err))
			return
		}
		rec.Job = append(rec.Job, Recorded{Seq: m.Seq, Stored: m.Stored, Subject: m.Subject, Event: e})
	})
	if err != nil {
		return nil, err
	}
	if bad != nil {
		return nil, bad
	}
	spec, err := rec.Spec()
	if err != nil {
		return nil, err
	}
	rec.AllDevices = o.AllDevices || spec.CELGate != ""
	created := rec.Job[0].Stored
	plan, _, perr := rec.plan()
	inJob := map[fleet.Key]bool{}
	if perr == nil {
		for _, w := range plan {
			for _, ref := range w {
				inJob[fleet.Key{TypeID: ref.TypeID, DeviceID: ref.DeviceID}] = true
			}
		}
	}

	info, err := consume.StreamInfo(ctx, js, events.StreamShadow)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", events.StreamShadow, err)
	}
	lastShadow := info.State.LastSeq
	base := fleet.New()
	every := o.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	began, lastLine := time.Now(), time.Now()
	var read uint64
	err = readTo(ctx, js, events.StreamShadow, nil, lastShadow, func(m consume.Msg) {
		read++
		if o.Progress != nil && time.Since(lastLine) >= every {
			lastLine = time.Now()
			o.Progress(fmt.Sprintf("read %s seq %d/%d (%.0f events/s), %d kept for job %s",
				events.StreamShadow, m.Seq, lastShadow, float64(read)/time.Since(began).Seconds(), len(rec.Shadow), jobID))
		}
		e, err := events.Decode(m.Data)
		if err != nil {
			rec.Undecodable++
			return
		}
		if m.Stored.Before(created) {
			// The live fold refuses what it cannot apply (REJECTED);
			// so does this one.
			_, _ = base.Apply(m.Seq, e)
			return
		}
		if !rec.AllDevices {
			t, d, ok := events.DeviceFromSubject(m.Subject)
			if !ok || !inJob[fleet.Key{TypeID: t, DeviceID: d}] {
				return
			}
		}
		e.Data = bytes.Clone(e.Data)
		rec.Shadow = append(rec.Shadow, Recorded{Seq: m.Seq, Stored: m.Stored, Subject: m.Subject, Event: e})
	})
	if err != nil {
		return nil, err
	}
	if err := rec.SetBase(base); err != nil {
		return nil, err
	}
	return rec, nil
}

// readTo hands fn every message of stream (on subjects, when set) from
// the start through sequence last, in order, undecoded: the shared consume
// loop, stopped at last. last must be the sequence of a message it hands
// over, or the read waits for one.
func readTo(ctx context.Context, js jetstream.JetStream, stream string, subjects []string, last uint64, fn func(m consume.Msg)) error {
	err := consume.ReadRange(ctx, js, stream, subjects, 1, last, func(m consume.Msg) (bool, error) {
		fn(m)
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	return nil
}
