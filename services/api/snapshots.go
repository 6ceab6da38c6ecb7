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
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/fleet"
	"github.com/otawatch/otawatch/services/internal/lease"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// The snapshot index. Folding years of log for every "fleet at T" would
// take minutes, so one api instance (a lease) saves its live read model
// every http.snapshots.every events (or every interval when fewer came)
// into a JetStream KV bucket, and a query starts from the newest snapshot
// at or before T and folds only what came after it.
//
// A snapshot is the model's fleet, jobs (with their wave ledgers) and
// active alerts, as gzip'd JSON, with the position of each stream it
// covers: the last sequence and when that message was stored. It serves
// any instant at or after the latest of those times (its At), and a
// query folds each stream from the snapshot's sequence on to the first
// message stored after the instant. Nothing is taken from the snapshot
// that the log does not say: it is the fold of the log's first N
// messages, so starting from it gives what folding them again would.
//
// Layout in the bucket (history 1, so a key holds one value):
//
//	index              the kept snapshots (snapshotIndex), oldest first
//	slot.{n}.{i}       part i of the snapshot in slot n (512 KiB each;
//	                   a KV value is bounded by the server's max payload)
//
// Storage is bounded: at most http.snapshots.keep snapshots, in slots
// 0..keep-1, so at most keep x parts keys. Past keep, the snapshot whose
// removal leaves the smallest gap (in events) between its neighbours is
// removed (its parts purged), so the kept ones spread over the history
// and the newest is always there: a query folds at most about (events in
// the log) / keep events, or every events near the present.
//
// Safety: the index is written first without a removed snapshot, then
// the new parts, then the index with the new one, each index write
// conditional on the revision the writer read (a deposed writer's write
// fails). A reader checks a snapshot's SHA-256 and that its positions
// name the messages the streams hold (sequence and stored time); any
// snapshot that fails (being rewritten, from another log) is skipped for
// the next older one, and with none the fold starts at the log's start:
// slower, never wrong. Snapshots are derived data: removing them (or the
// bucket) costs only speed; no stream is ever deleted or purged.

const (
	snapshotIndexKey = "index"
	snapshotPartSize = 512 << 10
	// snapshotFormat is the version of snapshotState; a reader skips a
	// snapshot of another.
	snapshotFormat = 1
	// snapshotLeaseKey is the writer's lease key in its lease bucket.
	snapshotLeaseKey = "api-snapshots"
)

// SnapshotInfo describes one snapshot (an index entry).
type SnapshotInfo struct {
	Slot int `json:"slot"`
	// At is the latest stored time of the messages it covers: it serves
	// instants at or after it.
	At time.Time `json:"at"`
	// Streams are the positions it covers.
	Streams map[string]position `json:"streams"`
	// Events is the sum of the sequences: where it sits in the log.
	Events  uint64    `json:"events"`
	Devices int       `json:"devices"`
	Parts   int       `json:"parts"`
	Size    int       `json:"size"` // gzip'd bytes
	SHA256  string    `json:"sha256"`
	SavedAt time.Time `json:"savedAt"`
}

// snapshotIndex is the index value.
type snapshotIndex struct {
	Snapshots []SnapshotInfo `json:"snapshots"`
}

