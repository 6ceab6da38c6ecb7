package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/fleet"
	"github.com/otawatch/otawatch/services/internal/lease"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/waves"
)

// The snapshot index. Folding years of log for every "fleet at T" would
// take minutes, so one api instance (a lease) saves its live read model
// every http.snapshots.every events (or every interval when fewer came)
// into a JetStream KV bucket, and a query starts from the newest snapshot
// before T and folds only what came after it.
//
// The model's parts are folds of one stream each: the fleet of SHADOW,
// the jobs (with their wave ledgers) of ROLLOUT, the active alerts of
// ALERTS; nothing in one is computed from another until the state is
// read. So a snapshot holds one section per stream, gzip'd JSON, each with
// its stream's position: the last sequence folded and when that message
// was stored. A query at T takes, stream by stream, the newest section
// whose message was stored at or before T, and folds that stream from its
// sequence on to the first message stored after T. Sections of one stream
// never depend on how far the others were: a SHADOW fold lagging behind
// ROLLOUT's when the snapshot was taken costs nothing. Nothing is taken
// from a section that the log does not say: it is the fold of its
// stream's first N messages, so starting from it gives the fleet state
// folding them again would. A finished job (completed or aborted) is kept
// without its ledger, the bulk of a large job: the fleet state never shows
// its waves again.
//
// Layout in the bucket (history 1, so a key holds one value):
//
//	index                   the kept snapshots (snapshotIndex), oldest first
//	slot.{n}.{STREAM}.{i}   part i of the STREAM section of the snapshot in
//	                        slot n (512 KiB each: a KV value is bounded by
//	                        the server's max payload)
//
// Storage is bounded: at most http.snapshots.keep snapshots, in slots
// 0..keep-1. Past keep, the snapshot whose removal leaves the smallest gap
// (in events) between its neighbours is removed (its parts purged), so the
// kept ones spread over the history and the newest is always there: a
// query folds at most about (events in the log) / keep events per stream,
// or every events near the present. The writer waits until the model has
// replayed the log after a start, so a restart does not index the history
// again.
//
// Safety: the index is written first without a removed snapshot, then the
// new parts, then the index with the new one, each index write conditional
// on the revision the writer read (a deposed writer's write fails). A
// reader checks a section's SHA-256 and that its position names the
// message its stream holds (sequence and stored time); a section that fails
// (being rewritten, from another log) is skipped for the next older one,
// and with none the stream is folded from its start: slower, never wrong.
// Snapshots are derived data: removing them (or the bucket) costs only
// speed; no stream is ever deleted or purged.

const (
	snapshotIndexKey = "index"
	snapshotPartSize = 512 << 10
	// snapshotFormat is the version of the sections' content; a reader
	// skips a snapshot of another.
	snapshotFormat = 1
	// snapshotLeaseKey is the writer's lease key in its lease bucket.
	snapshotLeaseKey = "api-snapshots"
)

// SnapshotInfo describes one snapshot (an index entry).
type SnapshotInfo struct {
	Slot   int `json:"slot"`
	Format int `json:"format"`
	// Sections are the model's parts, by stream.
	Sections map[string]SnapshotSection `json:"sections"`
	// Events is the sum of the sections' sequences: where the snapshot
	// sits in the log.
	Events  uint64    `json:"events"`
	Devices int       `json:"devices"`
	SavedAt time.Time `json:"savedAt"`
}

// SnapshotSection is one stream's part of a snapshot: the fold of the
// stream up to Seq, stored at Stored.
type SnapshotSection struct {
	Seq    uint64    `json:"seq"`
	Stored time.Time `json:"stored"`
	Parts  int       `json:"parts"`
	Size   int       `json:"size"` // gzip'd bytes
	SHA256 string    `json:"sha256"`
}

// size is the snapshot's gzip'd bytes.
func (s SnapshotInfo) size() int {
	n := 0
	for _, sec := range s.Sections {
		n += sec.Size
	}
	return n
}

// snapshotIndex is the index value.
type snapshotIndex struct {
	Snapshots []SnapshotInfo `json:"snapshots"`
}

// jobSnapshot is a job's view with its ledger.
type jobSnapshot struct {
	jobView
	Ledger json.RawMessage `json:"ledger"`
}

// fleetCopy has the JSON form of fleet.State's MarshalJSON.
type fleetCopy struct {
	LastSeq uint64         `json:"lastSeq"`
	Devices []fleet.Device `json:"devices"`
}

