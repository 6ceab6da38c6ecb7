package alerting

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
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
)

// The snapshot lives in a KV bucket as gzip'd JSON of the engine, split
// into parts under "state.{gen}.{i}" (a KV value is capped by the server's
// max payload), with the manifest under "manifest" written last: a reader
// sees the old snapshot or the new one, never half of one.
const (
	manifestKey = "manifest"
	partSize    = 512 << 10
)

// manifest says where a snapshot is and what it covers.
type manifest struct {
	Gen   uint64 `json:"gen"`
	Parts int    `json:"parts"`
	Size  int    `json:"size"`
	// SHA256 is of the gzip'd bytes, checked on load.
	SHA256 string `json:"sha256"`
	// The positions the state includes: a restart reads SHADOW and
	// ROLLOUT after them, and folds ALERTS after AlertsSeq.
	ShadowSeq  uint64    `json:"shadowSeq"`
	RolloutSeq uint64    `json:"rolloutSeq"`
	AlertsSeq  uint64    `json:"alertsSeq"`
	SavedAt    time.Time `json:"savedAt"`
}

func partKey(gen uint64, i int) string {
	return "state." + strconv.FormatUint(gen, 10) + "." + strconv.Itoa(i)
}

// openBucket creates or opens the snapshot bucket.
func openBucket(ctx context.Context, js jetstream.JetStream, name string, replicas int) (jetstream.KeyValue, error) {
	if replicas < 1 {
		replicas = 1
	}
	var kv jetstream.KeyValue
	err := events.Retry(ctx, 5, func(ctx context.Context) error {
		var err error
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      name,
			Description: "otawatch alerting: the snapshot of fleet, rollout and alert state",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open kv bucket %s: %w", name, err)
	}
	return kv, nil
}

// loadSnapshot returns the latest snapshot's manifest and JSON, or nil
// when there is none.
func loadSnapshot(ctx context.Context, kv jetstream.KeyValue) (*manifest, []byte, error) {
	var m manifest
	var entry jetstream.KeyValueEntry
	err := events.Retry(ctx, 3, func(ctx context.Context) error {
		var err error
		entry, err = kv.Get(ctx, manifestKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read snapshot manifest: %w", err)
	}
	if entry == nil {
		return nil, nil, nil
	}
	if err := json.Unmarshal(entry.Value(), &m); err != nil {
		return nil, nil, fmt.Errorf("decode snapshot manifest: %w", err)
	}
	var zipped bytes.Buffer
	for i := 0; i < m.Parts; i++ {
		var e jetstream.KeyValueEntry
		err := events.Retry(ctx, 3, func(ctx context.Context) error {
			var err error
			e, err = kv.Get(ctx, partKey(m.Gen, i))
			return err
		})
		if err != nil {
			return nil, nil, fmt.Errorf("read snapshot part %d of %d: %w", i+1, m.Parts, err)
		}
		zipped.Write(e.Value())
	}
	sum := sha256.Sum256(zipped.Bytes())
	if hex.EncodeToString(sum[:]) != m.SHA256 {
		return nil, nil, fmt.Errorf("snapshot %d: checksum mismatch", m.Gen)
	}
	zr, err := gzip.NewReader(&zipped)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot %d: %w", m.Gen, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot %d: %w", m.Gen, err)
	}
	return &m, data, nil
}

// saveSnapshot writes state as generation m.Gen, then the manifest, then
// removes the previous generation's parts.
func saveSnapshot(ctx context.Context, kv jetstream.KeyValue, m manifest, state []byte, prev *manifest) error {
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
	m.SHA256, m.Size = hex.EncodeToString(sum[:]), len(b)
	m.Parts = (len(b) + partSize - 1) / partSize
	for i := 0; i < m.Parts; i++ {
		part := b[i*partSize : min((i+1)*partSize, len(b))]
		err := events.Retry(ctx, 3, func(ctx context.Context) error {
			_, err := kv.Put(ctx, partKey(m.Gen, i), part)
			return err
		})
		if err != nil {
			return fmt.Errorf("write snapshot part %d: %w", i+1, err)
		}
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode snapshot manifest: %w", err)
	}
	if err := events.Retry(ctx, 3, func(ctx context.Context) error {
		_, err := kv.Put(ctx, manifestKey, mb)
		return err
	}); err != nil {
		return fmt.Errorf("write snapshot manifest: %w", err)
	}
	if prev != nil && prev.Gen != m.Gen {
		for i := 0; i < prev.Parts; i++ {
			// Best effort: a leftover part costs space, not correctness.
			_ = kv.Purge(ctx, partKey(prev.Gen, i))
		}
	}
	return nil
}

// restore builds the engine from the snapshot (if any), folds the ALERTS
// events published after it and brings the fleet state to the point they
// were computed at (catchUp, position.go), so a restart neither raises
// again an alert that is active, nor forgets one it must resolve, nor
// contradicts one with an older fleet state.
func (s *Service) restore(ctx context.Context, set *rules.Set) (*run, error) {
	kv, err := openBucket(ctx, s.deps.JS, s.cfg.SnapshotBucket, s.deps.Streams.Replicas)
	if err != nil {
		return nil, err
	}
	r := &run{kv: kv, pub: newPublisher(s.deps.JS), published: map[string]bool{}}
	r.pub.stored, r.pub.lose, r.pub.holder = s.countAlert, s.loseAlert, s.holder
	r.eng = s.newEngine(set)
	m, state, err := loadSnapshot(ctx, kv)
	if err != nil {
		s.log.Warn("snapshot unusable; rebuilding from the log", "err", err)
	}
	alertsFrom := uint64(1)
	if m != nil {
		if err := r.eng.UnmarshalJSON(state); err != nil {
			s.log.Warn("snapshot unusable; rebuilding from the log", "err", err)
			r.eng = s.newEngine(set)
		} else {
			r.manifest = m
			r.pub.alertsSeq = m.AlertsSeq
			alertsFrom = m.AlertsSeq + 1
			s.setStatus(func(st *Status) { st.Restored = true })
			s.log.Info("snapshot restored", "gen", m.Gen, "shadow_seq", m.ShadowSeq, "rollout_seq", m.RolloutSeq,
				"alerts_seq", m.AlertsSeq, "devices", r.eng.Fleet().Len())
		}
	}
	rc := newRecorded(r.eng.Active())
	if err := s.foldAlerts(ctx, r, rc, alertsFrom); err != nil {
		return nil, err
	}
	if err := s.catchUp(ctx, r, rc); err != nil {
		return nil, err
	}
	return r, nil
}

// foldAlerts folds the ALERTS events from sequence from up to the
// stream's end as it is now into rc, through the consume loop: an event
// that does not decode goes to REJECTED like any other, and the fold goes
// on.
func (s *Service) foldAlerts(ctx context.Context, r *run, rc *recorded, from uint64) error {
	n := 0
	f := consume.New(s.deps.JS, consume.Config{
		Stream: events.StreamAlerts, From: from, Source: component, EventSource: events.SourceAlerting, Log: s.log,
		Handle: func(_ context.Context, m consume.Msg) error {
			r.pub.alertsSeq = max(r.pub.alertsSeq, m.Seq)
			if m.Event.Type == events.TypeRulesLoaded {
				return nil // a rule set this service recorded, not an alert
			}
			var a events.AlertData
			if err := m.Event.DecodeData(&a); err != nil {
				return consume.Poison(err)
			}
			if a.RuleID == StreamFullRule {
				return nil // not the engine's: checkStreams reads them back
			}
			at, err := positionOf(m.Header)
			if err != nil {
				s.log.Warn("alert event with a malformed log position: taken as one without", "stream_seq", m.Seq, "event_id", m.Event.ID, "err", err)
			}
			rc.add(at, a)
			r.published[m.Event.ID] = true
			n++
			return nil
		},
	})
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(fctx) // Run ends only with fctx
	}()
	select {
	case <-f.CaughtUp():
	case <-ctx.Done():
	}
	cancel()
	<-done // the handler is done with r
	if ctx.Err() != nil {
		return fmt.Errorf("fold %s: %w", events.StreamAlerts, ctx.Err())
	}
	r.pub.alertsSeq = max(r.pub.alertsSeq, f.Applied())
	if k := f.Rejected(); k > 0 {
		s.setStatus(func(st *Status) { st.Rejected += int(k) })
	}
	if n > 0 {
		s.log.Info("alerts folded", "events", n, "last_shadow_seq", rc.last.at.shadow, "last_rollout_seq", rc.last.at.rollout,
			"last_cause", rc.last.at.cause)
	}
	return nil
}

