package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// bucket is a job's token bucket for messages toward devices.
type bucket struct {
	tokens float64
	last   time.Time
}

// take refills the bucket for the time since the last call at rate per
// second, capped at two ticks' worth (at least one message), and returns
// how many whole messages may go now.
func (b *bucket) take(now time.Time, rate float64, tick time.Duration) int {
	if b.last.IsZero() {
		b.last = now
	}
	b.tokens += rate * now.Sub(b.last).Seconds()
	b.last = now
	if burst := max(1, rate*2*tick.Seconds()); b.tokens > burst {
		b.tokens = burst
	}
	return int(b.tokens)
}

// drive is one tick of the driver: decide each running job, then send each
// one's next batch of desired state, then clear the next batch of each
// aborted job's retained desired state. Only the lease holder drives.
func (s *Service) drive(ctx context.Context) {
	now := s.clock.Now()
	s.mu.Lock()
	if !s.ready || !s.lease.Held() {
		s.mu.Unlock()
		return
	}
	var running, aborted []string
	for id, j := range s.jobs {
		if j.Status == events.RolloutRunning {
			running = append(running, id)
		}
	}
	sort.Strings(running)
	for _, id := range running {
		j := s.jobs[id]
		pend := Decide(j, s.fleet, now, s.extraGateLocked(j))
		if len(pend) == 0 {
			continue
		}
		if _, err := s.appendLocked(ctx, id, pend, now); err != nil {
			if errors.Is(err, errConflict) {
				s.log.Debug("decision not appended: job changed; next tick decides again", "job_id", id)
			} else {
				s.log.Error("append decision", "job_id", id, "err", err)
			}
			continue
		}
		for _, p := range pend {
			s.log.Info("rollout decision", "job_id", id, "event", events.RolloutEventName(p.Type), "wave", p.Data.Wave, "reason", p.Data.Reason)
		}
	}
	// Aborted jobs (by command, or by the policy just now) whose retained
	// desired state may still need clearing; settled ones are skipped
	// without a scan.
	for id, j := range s.jobs {
		if seq, ok := s.settled[id]; j.Status == events.RolloutAborted && (!ok || seq != j.LastSeq) {
			aborted = append(aborted, id)
		}
	}
	sort.Strings(aborted)
	s.mu.Unlock()
	for _, id := range running {
		if ctx.Err() != nil {
			return
		}
		if err := s.sendBatch(ctx, id, now); err != nil {
			s.log.Warn("send desired state", "job_id", id, "err", err)
		}
	}
	for _, id := range aborted {
		if ctx.Err() != nil {
			return
		}
		if err := s.retractBatch(ctx, id, now); err != nil {
			s.log.Warn("clear desired state of an aborted job", "job_id", id, "err", err)
		}
	}
}

// item is one device's desired state on its way.
type item struct {
	Send
	at time.Time // the desired event's time; the delta's timestamp
}

// budget returns how many devices job id may send to (or clear) now, its
// rate since the last take and at most MaxBatch, and its token bucket, to
// take what was sent from. s.mu must be held.
func (s *Service) budget(id string, j *Job, now time.Time) (int, *bucket) {
	b := s.buckets[id]
	if b == nil {
		b = &bucket{}
		s.buckets[id] = b
	}
	return sendBudget(b, j, now, s.cfg.Tick, s.cfg.MaxBatch), b
}

// sendBudget is how many devices a job may be sent at a tick at now: its
// bucket's whole tokens at the job's rate, at most maxBatch. The driver
// and the what-if simulation (whatif.go) both take it here.
func sendBudget(b *bucket, j *Job, now time.Time, tick time.Duration, maxBatch int) int {
	return min(b.take(now, j.Spec.Rate, tick), maxBatch)
}