func partKey(slot int, stream string, part int) string {
	return "slot." + strconv.Itoa(slot) + "." + stream + "." + strconv.Itoa(part)
}

// snapshotCopy is the model copied under its read lock, to be encoded
// after it is released: devices, jobs and alerts are copied by value (what
// they point to, a target, is replaced and never changed in place by the
// folds), ledgers cloned (their maps change in place).
type snapshotCopy struct {
	pos    map[string]position
	fleet  fleetCopy
	jobs   []jobView
	alerts []alertView
}

// finished reports whether a job has ended (completed or aborted): the
// fleet state never shows its waves again.
func (j *jobView) finished() bool {
	return j.Status == events.RolloutCompleted || j.Status == events.RolloutAborted
}

// copyForSnapshot copies what a snapshot holds, in a few milliseconds for
// a large fleet: the folds wait for it.
func (m *model) copyForSnapshot() *snapshotCopy {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c := &snapshotCopy{pos: map[string]position{}, fleet: fleetCopy{LastSeq: m.fleet.LastSeq, Devices: make([]fleet.Device, 0, m.fleet.Len())},
		jobs: make([]jobView, 0, len(m.jobs)), alerts: make([]alertView, 0, len(m.alerts))}
	for _, name := range pastStreams {
		c.pos[name] = m.pos[name]
	}
	m.fleet.Devices(func(d *fleet.Device) { c.fleet.Devices = append(c.fleet.Devices, *d) })
	for _, j := range m.jobs {
		v := *j
		if j.finished() {
			v.ledger = waves.NewLedger(j.JobID, j.ledger.DeviceTimeout)
		} else {
			v.ledger = j.ledger.Clone()
		}
		c.jobs = append(c.jobs, v)
	}
	for _, a := range m.alerts {
		c.alerts = append(c.alerts, *a)
	}
	return c
}

// encode returns stream's section as JSON, in a stable order.
func (c *snapshotCopy) encode(stream string) ([]byte, error) {
	switch stream {
	case events.StreamShadow:
		sortDevices(c.fleet.Devices)
		return json.Marshal(c.fleet)
	case events.StreamRollout:
		sort.Slice(c.jobs, func(i, j int) bool { return c.jobs[i].JobID < c.jobs[j].JobID })
		jobs := make([]jobSnapshot, 0, len(c.jobs))
		for _, j := range c.jobs {
			l, err := json.Marshal(j.ledger)
			if err != nil {
				return nil, fmt.Errorf("encode job %s's ledger: %w", j.JobID, err)
			}
			jobs = append(jobs, jobSnapshot{jobView: j, Ledger: l})
		}
		return json.Marshal(jobs)
	case events.StreamAlerts:
		sort.Slice(c.alerts, func(i, j int) bool { return c.alerts[i].Key < c.alerts[j].Key })
		return json.Marshal(c.alerts)
	}
	return nil, fmt.Errorf("no snapshot section for stream %s", stream)
}

// restoreSection sets m's part folded from stream to the section's
// content, and the stream's position to the section's. On an error m is
// unchanged.
func (m *model) restoreSection(stream string, sec SnapshotSection, b []byte) error {
	switch stream {
	case events.StreamShadow:
		f := fleet.New()
		if err := f.UnmarshalJSON(b); err != nil {
			return err
		}
		m.fleet = f
	case events.StreamRollout:
		var list []jobSnapshot
		if err := json.Unmarshal(b, &list); err != nil {
			return fmt.Errorf("decode jobs: %w", err)
		}
		jobs := make(map[string]*jobView, len(list))
		for _, js := range list {
			j := js.jobView
			if err := json.Unmarshal(js.Ledger, &j.ledger); err != nil {
				return fmt.Errorf("job %s: %w", j.JobID, err)
			}
			jobs[j.JobID] = &j
		}
		m.jobs = jobs
	case events.StreamAlerts:
		var list []alertView
		if err := json.Unmarshal(b, &list); err != nil {
			return fmt.Errorf("decode alerts: %w", err)
		}
		alerts := make(map[string]*alertView, len(list))
		for i := range list {
			alerts[list[i].Key] = &list[i]
		}
		m.alerts = alerts
	default:
		return fmt.Errorf("no snapshot section for stream %s", stream)
	}
	m.pos[stream] = position{Seq: sec.Seq, Stored: sec.Stored}
	return nil
}

