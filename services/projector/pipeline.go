package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// hooks let tests stop the projector at a chosen point, as a crash would.
type hooks struct {
	// afterInsert runs when ClickHouse has accepted a batch and before any
	// of its messages is acked; an error stops the projector right there.
	afterInsert func(stream string, n int) error
}

// errStopped is returned by a projector that a hook stopped.
var errStopped = errors.New("projector stopped by a test hook")

// projection is what the projector does with one stream's events; the
// consume loop (consume.Batcher) reads, batches and acks them. prepare
// decodes and projects each event once, in delivery order, as it arrives;
// write puts a batch's rows into ClickHouse, every table at once.
type projection struct {
	stream string
	conn   driver.Conn
	log    *slog.Logger
	// index is the SHADOW stream's desired fold (nil for other streams);
	// js reads the desired events it misses (desiredIndex).
	index *desiredIndex
	js    jetstream.JetStream
	// health, when set, says whether ClickHouse takes this stream's rows.
	health *health
	hooks  hooks
	// counts, when set, counts rows and batches (the live service's Stats).
	counts *streamCounts
	// flushed, when set, is told about every batch done with: its size,
	// its last sequence and its poison events (replay's progress).
	flushed func(n int, lastSeq uint64, poison int)
}

// prepare projects one event to its row; an event that cannot be projected
// is poison, with the reason.
func (p *projection) prepare(m consume.Msg) (*item, error) {
	it := &item{stream: p.stream, seq: m.Seq, subject: m.Subject, raw: m.Data}
	project(it, p.index)
	if p.index != nil {
		p.index.seen(m.Seq)
	}
	if it.kind == kindNone {
		return nil, errors.New(it.poison)
	}
	return it, nil
}

// rows are a batch's rows by table.
type rows struct {
	shadow   []*shadowRow
	firmware []*shadowRow // the batch's latest report per device
	device   []*deviceEventRow
	rollout  []*rolloutRow
	alerts   []*alertRow
	notifs   []*notificationRow
}

func (r *rows) count() int {
	return len(r.shadow) + len(r.firmware) + len(r.device) + len(r.rollout) + len(r.alerts) + len(r.notifs)
}

// collect sorts a batch's rows by table; the rows stay in the items.
func collect(batch []consume.Item[*item]) *rows {
	var r rows
	var latest map[deviceKey]int // index in firmware
	for _, b := range batch {
		it := b.Value
		switch it.kind {
		case kindShadow:
			if latest == nil {
				latest = make(map[deviceKey]int, len(batch))
				r.shadow = make([]*shadowRow, 0, len(batch))
			}
			r.shadow = append(r.shadow, &it.shadow)
			// device_firmware keeps the highest sequence per device anyway;
			// sending only the batch's latest row per device saves rows.
			k := deviceKey{it.shadow.TypeID, it.shadow.DeviceID}
			if i, ok := latest[k]; !ok {
				latest[k] = len(r.firmware)
				r.firmware = append(r.firmware, &it.shadow)
			} else if it.shadow.Seq > r.firmware[i].Seq {
				r.firmware[i] = &it.shadow
			}
		case kindDevice:
			r.device = append(r.device, it.device)
		case kindRollout:
			r.rollout = append(r.rollout, it.rollout)
		case kindAlert:
			r.alerts = append(r.alerts, it.alert)
		case kindNotification:
			r.notifs = append(r.notifs, it.notification)
		}
	}
	return &r
}

// write inserts a batch's rows. It returns the events whose rows ClickHouse
// refused on their own, and an error when an insert failed for another
// reason (the consume loop writes the batch again after its backoff).
func (p *projection) write(ctx context.Context, batch []consume.Item[*item]) ([]consume.Rejection, error) {
	if err := p.jobs(ctx, batch); err != nil {
		return nil, err
	}
	r := collect(batch)
	// The tables of a batch are written at once, each on its own
	// connection, so the server works on them in parallel.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		refused []consume.Rejection
		failed  error
	)
	start := func(f func() ([]consume.Rejection, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rej, err := f()
			mu.Lock()
			defer mu.Unlock()
			refused = append(refused, rej...)
			failed = errors.Join(failed, err)
		}()
	}
	w := &writer{conn: p.conn, log: p.log}
	if len(r.shadow) > 0 {
		start(func() ([]consume.Rejection, error) { return insert(ctx, w, shadowEventsTable, r.shadow) })
		start(func() ([]consume.Rejection, error) { return insert(ctx, w, deviceFirmwareTable, r.firmware) })
	}
	if len(r.device) > 0 {
		start(func() ([]consume.Rejection, error) { return insert(ctx, w, deviceEventsTable, r.device) })
	}
	if len(r.rollout) > 0 {
		start(func() ([]consume.Rejection, error) { return insert(ctx, w, rolloutEventsTable, r.rollout) })
	}
	if len(r.alerts) > 0 {
		start(func() ([]consume.Rejection, error) { return insert(ctx, w, alertsTable, r.alerts) })
	}
	if len(r.notifs) > 0 {
		start(func() ([]consume.Rejection, error) { return insert(ctx, w, notificationsTable, r.notifs) })
	}
	wg.Wait()
	if failed != nil {
		p.health.set(p.stream, fmt.Errorf("clickhouse: %w", failed))
		return nil, failed
	}
	p.health.set(p.stream, nil)
	if p.hooks.afterInsert != nil {
		if err := p.hooks.afterInsert(p.stream, len(batch)); err != nil {
			return nil, consume.Fatal(fmt.Errorf("%w: %v", errStopped, err))
		}
	}
	if p.counts != nil {
		p.counts.rows.Add(uint64(r.count()))
	}
	return refused, nil
}

// jobs gives the batch's reports the job and wave of the last desired
// event before each, first reading the desired events the index misses
// up to the batch's last report (catchUp).
func (p *projection) jobs(ctx context.Context, batch []consume.Item[*item]) error {
	if p.index == nil {
		return nil
	}
	var last uint64
	for _, b := range batch {
		if b.Value.kind == kindShadow {
			last = max(last, b.Value.seq)
		}
	}
	if last == 0 {
		return nil
	}
	if err := catchUp(ctx, p.js, p.index, last); err != nil {
		return err
	}
	for _, b := range batch {
		if it := b.Value; it.kind == kindShadow {
			e, _ := p.index.at(deviceKey{it.shadow.TypeID, it.shadow.DeviceID}, it.seq)
			it.shadow.JobID, it.shadow.Wave = e.jobID, e.wave
		}
	}
	return nil
}

// written counts a batch the consume loop is done with.
func (p *projection) written(batch []consume.Item[*item], poison int) {
	if p.counts != nil {
		p.counts.batches.Add(1)
		p.counts.rejected.Add(uint64(poison))
	}
	if p.flushed != nil {
		p.flushed(len(batch), batch[len(batch)-1].Seq, poison)
	}
}

// batcher is the consume loop of one stream for this projection; cfg
// completes it with where to read from (durable or ordered) and how.
func (p *projection) batcher(js jetstream.JetStream, cfg consume.BatchConfig[*item]) *consume.Batcher[*item] {
	cfg.Stream = p.stream
	p.js = js
	cfg.Source, cfg.EventSource = "projector", events.SourceProjector
	cfg.Prepare, cfg.Write, cfg.Written = p.prepare, p.write, p.written
	cfg.Log = p.log
	return consume.NewBatcher(js, cfg)
}
