package alerting

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// publisher publishes events asynchronously with their id as Nats-Msg-Id
// and waits for every acknowledgement in flush, so the loop never moves
// past (or snapshots) an outcome that is not stored.
type publisher struct {
	js      jetstream.JetStream
	pending []pending
	// alertsSeq is the highest ALERTS sequence acknowledged.
	alertsSeq uint64
	// published counts acknowledged events by stream.
	published map[string]uint64
	// holder, when set, goes on every event as HeaderHolder.
	holder string
	// stored, when set, is told the subject of every event stored for
	// the first time (not a duplicate of one already on the stream).
	stored func(subject string)
	// lose, when set, says which events are never sent: the tests' crash
	// between an event and its alert publish (Service.loseAlert).
	lose func(ev events.Event) bool
}

type pending struct {
	msg *nats.Msg
	fut jetstream.PubAckFuture
}

func newPublisher(js jetstream.JetStream) *publisher {
	return &publisher{js: js, published: map[string]uint64{}}
}

// add queues one event for subject, with the headers of hdr (nil: none)
// besides its id as Nats-Msg-Id.
func (p *publisher) add(subject string, ev events.Event, hdr nats.Header) error {
	data, err := ev.Marshal()
	if err != nil {
		return fmt.Errorf("marshal %s event %s: %w", ev.Type, ev.ID, err)
	}
	if p.lose != nil && p.lose(ev) {
		return nil
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	for k, v := range hdr {
		msg.Header[k] = v
	}
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	if p.holder != "" {
		msg.Header.Set(HeaderHolder, p.holder)
	}
	fut, err := p.js.PublishMsgAsync(msg)
	if err != nil {
		// A full window (ErrTooManyStalledMsgs) or a closed connection:
		// flush publishes it synchronously with retries.
		fut = nil
	}
	p.pending = append(p.pending, pending{msg: msg, fut: fut})
	return nil
}

// flush waits for every queued publish; a failed one is published again
// (its Nats-Msg-Id makes that safe), after the consume loop's backoff,
// until it is stored or ctx ends. What ctx's end leaves unstored stays
// queued for the next flush.
func (p *publisher) flush(ctx context.Context) error {
	for i, pd := range p.pending {
		ack, err := p.await(ctx, pd)
		if err != nil {
			p.pending = p.pending[:copy(p.pending, p.pending[i:])]
			return err
		}
		p.published[ack.Stream]++
		if p.stored != nil && !ack.Duplicate {
			p.stored(pd.msg.Subject)
		}
		if ack.Stream == events.StreamAlerts && ack.Sequence > p.alertsSeq {
			p.alertsSeq = ack.Sequence
		}
	}
	p.pending = p.pending[:0]
	return nil
}

// await returns pd's acknowledgement, publishing it again while it fails.
func (p *publisher) await(ctx context.Context, pd pending) (*jetstream.PubAck, error) {
	if pd.fut != nil {
		select {
		case ack := <-pd.fut.Ok():
			return ack, nil
		case <-pd.fut.Err():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	bo := consume.DefaultBackOff()
	for {
		var ack *jetstream.PubAck
		err := events.Retry(ctx, 3, func(ctx context.Context) error {
			var err error
			ack, err = p.js.PublishMsg(ctx, pd.msg)
			return err
		})
		if err == nil {
			return ack, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("publish to %s: %w", pd.msg.Subject, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(bo.NextBackOff()):
		}
	}
}

// publishNow queues events and flushes.
func (p *publisher) publishNow(ctx context.Context, subjects []string, evs []events.Event) error {
	for i, ev := range evs {
		if err := p.add(subjects[i], ev, nil); err != nil {
			return err
		}
	}
	return p.flush(ctx)
}