// sendBatch sends the job's next batch of desired state, under its rate
// limit, in this order per device:
//
//  1. record the shadow.desired event (SHADOW, deterministic Nats-Msg-Id);
//  2. publish the delta to the device (MQTT QoS 1, retained), wait for PUBACK;
//  3. record devices_sent for the acknowledged ones (ROLLOUT).
//
// Recording first means no device is sent a desired state the log does not
// hold, and the desired event precedes every report it causes in SHADOW
// (the fleet fold counts only reports after it). A crash between 1 and 3
// leaves devices recorded but not marked: on the next pass (after a
// restart, or on another instance) those are looked up among the broker's
// retained messages. Found (same job, same timestamp) means the broker has
// it and the device gets it: mark, do not send. Not found means the publish
// never reached the broker: send it now. So a device receives its desired
// state once unless the broker acknowledged a publish and then lost the
// retained copy (or answered the lookup slower than rollout.retained_wait).
func (s *Service) sendBatch(ctx context.Context, id string, now time.Time) error {
	s.mu.Lock()
	j := s.jobs[id]
	if j == nil || j.Status != events.RolloutRunning {
		s.mu.Unlock()
		return nil
	}
	n, b := s.budget(id, j, now)
	if n < 1 {
		s.mu.Unlock()
		return nil
	}
	due := j.Due(n)
	var fresh, uncertain []item
	for _, d := range due {
		if rec, ok := s.desired[id][d.Ref]; ok && rec.attempt == d.Attempt {
			uncertain = append(uncertain, item{Send: d, at: rec.at})
		} else {
			fresh = append(fresh, item{Send: d, at: now})
		}
	}
	target := j.Spec.Target
	s.mu.Unlock()
	if len(due) == 0 || !s.client.IsConnectionOpen() {
		return nil
	}

	recorded, dup, err := s.recordDesired(ctx, id, target, fresh)
	uncertain = append(uncertain, dup...)
	if err != nil {
		return err
	}
	var confirmed, unconfirmed []item
	if len(uncertain) > 0 {
		confirmed, unconfirmed = s.checkRetained(ctx, id, uncertain)
	}
	if !s.lease.Held() {
		return nil // stepped down meanwhile: the next driver resolves these
	}
	toSend := append(recorded, unconfirmed...)
	acked := s.publishDeltas(ctx, id, target, toSend)
	if s.hooks.crashAfterPublish != nil && s.hooks.crashAfterPublish(len(acked)) {
		// A test's crash: the broker has the deltas, the marks never come.
		<-ctx.Done()
		return ctx.Err()
	}
	s.mu.Lock()
	b.tokens -= float64(len(toSend))
	s.stats.RetainedConfirmed += int64(len(confirmed))
	s.stats.Resent += int64(countAcked(unconfirmed, acked))
	s.stats.DeltasPublished += int64(len(acked))
	s.mu.Unlock()
	if len(confirmed)+len(acked) == 0 {
		return nil
	}
	return s.markSent(ctx, id, append(confirmed, acked...))
}

func countAcked(items, acked []item) int {
	in := map[events.DeviceRef]bool{}
	for _, it := range acked {
		in[it.Ref] = true
	}
	n := 0
	for _, it := range items {
		if in[it.Ref] {
			n++
		}
	}
	return n
}

// desiredEventID is the Nats-Msg-Id of a device's desired event: the same
// job, device, target and attempt are stored once.
func desiredEventID(job string, ref events.DeviceRef, version string, attempt int) string {
	return events.IdentityID("sd", job, ref.TypeID, ref.DeviceID, version, fmt.Sprint(attempt))
}

// desiredEvent is the shadow.desired event of one device's send at at: what
// the driver records, and what the what-if simulation folds for its sends.
func desiredEvent(job string, it Send, target events.DesiredFirmware, at time.Time) (events.Event, error) {
	data := events.ShadowDesiredData{TypeID: it.Ref.TypeID, DeviceID: it.Ref.DeviceID, JobID: job, Wave: it.Wave,
		Firmware: target, Attempt: it.Attempt}
	return events.New(desiredEventID(job, it.Ref, target.Version, it.Attempt), events.SourceRollout,
		events.TypeShadowDesired, it.Ref.String(), at, data)
}