// readIndex reads the index and its revision (0 and an empty index when
// there is none).
func readIndex(ctx context.Context, kv jetstream.KeyValue) (snapshotIndex, uint64, error) {
	var idx snapshotIndex
	var e jetstream.KeyValueEntry
	err := events.Retry(ctx, 3, func(ctx context.Context) error {
		var err error
		e, err = kv.Get(ctx, snapshotIndexKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			e, err = nil, nil
		}
		return err
	})
	if err != nil {
		return idx, 0, fmt.Errorf("read snapshot index: %w", err)
	}
	if e == nil {
		return idx, 0, nil
	}
	if err := json.Unmarshal(e.Value(), &idx); err != nil {
		return idx, 0, fmt.Errorf("decode snapshot index: %w", err)
	}
	return idx, e.Revision(), nil
}

// readSection reads, checks and decompresses one section.
func readSection(ctx context.Context, kv jetstream.KeyValue, slot int, stream string, sec SnapshotSection) ([]byte, error) {
	var zipped bytes.Buffer
	for i := 0; i < sec.Parts; i++ {
		var e jetstream.KeyValueEntry
		err := events.Retry(ctx, 3, func(ctx context.Context) error {
			var err error
			e, err = kv.Get(ctx, partKey(slot, stream, i))
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				e = nil // removed: asking again will not bring it back
				return nil
			}
			return err
		})
		if err == nil && e == nil {
			err = errors.New("missing (removed meanwhile?)")
		}
		if err != nil {
			return nil, fmt.Errorf("part %d of %d: %w", i+1, sec.Parts, err)
		}
		zipped.Write(e.Value())
	}
	sum := sha256.Sum256(zipped.Bytes())
	if hex.EncodeToString(sum[:]) != sec.SHA256 {
		return nil, errors.New("checksum mismatch (rewritten meanwhile?)")
	}
	zr, err := gzip.NewReader(&zipped)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// loadSnapshotAt returns a model restored, stream by stream, from the
// newest usable section stored at or before at (a stream without one is
// left empty, to be folded from its start), the snapshots used by stream,
// and warnings saying what was skipped and why.
func loadSnapshotAt(ctx context.Context, js jetstream.JetStream, bucket string, at time.Time) (*model, map[string]SnapshotInfo, []string) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, []string{fmt.Sprintf("snapshot bucket %s: %v; folding from the start", bucket, err)}
	}
	idx, _, err := readIndex(ctx, kv)
	if err != nil {
		return nil, nil, []string{fmt.Sprintf("%v; folding from the start", err)}
	}
	m, used := newModel(), map[string]SnapshotInfo{}
	var warnings []string
	for _, stream := range pastStreams {
		for i := len(idx.Snapshots) - 1; i >= 0 && ctx.Err() == nil; i-- {
			info := idx.Snapshots[i]
			sec, ok := info.Sections[stream]
			if !ok || info.Format != snapshotFormat || sec.Stored.After(at) {
				continue
			}
			if sec.Seq == 0 {
				break // an empty stream then: nothing to start from
			}
			b, err := readSection(ctx, kv, info.Slot, stream, sec)
			if err == nil {
				err = checkPosition(ctx, js, stream, sec)
			}
			if err == nil {
				err = m.restoreSection(stream, sec, b)
			}
			if err != nil {
				warnings = append(warnings, fmt.Sprintf("%s section of the snapshot saved %s (slot %d) skipped: %v", stream,
					info.SavedAt.Format(time.RFC3339Nano), info.Slot, err))
				continue
			}
			used[stream] = info
			break
		}
	}
	if len(used) == 0 {
		return nil, nil, warnings
	}
	return m, used, warnings
}

