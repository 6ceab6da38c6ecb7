package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// hooks let tests stop the projector at a chosen point, as a crash would.
type hooks struct {
	// afterInsert runs when ClickHouse has accepted a batch and before any
	// of its messages is acked; an error stops the projector right there.
	afterInsert func(stream string, n int) error
}

// errStopped is returned by a pipeline that a hook stopped.
var errStopped = errors.New("projector stopped by a test hook")

// pipeline moves one stream's messages into ClickHouse: a reader goroutine
// decodes and projects each message once, in delivery order, while the
// batcher writes the previous batch; a batch is written when it holds
// batchSize items or when batchTimeout has passed since its first item, and
// its messages are acked only after ClickHouse accepted every row.
type pipeline struct {
	stream       string
	log          *slog.Logger
	w            *writer
	index        *desiredIndex // SHADOW only
	batchSize    int
	batchTimeout time.Duration

	// ack is true for the live durable consumer; replay's ordered consumer
	// acks nothing.
	ack bool
	// ackWait is the consumer's AckWait: a batch held longer (ClickHouse
	// down) is marked in progress so it is not redelivered meanwhile.
	ackWait time.Duration
	// js publishes REJECTED records; nil (replay) only logs and counts them.
	js jetstream.JetStream
	// lastSeq, when set, ends the run after the message with this stream
	// sequence (replay reads up to where the log was when it started).
	lastSeq uint64
	hooks   hooks
	// flushed is told about every written batch (progress, benchmarks).
	flushed func(n int, lastSeq uint64, rejected int)
	// counts, when set, counts the rows and batches written (the live
	// service's Stats).
	counts *streamCounts

	mu        sync.Mutex // guards current and keptAlive (writers share them)
	current   []*item
	keptAlive time.Time
}

// source yields the next message; it blocks until there is one or ctx ends.
type source func(ctx context.Context) (jetstream.Msg, error)

// run reads from next until ctx ends, next fails, or lastSeq is reached
// (then it returns nil after writing everything read).
func (p *pipeline) run(ctx context.Context, next source) error {
	items := make(chan *item, p.batchSize)
	readErr := make(chan error, 1)
	rctx, cancelRead := context.WithCancel(ctx)
	defer cancelRead()
	go func() {
		defer close(items)
		readErr <- p.read(rctx, next, items)
	}()
	p.w.keepalive = p.keepalive

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var timerC <-chan time.Time
	var batch []*item
	flush := func() error {
		timer.Stop()
		timerC = nil
		if len(batch) == 0 {
			return nil
		}
		err := p.flush(ctx, batch)
		batch = batch[:0:0]
		return err
	}
	for {
		select {
		case it, ok := <-items:
			if !ok {
				err := <-readErr
				if ferr := flush(); ferr != nil {
					return ferr
				}
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			batch = append(batch, it)
			if len(batch) == 1 {
				timer.Reset(p.batchTimeout)
				timerC = timer.C
			}
			if len(batch) >= p.batchSize {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-timerC:
			if err := flush(); err != nil {
				return err
			}
		case <-ctx.Done():
			p.release(batch)
			cancelRead()
			for it := range items {
				p.release([]*item{it})
			}
			return nil
		}
	}
}

// read is the reader goroutine: it projects each message and hands it on.
func (p *pipeline) read(ctx context.Context, next source, out chan<- *item) error {
	for {
		m, err := next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		md, err := m.Metadata()
		if err != nil {
			// Not a JetStream message: nothing to ack, nothing to project.
			p.log.Warn("message without jetstream metadata", "subject", m.Subject(), "err", err)
			continue
		}
		it := &item{stream: p.stream, seq: md.Sequence.Stream, subject: m.Subject(), stamp: md.Timestamp, raw: m.Data(), msg: m}
		project(it, p.index)
		select {
		case out <- it:
		case <-ctx.Done():
			return nil
		}
		if p.lastSeq > 0 && it.seq >= p.lastSeq {
			return nil
		}
	}
}

// flush writes one batch, then acks it (and records its poison events).
func (p *pipeline) flush(ctx context.Context, batch []*item) error {
	p.mu.Lock()
	p.current, p.keptAlive = batch, time.Now()
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.current = nil
		p.mu.Unlock()
	}()

	var (
		shadow   []shadowRow
		device   []deviceEventRow
		rollout  []rolloutRow
		alerts   []alertRow
		notifs   []notificationRow
		latest   = map[deviceKey]int{} // index in firmware
		firmware []shadowRow
		rejected = map[uint64]string{}
	)
	for _, it := range batch {
		switch it.kind {
		case kindNone:
			rejected[it.seq] = it.poison
		case kindShadow:
			shadow = append(shadow, it.shadow)
			// device_firmware keeps the highest sequence per device anyway;
			// sending only the batch's latest row per device saves rows.
			k := deviceKey{it.shadow.TypeID, it.shadow.DeviceID}
			if i, ok := latest[k]; !ok {
				latest[k] = len(firmware)
				firmware = append(firmware, it.shadow)
			} else if it.shadow.Seq > firmware[i].Seq {
				firmware[i] = it.shadow
			}
		case kindDevice:
			device = append(device, it.device)
		case kindRollout:
			rollout = append(rollout, it.rollout)
		case kindAlert:
			alerts = append(alerts, it.alert)
		case kindNotification:
			notifs = append(notifs, it.notification)
		}
	}
	// The tables of a batch are written at once, each on its own
	// connection, so the server works on them in parallel.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		refused []rejection
		failed  error
	)
	write := func(f func() ([]rejection, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := f()
			mu.Lock()
			defer mu.Unlock()
			refused = append(refused, r...)
			failed = errors.Join(failed, err)
		}()
	}
	if len(shadow) > 0 {
		write(func() ([]rejection, error) { return insert(ctx, p.w, shadowEventsTable, shadow) })
		write(func() ([]rejection, error) { return insert(ctx, p.w, deviceFirmwareTable, firmware) })
	}
	if len(device) > 0 {
		write(func() ([]rejection, error) { return insert(ctx, p.w, deviceEventsTable, device) })
	}
	if len(rollout) > 0 {
		write(func() ([]rejection, error) { return insert(ctx, p.w, rolloutEventsTable, rollout) })
	}
	if len(alerts) > 0 {
		write(func() ([]rejection, error) { return insert(ctx, p.w, alertsTable, alerts) })
	}
	if len(notifs) > 0 {
		write(func() ([]rejection, error) { return insert(ctx, p.w, notificationsTable, notifs) })
	}
	wg.Wait()
	if failed != nil {
		// Only ctx's end stops an insert: leave the batch unacked.
		p.release(batch)
		return nil
	}
	for _, r := range refused {
		if _, ok := rejected[r.seq]; !ok {
			rejected[r.seq] = r.reason
		}
	}
	if p.hooks.afterInsert != nil {
		if err := p.hooks.afterInsert(p.stream, len(batch)); err != nil {
			return fmt.Errorf("%w: %v", errStopped, err)
		}
	}
	for _, it := range batch {
		reason, poison := rejected[it.seq]
		if poison {
			if err := p.reject(ctx, it, reason); err != nil {
				p.release(batch)
				return nil
			}
			continue
		}
		if p.ack {
			// A lost ack only means a redelivery, which the tables absorb.
			if err := it.msg.Ack(); err != nil {
				p.log.Debug("ack failed", "stream_seq", it.seq, "err", err)
			}
		}
	}
	if p.counts != nil {
		p.counts.rows.Add(uint64(len(shadow) + len(firmware) + len(device) + len(rollout) + len(alerts) + len(notifs)))
		p.counts.batches.Add(1)
		p.counts.rejected.Add(uint64(len(rejected)))
	}
	if p.flushed != nil {
		p.flushed(len(batch), batch[len(batch)-1].seq, len(rejected))
	}
	return nil
}

