package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// needsRetract reports whether an aborted job must still clear a device's
// retained desired state: the device was sent the job's delta (marked
// sent, or its desired event recorded: a crash between record and mark
// leaves the broker maybe holding it), has reported neither completed nor
// failed since, and was not cleared yet. A device a later job has sent
// its own desired state is left alone: the retained message on its topic
// is that job's now, and clearing it would cancel the wrong rollout.
func needsRetract(j *Job, ref events.DeviceRef, fv FleetView) bool {
	if j.retracted[ref] {
		return false
	}
	d, known := fv.Device(ref.TypeID, ref.DeviceID)
	if known && d.Target != nil && d.JobID != j.ID && !d.DesiredAt.Before(j.StartedAt) {
		// Two active jobs never share a device (start refuses it), so
		// another job's desired state since this one started came after
		// the abort.
		return false
	}
	if known && d.Target != nil && d.JobID == j.ID {
		return d.JobStatus != fleet.JobCompleted && d.JobStatus != fleet.JobFailed
	}
	// Sent, but the fleet fold has not seen the desired event yet (or
	// shows an older job's): clear it to be safe, an empty topic is
	// harmless.
	return j.EverSent(ref)
}

// Retractions returns up to limit devices (limit < 1: all) of an aborted
// job whose retained desired state is still to be cleared, in plan order.
// It is nil for a job that is not aborted. Like Due it reads only the
// job's fold and the fleet, so a restarted orchestrator finds exactly the
// clears the stopped one did not record.
func Retractions(j *Job, fv FleetView, limit int) []events.DeviceRef {
	if j.Status != events.RolloutAborted {
		return nil
	}
	var out []events.DeviceRef
	for _, w := range j.Plan {
		for _, ref := range w {
			if needsRetract(j, ref, fv) {
				out = append(out, ref)
				if len(out) == limit {
					return out
				}
			}
		}
	}
	return out
}

// RetractCounts returns, for an aborted job, how many devices had their
// retained desired state cleared and how many are still to clear.
func RetractCounts(j *Job, fv FleetView) (retracted, pending int) {
	if j.Status != events.RolloutAborted {
		return 0, 0
	}
	return len(j.retracted), len(Retractions(j, fv, 0))
}

// Retracted reports whether the device's retained desired state was
// cleared after the job was aborted.
func (j *Job) Retracted(ref events.DeviceRef) bool { return j.retracted[ref] }

// retractBatch clears the retained desired state of an aborted job's next
// devices, under the job's rate limit (the same bucket its sends used):
//
//  1. publish a zero-length retained message to each device's delta topic
//     (QoS 1: the broker deletes the retained message), wait for PUBACK;
//  2. record devices_retracted for the acknowledged ones (ROLLOUT).
//
// Unlike a send nothing is recorded first: a clear is idempotent, so a
// crash between 1 and 2 only means the next pass (after a restart, or on
// another instance) clears those devices again, which is harmless. A
// device already installing cannot be stopped; the clear only keeps the
// delta from reaching devices that have not received it, or from being
// received again on a reconnect.
func (s *Service) retractBatch(ctx context.Context, id string, now time.Time) error {
	s.mu.Lock()
	j := s.jobs[id]
	if j == nil || j.Status != events.RolloutAborted {
		s.mu.Unlock()
		return nil
	}
	if seq, ok := s.settled[id]; ok && seq == j.LastSeq {
		s.mu.Unlock()
		return nil
	}
	n, b := s.budget(id, j, now)
	if n < 1 {
		s.mu.Unlock()
		return nil
	}
	due := Retractions(j, s.fleet, n)
	if len(due) == 0 {
		s.settled[id] = j.LastSeq
		if s.retractedHere[id] {
			delete(s.retractedHere, id)
			s.log.Info("aborted job's retained desired state cleared", "job_id", id, "devices", len(j.retracted))
		}
		s.mu.Unlock()
		return nil
	}
	var refs []events.DeviceRef
	for _, ref := range due {
		if !s.supersededLocked(j, ref) {
			refs = append(refs, ref)
		}
	}
	s.mu.Unlock()
	if len(refs) == 0 || !s.client.IsConnectionOpen() || !s.lease.Held() {
		return nil
	}

	acked := s.clearDeltas(id, refs)
	if s.hooks.crashAfterRetract != nil && s.hooks.crashAfterRetract(len(acked)) {
		// A test's crash: the broker cleared the topics, the marks never
		// come.
		<-ctx.Done()
		return ctx.Err()
	}
	s.mu.Lock()
	b.tokens -= float64(len(refs))
	s.stats.DeltasRetracted += int64(len(acked))
	s.mu.Unlock()
	if len(acked) == 0 {
		return nil
	}
	s.log.Debug("retained desired state cleared", "job_id", id, "devices", len(acked))
	err := s.appendFact(ctx, id, Pending{events.TypeRolloutDevicesRetracted, events.RolloutData{JobID: id, Devices: acked}})
	if err != nil {
		return fmt.Errorf("record devices retracted: %w", err)
	}
	s.mu.Lock()
	s.retractedHere[id] = true
	s.mu.Unlock()
	return nil
}

// supersededLocked reports whether a job started after j recorded a
// desired state for the device that the fleet fold may not show yet (the
// driver records and folds its own sends at once; the fleet follows the
// stream). Caller holds s.mu.
func (s *Service) supersededLocked(j *Job, ref events.DeviceRef) bool {
	for other, recs := range s.desired {
		if other == j.ID {
			continue
		}
		if _, ok := recs[ref]; !ok {
			continue
		}
		if o := s.jobs[other]; o != nil && o.StartedAt.After(j.StartedAt) {
			return true
		}
	}
	return false
}

// clearDeltas publishes a zero-length retained message (QoS 1) to each
// device's delta topic and returns the devices whose clear the broker
// acknowledged within the publish timeout.
func (s *Service) clearDeltas(job string, refs []events.DeviceRef) []events.DeviceRef {
	toks := make([]mqtt.Token, len(refs))
	for i, ref := range refs {
		toks[i] = s.client.Publish(events.DeltaTopic(ref.TypeID, ref.DeviceID), 1, true, []byte{})
	}
	deadline := time.Now().Add(s.cfg.PublishTimeout)
	var acked []events.DeviceRef
	for i, tok := range toks {
		if !tok.WaitTimeout(time.Until(deadline)) {
			s.log.Warn("clear of desired state not acknowledged in time", "job_id", job, "device", refs[i].String())
			continue
		}
		if err := tok.Error(); err != nil {
			s.log.Warn("clear desired state", "job_id", job, "device", refs[i].String(), "err", err)
			continue
		}
		acked = append(acked, refs[i])
	}
	return acked
}

// appendFact appends an event that records what was done toward devices
// (devices_sent, devices_retracted). A fact is valid in any job state, so
// a conflict only means waiting for the fold and trying again.
func (s *Service) appendFact(ctx context.Context, job string, p Pending) error {
	for try := 0; ; try++ {
		s.mu.Lock()
		before := lastSeq(s.jobs[job])
		_, err := s.appendLocked(ctx, job, []Pending{p}, s.clock.Now())
		s.mu.Unlock()
		if err == nil {
			return nil
		}
		if !errors.Is(err, errConflict) || try == 5 {
			return err
		}
		s.waitFolded(ctx, job, before)
	}
}
