package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/events/jsonscan"
)

// publisher publishes the bridge's events to JetStream and hands each one's
// outcome (stored, stored before, or failed) to a callback, on the
// goroutine that receives the PubAcks.
//
// It is the request/reply a JetStream publish is, and what nats.go's
// PublishMsgAsync does, without what the bridge does not use: a future
// with two channels per message, a JSON decode of every PubAck, and a
// goroutine to wait on the futures. Those were about 5 us of CPU per
// report, a tenth of the bridge's. Every reply goes to one subscription on
// a private inbox; a publish whose reply does not come within the timeout
// fails, and so do those waiting when the connection comes back after a
// reconnect, whose replies were lost with the old connection (the
// Nats-Msg-Id makes a retry of a publish that did land harmless).
type publisher struct {
	nc      *nats.Conn
	sub     *nats.Subscription
	prefix  string
	timeout time.Duration
	// outcome is called once per publish that was sent.
	outcome func(p *pending, ack pubAck, err error)
	// fault is a test seam (hooks.publishFault): it picks the failure, if
	// any, that each publish meets. Nil in production.
	fault func(p *pending) publishFault

	mu      sync.Mutex
	closed  bool
	next    uint64
	waiting map[uint64]*pending
	stop    chan struct{}
	swept   chan struct{}
	status  chan nats.Status
}

// pubAck is the part of a JetStream PubAck the bridge uses.
type pubAck struct {
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
}

// errPubAckTimeout is a publish with no PubAck within the timeout.
var errPubAckTimeout = errors.New("no PubAck from JetStream in time")

// errReconnected is a publish sent before the connection to NATS was
// lost: its PubAck, if any, went with the old connection.
var errReconnected = errors.New("connection to NATS lost before the PubAck came")

// publishFault is a failure a test makes one publish meet (publisher.fault).
type publishFault int

const (
	// faultNone: the publish goes as usual.
	faultNone publishFault = iota
	// faultRefuse: the publish fails before anything is sent, as on a
	// closed connection.
	faultRefuse
	// faultLose: the message is lost on its way: nothing is stored, no
	// PubAck comes, and the publish times out.
	faultLose
	// faultLoseAck: the event is stored but its PubAck is lost: the
	// publish times out and its retry is a duplicate.
	faultLoseAck
)

// errInjected is the error of a faultRefuse publish.
var errInjected = errors.New("test: publish refused by an injected fault")

func newPublisher(nc *nats.Conn, timeout time.Duration, outcome func(*pending, pubAck, error)) (*publisher, error) {
	pb := &publisher{
		nc:      nc,
		prefix:  nc.NewRespInbox() + ".",
		timeout: timeout,
		outcome: outcome,
		waiting: make(map[uint64]*pending),
		stop:    make(chan struct{}),
		swept:   make(chan struct{}),
		status:  nc.StatusChanged(nats.CONNECTED),
	}
	sub, err := nc.Subscribe(pb.prefix+"*", pb.reply)
	if err != nil {
		nc.RemoveStatusListener(pb.status)
		return nil, fmt.Errorf("subscribe to PubAcks: %w", err)
	}
	// Replies are bounded by max_in_flight; never drop one as a slow
	// consumer.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		nc.RemoveStatusListener(pb.status)
		sub.Unsubscribe()
		return nil, err
	}
	pb.sub = sub
	go pb.sweep()
	return pb, nil
}

// publish sends p's event. On an error nothing was sent and outcome is not
// called; otherwise outcome will be.
func (pb *publisher) publish(p *pending) error {
	fault := faultNone
	if pb.fault != nil {
		if fault = pb.fault(p); fault == faultRefuse {
			return errInjected
		}
	}
	pb.mu.Lock()
	if pb.closed {
		pb.mu.Unlock()
		return errors.New("bridge publisher closed")
	}
	pb.next++
	id := pb.next
	p.token = id
	p.sent = time.Now()
	pb.waiting[id] = p
	pb.mu.Unlock()
	msg := &nats.Msg{
		Subject: p.subject,
		Reply:   pb.prefix + strconv.FormatUint(id, 36),
		Header: nats.Header{
			jetstream.MsgIDHeader:          []string{p.msgID},
			jetstream.ExpectedStreamHeader: []string{p.stream},
		},
		Data: p.body,
	}
	switch fault {
	case faultLose:
		return nil
	case faultLoseAck:
		// A reply subject one token longer than the PubAck
		// subscription's prefix+"*": nobody receives it.
		msg.Reply += ".lost"
	}
	if err := pb.nc.PublishMsg(msg); err != nil {
		pb.take(id)
		return err
	}
	return nil
}

// take removes and returns the publish waiting under id, nil if it is no
// longer waiting (timed out, or closed).
func (pb *publisher) take(id uint64) *pending {
	pb.mu.Lock()
	defer pb.mu.Unlock()
	p := pb.waiting[id]
	delete(pb.waiting, id)
	return p
}