// reject records a poison event on REJECTED (live only) and terminates its
// message, so the stream moves on and nothing silently disappears.
func (p *pipeline) reject(ctx context.Context, it *item, reason string) error {
	p.log.Warn("event cannot be projected", "stream", it.stream, "stream_seq", it.seq, "subject", it.subject, "reason", reason)
	if p.js == nil {
		return nil
	}
	ev, err := events.NewRejectedEvent("projector", events.SourceProjector, it.stream, it.seq, it.stamp, reason, it.raw)
	if err != nil {
		return err
	}
	id := ev.ID
	b, err := ev.Marshal()
	if err != nil {
		return err
	}
	pause := p.w.retryMin
	for {
		// Nats-Msg-Id makes a second record of the same event (after a
		// crash before the ack) a duplicate the stream drops.
		_, err = p.js.Publish(ctx, events.RejectedSubject("projector"), b, jetstream.WithMsgID(id))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.log.Warn("publish rejected event failed; retrying", "stream_seq", it.seq, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(pause*2, p.w.retryMax)
	}
	if p.ack {
		if err := it.msg.TermWithReason("projector: " + truncate(reason, 200)); err != nil {
			p.log.Debug("term failed", "stream_seq", it.seq, "err", err)
		}
	}
	return nil
}

// keepalive marks the held batch in progress, at most every third of
// AckWait, while ClickHouse is retried.
func (p *pipeline) keepalive() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ack || p.ackWait <= 0 || time.Since(p.keptAlive) < p.ackWait/3 {
		return
	}
	p.keptAlive = time.Now()
	for _, it := range p.current {
		_ = it.msg.InProgress()
	}
}

// release hands a batch back on a clean stop, so another instance (or this
// one restarted) gets it without waiting for AckWait.
func (p *pipeline) release(batch []*item) {
	if !p.ack {
		return
	}
	for _, it := range batch {
		_ = it.msg.Nak()
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