// recordDesired appends the shadow.desired events of items and returns
// those it stored. Items the stream already held (a duplicate: recorded by
// an earlier try) come back separately with the stored time, to be
// checked like any unconfirmed send.
func (s *Service) recordDesired(ctx context.Context, job string, target events.DesiredFirmware, items []item) (stored, dup []item, err error) {
	type pending struct {
		it  item
		e   events.Event
		fut jetstream.PubAckFuture
	}
	var ps []pending
	for _, it := range items {
		e, err := desiredEvent(job, it.Send, target, it.at)
		if err != nil {
			return stored, dup, err
		}
		body, err := e.Marshal()
		if err != nil {
			return stored, dup, err
		}
		fut, err := s.deps.JS.PublishAsync(events.ShadowDesiredSubject(it.Ref.TypeID, it.Ref.DeviceID), body, jetstream.WithMsgID(e.ID))
		if err != nil {
			return stored, dup, fmt.Errorf("record desired state of %s: %w", it.Ref, err)
		}
		ps = append(ps, pending{it, e, fut})
	}
	timeout := time.NewTimer(events.APITimeout)
	defer timeout.Stop()
	var firstErr error
	for _, p := range ps {
		select {
		case ack := <-p.fut.Ok():
			if ack.Duplicate {
				old, err := s.storedEvent(ctx, events.StreamShadow, ack.Sequence)
				if err != nil {
					firstErr = cmp(firstErr, err)
					continue
				}
				it := p.it
				it.at = old.Time
				dup = append(dup, it)
				s.mu.Lock()
				s.noteDesired(job, it.Ref, it.Attempt, it.at)
				s.mu.Unlock()
				continue
			}
			stored = append(stored, p.it)
			s.mu.Lock()
			s.noteDesired(job, p.it.Ref, p.it.Attempt, p.it.at)
			s.stats.DesiredRecorded++
			s.mu.Unlock()
		case err := <-p.fut.Err():
			firstErr = cmp(firstErr, fmt.Errorf("record desired state of %s: %w", p.it.Ref, err))
		case <-timeout.C:
			return stored, dup, fmt.Errorf("record desired state: no ack within %s", events.APITimeout)
		case <-ctx.Done():
			return stored, dup, ctx.Err()
		}
	}
	return stored, dup, firstErr
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func deltaPayload(job string, target events.DesiredFirmware, at time.Time) []byte {
	b, _ := json.Marshal(events.ShadowDelta{
		State:     events.DeltaState{Firmware: &events.DeltaFirmware{Version: target.Version, Checksum: target.Checksum, URL: target.URL, JobID: job}},
		Timestamp: at.UTC(),
	})
	return b
}

// publishDeltas publishes each item's delta (QoS 1, retained) and returns
// the items the broker acknowledged within the publish timeout.
func (s *Service) publishDeltas(ctx context.Context, job string, target events.DesiredFirmware, items []item) []item {
	toks := make([]mqtt.Token, len(items))
	for i, it := range items {
		toks[i] = s.client.Publish(events.DeltaTopic(it.Ref.TypeID, it.Ref.DeviceID), 1, true, deltaPayload(job, target, it.at))
	}
	deadline := time.Now().Add(s.cfg.PublishTimeout)
	var acked []item
	for i, tok := range toks {
		if !tok.WaitTimeout(time.Until(deadline)) {
			s.log.Warn("desired state not acknowledged in time", "job_id", job, "device", items[i].Ref.String())
			continue
		}
		if err := tok.Error(); err != nil {
			s.log.Warn("publish desired state", "job_id", job, "device", items[i].Ref.String(), "err", err)
			continue
		}
		acked = append(acked, items[i])
	}
	_ = ctx
	return acked
}

// checkRetained looks for each item's delta among the broker's retained
// messages and splits the items into found (the broker has it: the device
// gets it) and not found.
func (s *Service) checkRetained(ctx context.Context, job string, items []item) (found, missing []item) {
	want := map[string]item{}
	filters := map[string]byte{}
	for _, it := range items {
		topic := events.DeltaTopic(it.Ref.TypeID, it.Ref.DeviceID)
		want[topic] = it
		filters[topic] = 0
	}
	var mu sync.Mutex
	got := map[string]bool{}
	all := make(chan struct{})
	tok := s.client.SubscribeMultiple(filters, func(_ mqtt.Client, m mqtt.Message) {
		var d events.ShadowDelta
		if json.Unmarshal(m.Payload(), &d) != nil || d.State.Firmware == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		it, ok := want[m.Topic()]
		if ok && !got[m.Topic()] && d.State.Firmware.JobID == job && d.Timestamp.Equal(it.at) {
			got[m.Topic()] = true
			if len(got) == len(want) {
				close(all)
			}
		}
	})
	wait := time.NewTimer(s.cfg.RetainedWait)
	defer wait.Stop()
	if tok.WaitTimeout(s.cfg.RetainedWait) && tok.Error() == nil {
		select {
		case <-all:
		case <-wait.C:
		case <-ctx.Done():
		}
	} else {
		s.log.Warn("subscribe to look up retained desired state", "job_id", job, "err", tok.Error())
	}
	topics := make([]string, 0, len(filters))
	for t := range filters {
		topics = append(topics, t)
	}
	s.client.Unsubscribe(topics...).WaitTimeout(time.Second)
	mu.Lock()
	defer mu.Unlock()
	for topic, it := range want {
		if got[topic] {
			found = append(found, it)
		} else {
			missing = append(missing, it)
		}
	}
	sortItems(found)
	sortItems(missing)
	s.log.Info("unconfirmed sends looked up on the broker", "job_id", job, "found", len(found), "missing", len(missing))
	return found, missing
}

func sortItems(items []item) {
	sort.Slice(items, func(a, b int) bool { return items[a].Ref.String() < items[b].Ref.String() })
}

// markSent appends devices_sent for items, one event per attempt (facts:
// see appendFact).
func (s *Service) markSent(ctx context.Context, job string, items []item) error {
	byAttempt := map[int][]events.DeviceRef{}
	for _, it := range items {
		byAttempt[it.Attempt] = append(byAttempt[it.Attempt], it.Ref)
	}
	attempts := make([]int, 0, len(byAttempt))
	for a := range byAttempt {
		attempts = append(attempts, a)
	}
	sort.Ints(attempts)
	for _, a := range attempts {
		p := Pending{events.TypeRolloutDevicesSent, events.RolloutData{JobID: job, Devices: byAttempt[a], Attempt: a}}
		if err := s.appendFact(ctx, job, p); err != nil {
			return fmt.Errorf("record devices sent: %w", err)
		}
	}
	return nil
}
