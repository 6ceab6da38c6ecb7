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
