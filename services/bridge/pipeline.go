package bridge

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// The path of one report: paho's inbound goroutine hands it to handle,
// which starts it if fewer than MaxInFlight reports are being stored and
// otherwise queues it, never blocking paho; a worker decodes it and
// publishes its event (start, send); its PubAck, on the publisher's reply
// goroutine, acknowledges the MQTT message (outcome, finish). A failed
// publish is sent again after a backoff (retry). When a report is
// acknowledged (or abandoned at shutdown) its slot goes to the oldest
// queued report (release).
//
// A device's reports are stored in the order the broker delivered them,
// which is the order the device sent them (MQTT keeps QoS 1 order within a
// session): every read model takes a device's latest state from the
// SHADOW stream's order. So at most one report per device is being
// stored. A report whose device has one in flight waits in that device's
// line (devices) and is started only when the one before it is stored
// and acknowledged, a retried publish included; different devices go in
// parallel. Sending the next report right after the previous one without
// waiting for its PubAck would arrive in order over one NATS connection,
// but not once a publish is retried: a lost publish, or a lost PubAck
// timing out, is sent again after the ones behind it. One JetStream round
// trip per report of a device is what the order costs. A fleet's many
// devices keep the slots full: with one report per device, or 50 each
// interleaved, the rate did not change (about 50k/s here). A few devices
// flooding back to back get about half (10 devices: ~25k/s against ~43k/s
// before), and they hold up the others whose reports are behind theirs in
// the broker's in-flight window (BenchmarkIngestDevices).
//
// The queue needs no bound of its own: the broker hands out at most its
// in-flight window of unacknowledged QoS 1 messages (Mosquitto's
// max_inflight_messages, the NATS listener's max_ack_pending) and keeps the
// rest in the session. Not blocking paho keeps it reading, so a dropped
// connection is noticed (and reported) even while JetStream is stalled.
//
// Workers are long-lived so that decoding does not grow a fresh goroutine
// stack per report, and no goroutine waits per report.

// runner is one session's state (Service.session).
type runner struct {
	s    *Service
	pb   *publisher
	work chan mqtt.Message

	mu      sync.Mutex
	stopped bool
	// active is the number of reports being stored (at most MaxInFlight,
	// never two of one device); queue holds the reports that may start
	// when a slot is free, oldest first.
	active int
	queue  []mqtt.Message
	// devices has an entry for every device (deviceKey) with a report
	// active or queued: the device's later reports, oldest first, which
	// wait for it to be stored.
	devices map[string][]mqtt.Message
	// wg counts reports received and not yet acknowledged or abandoned,
	// queued or active.
	wg sync.WaitGroup
	// loops counts the worker goroutines.
	loops sync.WaitGroup
	// stop closes when the session ends: no new report is taken.
	stop chan struct{}
	// hard ends when the drain time is over: reports still in flight give
	// up without an ack and come back in the next session.
	hard       context.Context
	cancelHard context.CancelFunc
	abandoned  atomic.Int64
}

// pending is one report between its publish and its MQTT ack.
type pending struct {
	m       mqtt.Message
	subject string
	msgID   string
	stream  string
	body    []byte
	// reason is set for a refused report (published to REJECTED).
	reason string
	// token and sent are the publisher's: the publish's reply id and
	// when it went out.
	token uint64
	sent  time.Time
	// attempt counts failed publishes; backoff gives the wait before the
	// next one (nil until the first failure).
	attempt int
	backoff backoff.BackOff
}

func newRunner(s *Service) (*runner, error) {
	hard, cancel := context.WithCancel(context.Background())
	r := &runner{
		s:          s,
		work:       make(chan mqtt.Message, s.cfg.MaxInFlight),
		devices:    make(map[string][]mqtt.Message, s.cfg.MaxInFlight),
		stop:       make(chan struct{}),
		hard:       hard,
		cancelHard: cancel,
	}
	pb, err := newPublisher(s.deps.NC, s.cfg.PublishTimeout, r.outcome)
	if err != nil {
		cancel()
		return nil, err
	}
	pb.fault = s.hooks.publishFault
	r.pb = pb
	workers := max(4, runtime.GOMAXPROCS(0))
	r.loops.Add(workers)
	for range workers {
		go func() {
			defer r.loops.Done()
			for m := range r.work {
				r.start(m)
			}
		}()
	}
	return r, nil
}

func (r *runner) onConnect(c mqtt.Client) {
	s := r.s
	tok := c.SubscribeMultiple(s.subscriptions(), nil) // nil: the default handler
	if !tok.WaitTimeout(s.cfg.ConnectTimeout) {
		s.deps.Health.Set(HealthComponent, errors.New("mqtt subscribe timed out"))
		s.log.Error("mqtt subscribe timed out", "topic", s.cfg.Topic, "presence_topic", s.cfg.PresenceTopic)
		return
	}
	if err := tok.Error(); err != nil {
		s.deps.Health.Set(HealthComponent, fmt.Errorf("mqtt subscribe: %w", err))
		s.log.Error("mqtt subscribe failed", "topic", s.cfg.Topic, "presence_topic", s.cfg.PresenceTopic, "err", err)
		return
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code > 1 {
				s.deps.Health.Set(HealthComponent, fmt.Errorf("mqtt subscribe %q refused (code %d)", topic, code))
				s.log.Error("mqtt subscribe refused", "topic", topic, "code", code)
				return
			}
		}
	}
	s.deps.Health.Set(HealthComponent, nil)
	s.log.Info("mqtt connected", "broker", s.cfg.Broker, "topic", s.cfg.Topic, "presence_topic", s.cfg.PresenceTopic)
}