// checkPosition checks that stream holds, at the section's sequence, a
// message stored when the section says: the snapshot is of this log. A
// message aged out of its stream cannot be checked and passes.
func checkPosition(ctx context.Context, js jetstream.JetStream, stream string, sec SnapshotSection) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	msg, err := st.GetMsg(ctx, sec.Seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s seq %d: %w", stream, sec.Seq, err)
	}
	if !msg.Time.Equal(sec.Stored) {
		return fmt.Errorf("%s seq %d was stored at %s, the snapshot says %s: not this log", stream, sec.Seq,
			msg.Time.UTC().Format(time.RFC3339Nano), sec.Stored.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// snapshotWriter saves the live model's snapshots while its instance holds
// the lease.
type snapshotWriter struct {
	cfg      SnapshotConfig
	js       jetstream.JetStream
	m        *model
	log      *slog.Logger
	clock    svc.Clock
	replicas int

	// ready reports whether the model has replayed its streams: while it
	// catches up its folds are at unrelated points of the log, and a
	// snapshot then would serve only instants after the furthest one.
	ready func() bool

	kv    jetstream.KeyValue
	index snapshotIndex
	rev   uint64
	// last is when the newest snapshot was saved (or the writer began);
	// after a failure nothing is tried before retryAt.
	last, retryAt time.Time
	// active is set while this instance holds the lease.
	active atomic.Bool
}

// snapshotRetryPause is how long the writer waits after a failed save.
const snapshotRetryPause = 10 * time.Second

// run writes snapshots while this instance holds the lease, until ctx
// ends. A failure is logged and tried again at the next tick; queries
// never depend on it.
func (w *snapshotWriter) run(ctx context.Context) {
	var l *lease.Lease
	err := consume.Retry(ctx, w.log, nil, "open the snapshot lease", func(ctx context.Context) error {
		var err error
		l, err = lease.Open(ctx, w.js, lease.Config{Bucket: w.cfg.LeaseBucket, Key: snapshotLeaseKey, Holder: lease.InstanceName(),
			What: "api snapshot", TTL: w.cfg.LeaseTTL, Replicas: w.replicas, Clock: w.clock, Log: w.log})
		return err
	})
	if err != nil {
		return // ctx ended
	}
	_ = l.Serve(ctx, func() {
		w.log.Info("snapshot writer standing by: another api instance holds the lease")
	}, func(ctx context.Context, _ func() bool) error {
		w.lead(ctx)
		return nil
	})
}

// lead is the writer's life while it holds the lease.
func (w *snapshotWriter) lead(ctx context.Context) {
	w.active.Store(true)
	defer w.active.Store(false)
	err := consume.Retry(ctx, w.log, nil, "open the snapshot bucket", func(ctx context.Context) error {
		kv, err := w.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      w.cfg.Bucket,
			Description: "otawatch api: snapshots of the read model, for the fleet at an instant",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    max(w.replicas, 1),
		})
		if err != nil {
			return err
		}
		w.kv = kv
		return w.reload(ctx)
	})
	if err != nil {
		return
	}
	w.last = w.clock.Now()
	if n := len(w.index.Snapshots); n > 0 {
		w.last = w.index.Snapshots[n-1].SavedAt
	}
	tick := time.NewTicker(min(w.cfg.Interval, 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !w.ready() || w.clock.Now().Before(w.retryAt) || !w.due() {
			continue
		}
		if err := w.save(ctx); err != nil && ctx.Err() == nil {
			w.retryAt = w.clock.Now().Add(snapshotRetryPause)
			w.log.Warn("snapshot not saved; trying again later", "err", err, "retry_in", snapshotRetryPause)
			if rerr := w.reload(ctx); rerr != nil {
				w.log.Warn("reload the snapshot index", "err", rerr)
			}
		}
	}
}

func (w *snapshotWriter) reload(ctx context.Context) error {
	idx, rev, err := readIndex(ctx, w.kv)
	if err != nil {
		return err
	}
	w.index, w.rev = idx, rev
	return nil
}

// due reports whether the model has moved past the newest snapshot on no
// stream backwards (a restarted model catching up is behind it) and by
// Every events, or by any for Interval.
func (w *snapshotWriter) due() bool {
	w.m.mu.RLock()
	var ahead uint64
	behind := false
	var newest map[string]SnapshotSection
	if n := len(w.index.Snapshots); n > 0 {
		newest = w.index.Snapshots[n-1].Sections
	}
	for _, name := range pastStreams {
		seq, had := w.m.pos[name].Seq, newest[name].Seq
		if seq < had {
			behind = true
		}
		if seq > had {
			ahead += seq - had
		}
	}
	w.m.mu.RUnlock()
	if behind || ahead == 0 {
		return false
	}
	return ahead >= uint64(w.cfg.Every) || w.clock.Now().Sub(w.last) >= w.cfg.Interval
}

// save writes one snapshot of the live model (see the top of the file for
// the order of the writes).
func (w *snapshotWriter) save(ctx context.Context) error {
	c := w.m.copyForSnapshot()
	info := SnapshotInfo{Format: snapshotFormat, Sections: map[string]SnapshotSection{}, Devices: len(c.fleet.Devices), SavedAt: w.clock.Now().UTC()}
	data := map[string][]byte{}
	for _, stream := range pastStreams {
		state, err := c.encode(stream)
		if err != nil {
			return fmt.Errorf("encode the %s section: %w", stream, err)
		}
		var zipped bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&zipped, gzip.BestSpeed)
		if _, err := zw.Write(state); err != nil {
			return fmt.Errorf("compress the %s section: %w", stream, err)
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("compress the %s section: %w", stream, err)
		}
		b := zipped.Bytes()
		sum := sha256.Sum256(b)
		p := c.pos[stream]
		info.Sections[stream] = SnapshotSection{Seq: p.Seq, Stored: p.Stored, Size: len(b), SHA256: hex.EncodeToString(sum[:]),
			Parts: (len(b) + snapshotPartSize - 1) / snapshotPartSize}
		info.Events += p.Seq
		data[stream] = b
	}

	kept, removed := thin(append(append([]SnapshotInfo(nil), w.index.Snapshots...), info), w.cfg.Keep)
	kept = kept[:len(kept)-1] // the new one, last, is added once written
	if len(removed) > 0 {
		if err := w.writeIndex(ctx, kept); err != nil {
			return err
		}
		for _, r := range removed {
			for stream, sec := range r.Sections {
				for i := 0; i < sec.Parts; i++ {
					// Best effort: a leftover part costs space until
					// its slot is used again, never correctness.
					_ = w.kv.Purge(ctx, partKey(r.Slot, stream, i))
				}
			}
		}
	}
	info.Slot = freeSlot(kept)
	for _, stream := range pastStreams {
		b, sec := data[stream], info.Sections[stream]
		for i := 0; i < sec.Parts; i++ {
			part := b[i*snapshotPartSize : min((i+1)*snapshotPartSize, len(b))]
			if err := events.Retry(ctx, 3, func(ctx context.Context) error {
				_, err := w.kv.Put(ctx, partKey(info.Slot, stream, i), part)
				return err
			}); err != nil {
				return fmt.Errorf("write part %d of %d of the %s section: %w", i+1, sec.Parts, stream, err)
			}
		}
	}
	if err := w.writeIndex(ctx, append(kept, info)); err != nil {
		return err
	}
	w.last = w.clock.Now()
	w.log.Debug("snapshot saved", "slot", info.Slot, "bytes", info.size(), "devices", info.Devices,
		"shadow_seq", info.Sections[events.StreamShadow].Seq)
	return nil
}

