package audit

import (
	"context"
	"encoding/hex"
	"errors"
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
// (both included), in order, through the one stream-following loop
// (consume, raw). fn returning stop ends it early.
func readRange(ctx context.Context, js jetstream.JetStream, stream string, from, to uint64, fn func(m consume.Msg) (stop bool, err error)) error {
	return readRangeOn(ctx, js, stream, nil, from, to, fn)
}

// readRangeOn is readRange of the messages on subjects only; to must be
// the sequence of one of them, or the read waits for it.
func readRangeOn(ctx context.Context, js jetstream.JetStream, stream string, subjects []string, from, to uint64, fn func(m consume.Msg) (stop bool, err error)) error {
	if from == 0 {
		from = 1
	}
	if from > to {
		return nil
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ferr error
	f := consume.New(js, consume.Config{
		Stream: stream, From: from, Raw: true, Subjects: subjects,
		Source: "audit", EventSource: events.SourceAudit,
		Handle: func(_ context.Context, m consume.Msg) error {
			if m.Seq > to {
				cancel()
				return nil
			}
			stop, err := fn(m)
			if err != nil {
				ferr = err
			}
			if err != nil || stop || m.Seq >= to {
				cancel()
			}
			return nil
		},
	})
	if err := f.Run(ctx); err != nil {
		return err
	}
	if ferr != nil {
		return ferr
	}
	return parent.Err()
}

// lastSeq is stream's last sequence, and whether the stream exists.
func streamState(ctx context.Context, js jetstream.JetStream, stream string) (jetstream.StreamState, error) {
	var st jetstream.StreamState
	err := events.Retry(ctx, 3, func(ctx context.Context) error {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		st = info.State
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("stream %s: %w", stream, err)
	}
	return st, nil
}

// Checkpoints reads every checkpoint of stream from AUDIT, in order.
func Checkpoints(ctx context.Context, js jetstream.JetStream, stream string) ([]Checkpoint, error) {
	subject := events.AuditCheckpointSubject(stream)
	// Read up to the last checkpoint of stream, on its subject only: AUDIT
	// holds every stream's, and years of them.
	var last uint64
	err := events.Retry(ctx, 3, func(ctx context.Context) error {
		s, err := js.Stream(ctx, events.StreamAudit)
		if err != nil {
			return err
		}
		m, err := s.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return err
		}
		last = m.Sequence
		return nil
	})
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("last checkpoint of %s: %w", stream, err)
	}
	var out []Checkpoint
	err = readRangeOn(ctx, js, events.StreamAudit, []string{subject}, 1, last, func(m consume.Msg) (bool, error) {
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