// snapshotState is a snapshot's content.
type snapshotState struct {
	Format  int                 `json:"format"`
	Streams map[string]position `json:"streams"`
	// Fleet is fleet.State's JSON (MarshalJSON).
	Fleet  json.RawMessage `json:"fleet"`
	Jobs   []jobSnapshot   `json:"jobs"`
	Alerts []alertView     `json:"alerts"`
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

func slotKey(slot, part int) string {
	return "slot." + strconv.Itoa(slot) + "." + strconv.Itoa(part)
}

// snapshotCopy is the model copied under its read lock, to be encoded
// after it is released: devices, jobs and alerts are copied by value (what
// they point to, a target, is replaced and never changed in place by the
// folds), ledgers encoded (their maps change in place).
type snapshotCopy struct {
	streams map[string]position
	fleet   fleetCopy
	jobs    []jobSnapshot
	alerts  []alertView
}

// copyForSnapshot copies what a snapshot holds.
func (m *model) copyForSnapshot() (*snapshotCopy, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c := &snapshotCopy{streams: map[string]position{}, fleet: fleetCopy{LastSeq: m.fleet.LastSeq, Devices: make([]fleet.Device, 0, m.fleet.Len())},
		jobs: make([]jobSnapshot, 0, len(m.jobs)), alerts: make([]alertView, 0, len(m.alerts))}
	for _, name := range pastStreams {
		c.streams[name] = m.pos[name]
	}
	m.fleet.Devices(func(d *fleet.Device) { c.fleet.Devices = append(c.fleet.Devices, *d) })
	for _, j := range m.jobs {
		l, err := json.Marshal(j.ledger)
		if err != nil {
			return nil, fmt.Errorf("encode job %s's ledger: %w", j.JobID, err)
		}
		c.jobs = append(c.jobs, jobSnapshot{jobView: *j, Ledger: l})
	}
	for _, a := range m.alerts {
		c.alerts = append(c.alerts, *a)
	}
	return c, nil
}

// encode returns the snapshot's JSON, in a stable order.
func (c *snapshotCopy) encode() ([]byte, error) {
	sortDevices(c.fleet.Devices)
	sort.Slice(c.jobs, func(i, j int) bool { return c.jobs[i].JobID < c.jobs[j].JobID })
	sort.Slice(c.alerts, func(i, j int) bool { return c.alerts[i].Key < c.alerts[j].Key })
	fb, err := json.Marshal(c.fleet)
	if err != nil {
		return nil, err
	}
	return json.Marshal(snapshotState{Format: snapshotFormat, Streams: c.streams, Fleet: fb, Jobs: c.jobs, Alerts: c.alerts})
}

// at is the latest stored time of the positions, and events their sum.
func snapshotPlace(streams map[string]position) (at time.Time, events uint64) {
	for _, p := range streams {
		if p.Stored.After(at) {
			at = p.Stored
		}
		events += p.Seq
	}
	return at, events
}

// restoreModel builds a model from a snapshot's JSON.
func restoreModel(b []byte) (*model, error) {
	var s snapshotState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	if s.Format != snapshotFormat {
		return nil, fmt.Errorf("snapshot format %d, this version reads %d", s.Format, snapshotFormat)
	}
	m := newModel()
	if err := m.fleet.UnmarshalJSON(s.Fleet); err != nil {
		return nil, err
	}
	for _, js := range s.Jobs {
		j := js.jobView
		if err := json.Unmarshal(js.Ledger, &j.ledger); err != nil {
			return nil, fmt.Errorf("job %s: %w", j.JobID, err)
		}
		m.jobs[j.JobID] = &j
	}
	for i := range s.Alerts {
		a := s.Alerts[i]
		m.alerts[a.Key] = &a
	}
	for name, p := range s.Streams {
		m.pos[name] = p
	}
	return m, nil
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

// readSnapshotParts reads, checks and decompresses one snapshot.
func readSnapshotParts(ctx context.Context, kv jetstream.KeyValue, info SnapshotInfo) ([]byte, error) {
	var zipped bytes.Buffer
	for i := 0; i < info.Parts; i++ {
		var e jetstream.KeyValueEntry
		err := events.Retry(ctx, 3, func(ctx context.Context) error {
			var err error
			e, err = kv.Get(ctx, slotKey(info.Slot, i))
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
			return nil, fmt.Errorf("part %d of %d: %w", i+1, info.Parts, err)
		}
		zipped.Write(e.Value())
	}
	sum := sha256.Sum256(zipped.Bytes())
	if hex.EncodeToString(sum[:]) != info.SHA256 {
		return nil, errors.New("checksum mismatch (rewritten meanwhile?)")
	}
	zr, err := gzip.NewReader(&zipped)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// loadSnapshotAt returns the model of the newest usable snapshot at or
// before at, or nil when there is none; warnings say what was skipped.
func loadSnapshotAt(ctx context.Context, js jetstream.JetStream, bucket string, at time.Time) (*model, *SnapshotInfo, []string) {
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
	var warnings []string
	for i := len(idx.Snapshots) - 1; i >= 0 && ctx.Err() == nil; i-- {
		info := idx.Snapshots[i]
		if info.At.After(at) {
			continue
		}
		b, err := readSnapshotParts(ctx, kv, info)
		var m *model
		if err == nil {
			m, err = restoreModel(b)
		}
		if err == nil {
			err = checkPositions(ctx, js, info.Streams)
		}
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("snapshot of %s (slot %d) skipped: %v", info.At.Format(time.RFC3339Nano), info.Slot, err))
			continue
		}
		return m, &info, warnings
	}
	return nil, nil, warnings
}

// checkPositions checks that the streams hold, at each position's
// sequence, a message stored when the snapshot says: the snapshot is of
// this log. A message aged out of its stream cannot be checked and passes.
func checkPositions(ctx context.Context, js jetstream.JetStream, streams map[string]position) error {
	for name, p := range streams {
		if p.Seq == 0 {
			continue
		}
		st, err := js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		msg, err := st.GetMsg(ctx, p.Seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s seq %d: %w", name, p.Seq, err)
		}
		if !msg.Time.Equal(p.Stored) {
			return fmt.Errorf("%s seq %d was stored at %s, the snapshot says %s: not this log", name, p.Seq,
				msg.Time.UTC().Format(time.RFC3339Nano), p.Stored.UTC().Format(time.RFC3339Nano))
		}
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

	kv    jetstream.KeyValue
	index snapshotIndex
	rev   uint64
	// last is when the newest snapshot was saved (or the writer began).
	last time.Time
	// written counts the snapshots this writer saved (tests read it).
	written int
}

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
		w.active(ctx)
		return nil
	})
}