type snapResult struct {
	m   manifest
	err error
}

// startSnapshot copies the state (on the caller's turn) and writes it in
// a goroutine that reports on done, so the followers go on meanwhile. It
// reports whether a write was started: only a changed state is written,
// and only once caught up.
func (s *Service) startSnapshot(ctx context.Context, r *run, done chan<- snapResult) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.dirty || !r.caughtUp {
		return false
	}
	snap, m, err := s.prepareSnapshot(r)
	if err != nil {
		s.log.Warn("snapshot failed", "err", err)
		return false
	}
	r.dirty = false
	kv, prev := r.kv, r.manifest
	go func() {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		state, err := snap.MarshalJSON()
		if err == nil {
			err = saveSnapshot(sctx, kv, m, state, prev)
		}
		done <- snapResult{m: m, err: err}
	}()
	return true
}

// prepareSnapshot copies the engine on the loop, after every publish it
// caused was acknowledged (the loop flushes before it gets here), so the
// copy and its sequences agree with ALERTS.
func (s *Service) prepareSnapshot(r *run) (*ruleeval.Snapshot, manifest, error) {
	// Events the followers rejected without the engine are behind the
	// snapshot too.
	r.eng.Skip(events.StreamShadow, r.shadow.Applied())
	r.eng.Skip(events.StreamRollout, r.rollout.Applied())
	snap, err := r.eng.Snapshot()
	if err != nil {
		return nil, manifest{}, fmt.Errorf("copy state for a snapshot: %w", err)
	}
	m := manifest{Gen: 1, ShadowSeq: r.eng.ShadowSeq, RolloutSeq: r.eng.RolloutSeq, AlertsSeq: r.pub.alertsSeq, SavedAt: s.clock.Now().UTC()}
	if r.manifest != nil {
		m.Gen = r.manifest.Gen + 1
	}
	return snap, m, nil
}

func (s *Service) saveSnapshot(ctx context.Context, r *run) snapResult {
	snap, m, err := s.prepareSnapshot(r)
	if err == nil {
		var state []byte
		if state, err = snap.MarshalJSON(); err == nil {
			err = saveSnapshot(ctx, r.kv, m, state, r.manifest)
		}
	}
	res := snapResult{m: m, err: err}
	s.snapshotted(r, res)
	return res
}

func (s *Service) snapshotted(r *run, res snapResult) {
	if res.err != nil {
		r.dirty = true
		s.log.Warn("snapshot failed; the next one tries again", "err", res.err)
		return
	}
	m := res.m
	r.manifest = &m
	s.log.Debug("snapshot saved", "gen", m.Gen, "bytes", m.Size, "shadow_seq", m.ShadowSeq)
	s.setStatus(func(st *Status) { st.Snapshots++ })
}