// shutdown stops taking reports, drops the queued ones (unacknowledged:
// the broker resends them to the next session), waits up to drain for
// those being stored, then abandons the rest and stops the loops.
func (r *runner) shutdown(drain time.Duration) {
	r.mu.Lock()
	r.stopped = true
	close(r.stop)
	queued := len(r.queue)
	for _, later := range r.devices {
		queued += len(later)
	}
	r.queue = nil
	// Active reports still release their slots, and look here for a
	// device's next report: there is none any more.
	clear(r.devices)
	r.mu.Unlock()
	for range queued {
		r.s.inFlight.Add(-1)
		r.wg.Done()
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		r.s.log.Warn("drain time over, leaving reports unacknowledged for redelivery",
			"in_flight", r.s.inFlight.Load(), "drain_timeout", drain)
	}
	r.cancelHard()
	// Reports still waiting for their PubAck give up; if the event did
	// land, the redelivered report is a duplicate.
	for _, p := range r.pb.close() {
		r.abandon(p.m)
	}
	<-done
	// Every report has given its slot back, so nothing sends any more.
	close(r.work)
	r.loops.Wait()
}

// handle is paho's handler for every message, called on paho's inbound
// goroutine (OrderMatters), in the order the broker delivered them: it
// starts the report, queues it for a slot, or puts it in its device's
// line, and returns.
func (r *runner) handle(_ mqtt.Client, m mqtt.Message) {
	key := deviceKey(m.Topic())
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return // not acknowledged: the broker keeps it for the next session
	}
	r.wg.Add(1)
	r.s.inFlight.Add(1)
	if later, busy := r.devices[key]; busy {
		r.devices[key] = append(later, m)
		r.mu.Unlock()
		return
	}
	r.devices[key] = nil
	if r.active == r.s.cfg.MaxInFlight {
		r.queue = append(r.queue, m)
		r.mu.Unlock()
		return
	}
	r.active++
	r.mu.Unlock()
	r.work <- m // never blocks: it has room for every slot
}

// release ends report m (acknowledged or abandoned): the next report of
// its device, if one waits, joins the queue, and m's slot goes to the
// oldest queued report.
func (r *runner) release(m mqtt.Message) {
	key := deviceKey(m.Topic())
	r.mu.Lock()
	var next mqtt.Message
	if later, ok := r.devices[key]; !ok || len(later) == 0 {
		delete(r.devices, key)
	} else {
		next = later[0]
		later[0] = nil
		if len(later) == 1 {
			r.devices[key] = nil // the entry stays: next is the device's active report
		} else {
			r.devices[key] = later[1:]
		}
		if len(r.queue) > 0 {
			r.queue = append(r.queue, next)
			next = nil
		}
	}
	if next == nil && len(r.queue) > 0 {
		next = r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
	}
	if next == nil {
		r.active--
	}
	r.mu.Unlock()
	if next != nil {
		r.work <- next // the slot passes on; work has room for it
	}
	r.s.inFlight.Add(-1)
	r.wg.Done()
}

// deviceKey is the part of a report's topic that names its device,
// iot-2/type/{typeId}/id/{deviceId}: a device's reports, and only its, share
// it. Any other topic (refused anyway) is its own key.
func deviceKey(topic string) string {
	levels := 0
	for i := 0; i < len(topic); i++ {
		if topic[i] == '/' {
			if levels++; levels == 5 {
				return topic[:i]
			}
		}
	}
	return topic
}

// start decodes one report and publishes its event, or its refusal.
func (r *runner) start(m mqtt.Message) {
	if r.hard.Err() != nil {
		r.abandon(m)
		return
	}
	p, err := r.s.prepare(m)
	if err != nil {
		// Cannot happen with these types; leave it unacknowledged and say so.
		r.s.log.Error("encode event", "topic", m.Topic(), "err", err)
		r.abandon(m)
		return
	}
	r.send(p)
}

// send publishes p's event; its outcome comes to outcome, or to retry if
// it could not be sent.
func (r *runner) send(p *pending) {
	if r.hard.Err() != nil {
		r.abandon(p.m)
		return
	}
	err := error(nil)
	if h := r.s.hooks.beforePublish; h != nil {
		err = h()
	}
	if err == nil {
		err = r.pb.publish(p)
	}
	if err != nil {
		r.retry(p, err)
	}
}