// reply handles one PubAck.
func (pb *publisher) reply(m *nats.Msg) {
	id, err := strconv.ParseUint(m.Subject[len(pb.prefix):], 36, 64)
	if err != nil {
		return
	}
	p := pb.take(id)
	if p == nil {
		return // it timed out, and was or is being retried
	}
	ack, err := parsePubAck(m)
	pb.outcome(p, ack, err)
}

// sweep fails the publishes whose PubAck is overdue, and after a
// reconnect those sent before it.
func (pb *publisher) sweep() {
	defer close(pb.swept)
	tick := time.NewTicker(max(pb.timeout/4, 10*time.Millisecond))
	defer tick.Stop()
	var failed []*pending
	fail := func(sentBefore time.Time, err error) {
		pb.mu.Lock()
		for id, p := range pb.waiting {
			if p.sent.Before(sentBefore) {
				failed = append(failed, p)
				delete(pb.waiting, id)
			}
		}
		pb.mu.Unlock()
		for i, p := range failed {
			pb.outcome(p, pubAck{}, err)
			failed[i] = nil
		}
		failed = failed[:0]
	}
	for {
		select {
		case <-pb.stop:
			return
		case now := <-tick.C:
			fail(now.Add(-pb.timeout+1), errPubAckTimeout)
		case <-pb.status:
			// Connected again. What was sent before the connection was
			// lost has no PubAck coming; what nats.go buffered while
			// reconnecting goes out now and may have, but cannot be told
			// apart, and a retry of it is a harmless duplicate.
			fail(time.Now(), errReconnected)
		}
	}
}

// close stops the publisher and returns the publishes still waiting for a
// PubAck, for which outcome will not be called.
func (pb *publisher) close() []*pending {
	pb.mu.Lock()
	if pb.closed {
		pb.mu.Unlock()
		return nil
	}
	pb.closed = true
	left := make([]*pending, 0, len(pb.waiting))
	for id, p := range pb.waiting {
		left = append(left, p)
		delete(pb.waiting, id)
	}
	pb.mu.Unlock()
	close(pb.stop)
	<-pb.swept
	pb.nc.RemoveStatusListener(pb.status)
	pb.sub.Unsubscribe()
	return left
}

// parsePubAck reads a reply to a JetStream publish: the PubAck, or why the
// publish failed.
func parsePubAck(m *nats.Msg) (pubAck, error) {
	data := m.Data
	if len(data) == 0 {
		if status := m.Header.Get("Status"); status == "503" {
			return pubAck{}, errors.New("no JetStream stream answered (503 no responders)")
		} else if status != "" {
			return pubAck{}, fmt.Errorf("JetStream replied with status %s %s", status, m.Header.Get("Description"))
		}
		return pubAck{}, errors.New("empty PubAck")
	}
	if ack, ok := parsePubAckFast(data); ok {
		return ack, nil
	}
	var resp struct {
		pubAck
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return pubAck{}, fmt.Errorf("PubAck is not JSON: %w", err)
	}
	if e := resp.Error; e != nil {
		return pubAck{}, fmt.Errorf("JetStream refused the publish: %s (code %d, err_code %d)", e.Description, e.Code, e.ErrCode)
	}
	if resp.Stream == "" || resp.Seq == 0 {
		return pubAck{}, fmt.Errorf("PubAck without stream or sequence: %s", data)
	}
	return resp.pubAck, nil
}

// parsePubAckFast reads the PubAck the server sends for a stored message,
// {"stream":"NAME","seq":N} with an optional "domain" and "duplicate",
// each once, and nothing else, with events' scanner (events/jsonscan); ok
// is false for anything else (an error, a field it does not know, an
// escape), which parsePubAck hands to encoding/json.
func parsePubAckFast(b []byte) (ack pubAck, ok bool) {
	const stream, domain, seq, duplicate = 1, 2, 4, 8
	var seen int
	s := jsonscan.New(b)
	ok = s.Members(func(key []byte) bool {
		var bit int
		switch string(key) {
		case "stream":
			bit = stream
		case "domain":
			bit = domain
		case "seq":
			bit = seq
		case "duplicate":
			bit = duplicate
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		switch bit {
		case stream:
			v, ok := s.Plain()
			ack.Stream = streamName(v)
			return ok && len(v) > 0
		case domain:
			_, ok := s.Plain()
			return ok
		case seq:
			n, ok := s.Number()
			if !ok {
				return false
			}
			v, err := strconv.ParseUint(string(n), 10, 64)
			ack.Seq = v
			return err == nil && v > 0
		default: // duplicate
			switch s.Peek() {
			case 't':
				ack.Duplicate = true
				return s.Literal("true")
			case 'f':
				return s.Literal("false")
			}
			return false
		}
	})
	if !ok || !s.End() || seen&(stream|seq) != stream|seq {
		return pubAck{}, false
	}
	return ack, true
}

// streamName is the stream of a PubAck, without a new string for the
// streams the bridge publishes to.
func streamName(b []byte) string {
	switch string(b) {
	case events.StreamShadow:
		return events.StreamShadow
	case events.StreamRejected:
		return events.StreamRejected
	}
	return string(b)
}