// active is the writer's life while it holds the lease.
func (w *snapshotWriter) active(ctx context.Context) {
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
		if !w.due() {
			continue
		}
		if err := w.save(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("snapshot not saved; trying again later", "err", err)
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
	var newest map[string]position
	if n := len(w.index.Snapshots); n > 0 {
		newest = w.index.Snapshots[n-1].Streams
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
	c, err := w.m.copyForSnapshot()
	if err != nil {
		return err
	}
	state, err := c.encode()
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	var zipped bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zipped, gzip.BestSpeed)
	if _, err := zw.Write(state); err != nil {
		return fmt.Errorf("compress snapshot: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compress snapshot: %w", err)
	}
	b := zipped.Bytes()
	sum := sha256.Sum256(b)
	info := SnapshotInfo{Streams: c.streams, Devices: len(c.fleet.Devices), Size: len(b), SHA256: hex.EncodeToString(sum[:]),
		Parts: (len(b) + snapshotPartSize - 1) / snapshotPartSize, SavedAt: w.clock.Now().UTC()}
	info.At, info.Events = snapshotPlace(c.streams)

	kept, removed := thin(append(append([]SnapshotInfo(nil), w.index.Snapshots...), info), w.cfg.Keep)
	kept = kept[:len(kept)-1] // the new one, last, is added once written
	if len(removed) > 0 {
		if err := w.writeIndex(ctx, kept); err != nil {
			return err
		}
		for _, r := range removed {
			for i := 0; i < r.Parts; i++ {
				// Best effort: a leftover part costs space until its
				// slot is used again, never correctness.
				_ = w.kv.Purge(ctx, slotKey(r.Slot, i))
			}
		}
	}
	info.Slot = freeSlot(kept)
	for i := 0; i < info.Parts; i++ {
		part := b[i*snapshotPartSize : min((i+1)*snapshotPartSize, len(b))]
		if err := events.Retry(ctx, 3, func(ctx context.Context) error {
			_, err := w.kv.Put(ctx, slotKey(info.Slot, i), part)
			return err
		}); err != nil {
			return fmt.Errorf("write snapshot part %d of %d: %w", i+1, info.Parts, err)
		}
	}
	if err := w.writeIndex(ctx, append(kept, info)); err != nil {
		return err
	}
	w.last = w.clock.Now()
	w.written++
	w.log.Debug("snapshot saved", "at", info.At, "slot", info.Slot, "bytes", info.Size, "devices", info.Devices,
		"shadow_seq", info.Streams[events.StreamShadow].Seq)
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
