package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// onCommand answers one request on the command subjects. The actor comes
// from the sender's identity (events.CommandActor), never from the body; a
// message without a reply subject is not a request and is dropped, logged.
func (s *Service) onCommand(ctx context.Context, m *nats.Msg) {
	cmd, identity, ok := events.ParseRolloutCommandSubject(m.Subject)
	if m.Reply == "" {
		s.log.Warn("rollout command without a reply subject dropped", "subject", m.Subject)
		return
	}
	var req events.RolloutRequest
	var rep events.RolloutReply
	switch {
	case !ok:
		rep = replyErr(invalid("%q is not a rollout command subject (%s.CMD.IDENTITY)", m.Subject, events.RolloutCommandPrefix))
	case len(m.Data) > 0:
		var err error
		if req, err = DecodeRequest(cmd, m.Data); err != nil {
			rep = replyErr(err)
		}
	}
	if rep.Error == "" {
		actor, err := events.CommandActor(identity, m.Header.Get(events.RolloutActorHeader))
		if err != nil {
			rep = replyErr(&CommandError{Code: events.RolloutErrForbidden, Msg: err.Error()})
		}
		req.Actor = actor
	}
	if rep.Error == "" {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rep = s.Handle(wctx, cmd, req)
		cancel()
	}
	body, err := json.Marshal(rep)
	if err != nil {
		body, _ = json.Marshal(replyErr(fmt.Errorf("encode reply: %w", err)))
	}
	if err := m.Respond(body); err != nil {
		s.log.Warn("respond to rollout command", "cmd", cmd, "err", err)
	}
}

func replyErr(err error) events.RolloutReply {
	var ce *CommandError
	if errors.As(err, &ce) {
		return events.RolloutReply{Error: ce.Msg, Code: ce.Code}
	}
	return events.RolloutReply{Error: err.Error(), Code: events.RolloutErrUnavailable}
}

// Handle runs one rollout command and returns its reply (the command
// subjects' handler; exported for in-process callers).
func (s *Service) Handle(ctx context.Context, cmd string, req events.RolloutRequest) events.RolloutReply {
	if err := s.waitReady(ctx); err != nil {
		return replyErr(err)
	}
	now := s.clock.Now()
	switch cmd {
	case "list":
		s.mu.Lock()
		defer s.mu.Unlock()
		jobs := make([]events.RolloutJob, 0, len(s.jobs))
		for _, j := range s.jobs {
			jobs = append(jobs, s.viewLocked(j, now, false))
		}
		sort.Slice(jobs, func(a, b int) bool {
			if !jobs[a].CreatedAt.Equal(jobs[b].CreatedAt) {
				return jobs[a].CreatedAt.After(jobs[b].CreatedAt)
			}
			return jobs[a].ID < jobs[b].ID
		})
		return events.RolloutReply{Jobs: jobs}
	case "show":
		s.mu.Lock()
		defer s.mu.Unlock()
		j := s.jobs[req.JobID]
		if j == nil {
			return replyErr(&CommandError{Code: events.RolloutErrNotFound, Msg: fmt.Sprintf("no rollout job %q", req.JobID)})
		}
		v := s.viewLocked(j, now, true)
		return events.RolloutReply{Job: &v}
	case "delta":
		return s.delta(req)
	}
	if cmd == CmdCreate && req.Spec != nil && req.Spec.ID == "" {
		spec := *req.Spec
		spec.ID = newJobID(now)
		req.Spec = &spec
	}
	id := req.JobID
	if cmd == CmdCreate && req.Spec != nil {
		id = req.Spec.ID
	}
	var retried int
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		j := s.jobs[id]
		pend, err := Command(j, cmd, req, s.commandContextLocked(now))
		if err != nil {
			s.mu.Unlock()
			return replyErr(err)
		}
		before := lastSeq(j)
		j, err = s.appendLocked(ctx, id, pend, now)
		if errors.Is(err, errConflict) && attempt < 5 {
			s.mu.Unlock()
			s.waitFolded(ctx, id, before)
			continue
		}
		if err != nil {
			s.mu.Unlock()
			return replyErr(err)
		}
		if cmd == CmdRetryFailed {
			retried = len(pend[0].Data.Devices)
		}
		v := s.viewLocked(j, now, true)
		s.mu.Unlock()
		s.log.Info("rollout command", "cmd", cmd, "job_id", id, "status", j.Status)
		return events.RolloutReply{Job: &v, Retried: retried}
	}
}

func (s *Service) commandContextLocked(now time.Time) CommandContext {
	maxPlan := 0
	if s.deps.NC != nil {
		maxPlan = int(s.deps.NC.MaxPayload()) - 4096
	}
	return CommandContext{Now: now, Fleet: s.fleet, Jobs: s.jobs, Defaults: s.cfg, CheckCEL: checkCEL, MaxPlanBytes: maxPlan}
}

func newJobID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "r" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// delta is the difference between a device's desired and reported firmware:
// the body of GET .../shadow/delta. In sync (or never targeted) it is empty.
func (s *Service) delta(req events.RolloutRequest) events.RolloutReply {
	if err := events.ValidateID("type id", req.TypeID); err != nil {
		return replyErr(invalid("%v", err))
	}
	if err := events.ValidateID("device id", req.DeviceID); err != nil {
		return replyErr(invalid("%v", err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.fleet.Device(req.TypeID, req.DeviceID)
	if !ok {
		return replyErr(&CommandError{Code: events.RolloutErrNotFound, Msg: fmt.Sprintf("device %s/%s is unknown", req.TypeID, req.DeviceID)})
	}
	delta := DeltaOf(d)
	if j := s.jobs[d.JobID]; j != nil && j.Status == events.RolloutAborted {
		// An aborted job asks nothing of its devices any more.
		delta.State.Firmware = nil
	}
	return events.RolloutReply{Delta: delta}
}

// DeltaOf is a device's shadow delta: its desired firmware when the device
// has not reported completing it, nothing when in sync. The timestamp is
// the newest event the answer rests on (as the HTTP API answers it). It
// does not know the job's status: the caller leaves out the firmware of an
// aborted job.
func DeltaOf(d fleet.Device) *events.ShadowDelta {
	out := &events.ShadowDelta{Timestamp: d.LastSeen}
	if d.DesiredAt.After(out.Timestamp) {
		out.Timestamp = d.DesiredAt
	}
	if d.Target == nil || d.Status == events.StatusCompleted && d.Version == d.Target.Version {
		return out
	}
	out.State.Firmware = &events.DeltaFirmware{Version: d.Target.Version, Checksum: d.Target.Checksum, URL: d.Target.URL, JobID: d.JobID}
	return out
}