// writeIndex replaces the index, on the condition that nobody else wrote
// it since this writer read it.
func (w *snapshotWriter) writeIndex(ctx context.Context, list []SnapshotInfo) error {
	b, err := json.Marshal(snapshotIndex{Snapshots: list})
	if err != nil {
		return fmt.Errorf("encode snapshot index: %w", err)
	}
	var rev uint64
	if w.rev == 0 {
		rev, err = w.kv.Create(ctx, snapshotIndexKey, b)
	} else {
		rev, err = w.kv.Update(ctx, snapshotIndexKey, b, w.rev)
	}
	if err != nil {
		return fmt.Errorf("write snapshot index (revision %d): %w", w.rev, err)
	}
	w.index, w.rev = snapshotIndex{Snapshots: list}, rev
	return nil
}

// thin removes snapshots from list (oldest first) until at most keep are
// left: each time the one, neither the oldest nor the newest, whose
// neighbours are closest together in events (the oldest such on a tie).
func thin(list []SnapshotInfo, keep int) (kept, removed []SnapshotInfo) {
	for len(list) > keep && len(list) > 2 {
		best, gap := 1, uint64(0)
		for i := 1; i < len(list)-1; i++ {
			if g := list[i+1].Events - list[i-1].Events; i == 1 || g < gap {
				best, gap = i, g
			}
		}
		removed = append(removed, list[best])
		list = append(list[:best:best], list[best+1:]...)
	}
	return list, removed
}

// freeSlot is the lowest slot no snapshot of list uses.
func freeSlot(list []SnapshotInfo) int {
	used := map[int]bool{}
	for _, s := range list {
		used[s.Slot] = true
	}
	n := 0
	for used[n] {
		n++
	}
	return n
}