// outcome is the publisher's callback with a publish's PubAck or error.
func (r *runner) outcome(p *pending, ack pubAck, err error) {
	if err != nil {
		r.retry(p, err)
		return
	}
	r.finish(p, ack)
}

// retry sends p again after a backoff, unless the drain time ends first.
// Nothing is acknowledged that is not stored; the Nats-Msg-Id makes a
// retry of a publish that did land harmless. p keeps its slot meanwhile,
// and its device's later reports wait behind it; other devices' do not.
func (r *runner) retry(p *pending, err error) {
	p.attempt++
	r.s.noteRefused(p, err)
	if p.backoff == nil {
		// The followers' policy (exponential with jitter, never giving
		// up), starting sooner: a publish is one round trip.
		p.backoff = consume.ExponentialBackOff(50*time.Millisecond, 5*time.Second)
	}
	wait := p.backoff.NextBackOff()
	r.s.log.Warn("jetstream publish failed, retrying", "subject", p.subject, "event_id", p.msgID,
		"attempt", p.attempt, "backoff", wait, "err", err)
	due := make(chan struct{})
	timer := r.s.clock.AfterFunc(wait, func() { close(due) })
	go func() {
		select {
		case <-due:
			r.s.retries.Add(1)
			r.send(p)
		case <-r.hard.Done():
			timer.Stop()
			r.abandon(p.m)
		}
	}()
}

func (r *runner) abandon(m mqtt.Message) {
	r.abandoned.Add(1)
	r.release(m)
}

// finish counts a stored report and acknowledges it on MQTT.
func (r *runner) finish(p *pending, ack pubAck) {
	s := r.s
	switch {
	case p.reason != "":
		s.rejected.Add(1)
		s.log.Warn("report rejected", "topic", p.m.Topic(), "event_id", p.msgID, "reason", p.reason,
			"bytes", len(p.m.Payload()))
	case ack.Duplicate:
		s.duplicates.Add(1)
	default:
		s.accepted.Add(1)
	}
	s.noteStored(p)
	if h := s.hooks.beforeAck; h == nil || h(p.m) {
		p.m.Ack()
	}
	r.release(p.m)
}

// prepare decodes a report into the event to publish: its SHADOW event, or
// its REJECTED event with the reason.
func (s *Service) prepare(m mqtt.Message) (*pending, error) {
	topic, payload := m.Topic(), m.Payload()
	if events.IsPresenceTopic(topic) {
		return s.preparePresence(m) // presence.go
	}
	data, err := s.dec.Decode(topic, payload, s.cfg.MaxPayload)
	if err == nil {
		p := &pending{
			m:       m,
			subject: events.ShadowReportedSubject(data.TypeID, data.DeviceID),
			msgID:   events.ReportEventID(data.TypeID, data.DeviceID, data.Firmware),
			stream:  events.StreamShadow,
		}
		p.body, err = reportEvent(p.msgID, p.subject, s.clock.Now(), &data)
		if err != nil {
			return nil, err
		}
		limit := s.deps.NC.MaxPayload()
		if limit <= 0 || int64(len(p.body)) <= limit {
			return p, nil
		}
		err = reject("event is %d bytes, over the NATS server's max_payload of %d", len(p.body), limit)
	}
	return s.prepareRefusal(m, err.Error())
}

// reportEvent is the JSON of the TypeShadowReported event of d.
func reportEvent(id, subject string, t time.Time, d *events.ShadowReportedData) ([]byte, error) {
	return events.Encode(id, events.SourceBridge, events.TypeShadowReported, subject, t, d)
}

func (s *Service) prepareRefusal(m mqtt.Message, reason string) (*pending, error) {
	topic, payload := m.Topic(), m.Payload()
	p := &pending{
		m: m,
		// Same topic and bytes, same id: a redelivered refusal is stored once.
		msgID:   events.IdentityID("rj", topic, string(payload)),
		subject: events.RejectedSubject(RejectSource),
		stream:  events.StreamRejected,
		reason:  reason,
	}
	data := events.NewRejected(RejectSource, reason, payload)
	data.Topic = topic
	var err error
	p.body, err = rejectedBody(p.msgID, p.subject, s.clock.Now(), data, min(s.deps.NC.MaxPayload(), int64(events.MaxRejectedEventSize)))
	return p, err
}

// rejectedBody encodes a rejected event, cutting the raw bytes further (and
// saying so in the reason) when the record would not fit in one NATS
// message or REJECTED's per-message limit.
func rejectedBody(id, subject string, t time.Time, data events.RejectedData, max int64) ([]byte, error) {
	full := data.Size
	reason := data.Reason
	for {
		body, err := events.Encode(id, events.SourceBridge, events.TypeRejected, subject, t, &data)
		if err != nil {
			return nil, err
		}
		if max <= 0 || int64(len(body)) <= max || len(data.Raw) == 0 {
			return body, nil
		}
		data.Raw, data.Truncated = data.Raw[:len(data.Raw)/2], true
		data.Reason = fmt.Sprintf("%s (raw cut to its first %d of %d bytes to fit a NATS message)", reason, len(data.Raw), full)
	}
}
