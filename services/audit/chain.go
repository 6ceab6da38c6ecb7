package audit

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// Checkpoint is one audit.checkpoint event as read back.
type Checkpoint struct {
	Seq      uint64    `json:"seq"`
	Head     string    `json:"head"`
	Time     time.Time `json:"time"`
	AuditSeq uint64    `json:"audit_seq"`
}

// readRange hands fn every message of stream from sequence from to to
// (both included), in order, undecoded (consume.ReadRange). fn returning
// stop ends it early.
func readRange(ctx context.Context, js jetstream.JetStream, stream string, from, to uint64, fn func(m consume.Msg) (stop bool, err error)) error {
	return consume.ReadRange(ctx, js, stream, nil, from, to, fn)
}

// streamState is stream's state (first and last sequence, count).
func streamState(ctx context.Context, js jetstream.JetStream, stream string) (jetstream.StreamState, error) {
	info, err := consume.StreamInfo(ctx, js, stream)
	if err != nil {
		return jetstream.StreamState{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	return info.State, nil
}

// Checkpoints reads every checkpoint of stream from AUDIT, in order.
func Checkpoints(ctx context.Context, js jetstream.JetStream, stream string) ([]Checkpoint, error) {
	subject := events.AuditCheckpointSubject(stream)
	// Read up to the last checkpoint of stream, on its subject only: AUDIT
	// holds every stream's, and years of them.
	last, err := consume.LastMsg(ctx, js, events.StreamAudit, subject)
	switch {
	case err != nil:
		return nil, fmt.Errorf("last checkpoint of %s: %w", stream, err)
	case last == nil:
		return nil, nil
	}
	var out []Checkpoint
	err = consume.ReadRange(ctx, js, events.StreamAudit, []string{subject}, 1, last.Sequence, func(m consume.Msg) (bool, error) {
		cp, err := decodeCheckpoint(m.Data)
		if err != nil {
			return false, fmt.Errorf("AUDIT seq %d: %w", m.Seq, err)
		}
		cp.AuditSeq = m.Seq
		out = append(out, cp)
		return false, nil
	})
	return out, err
}

func decodeCheckpoint(b []byte) (Checkpoint, error) {
	ev, err := events.Decode(b)
	if err != nil {
		return Checkpoint{}, err
	}
	var d events.AuditCheckpointData
	if err := ev.DecodeData(&d); err != nil {
		return Checkpoint{}, err
	}
	if _, err := parseHead(d.Head); err != nil {
		return Checkpoint{}, err
	}
	return Checkpoint{Seq: d.Seq, Head: d.Head, Time: d.Time}, nil
}

func parseHead(s string) (events.ChainHead, error) {
	var h events.ChainHead
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("chain value %q is not 64 hex digits", s)
	}
	copy(h[:], b)
	return h, nil
}

func hexHead(h events.ChainHead) string { return hex.EncodeToString(h[:]) }

// headAt is the chain value of stream after sequence seq: from the last
// checkpoint at or before seq (cps, in order), folding the events after it.
func headAt(ctx context.Context, js jetstream.JetStream, stream string, seq uint64, cps []Checkpoint) (events.ChainHead, error) {
	var h events.ChainHead
	from := uint64(1)
	for _, cp := range cps {
		if cp.Seq > seq {
			break
		}
		var err error
		if h, err = parseHead(cp.Head); err != nil {
			return h, err
		}
		from = cp.Seq + 1
	}
	err := readRange(ctx, js, stream, from, seq, func(m consume.Msg) (bool, error) {
		h = events.ChainNext(h, stream, m.Seq, m.Subject, m.Data)
		return false, nil
	})
	return h, err
}
