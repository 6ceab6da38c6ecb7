package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// Results of a stream's chain check.
const (
	// ChainPass: every event of the range lies between checkpoints, and
	// the live events fold into each checkpoint's head.
	ChainPass = "pass"
	// ChainFail: at some checkpoint the live events do not fold into the
	// head AUDIT recorded: an event was changed, removed or inserted since,
	// or the checkpoint is wrong.
	ChainFail = "fail"
	// ChainIncomplete: no mismatch, but the range's last events are not
	// checkpointed yet (the audit service checkpoints them within its
	// checkpoint_interval) or no checkpoint exists at all.
	ChainIncomplete = "incomplete"
)

// ChainCheck is one stream's hash-chain check over a range: the live
// events are folded with events.ChainNext from AUDIT's last checkpoint
// before the range to its first checkpoint at or after the range's end,
// and compared with every checkpoint on the way.
type ChainCheck struct {
	Stream string
	Result string
	// FirstSeq and LastSeq bound the range on the stream (LastSeq <
	// FirstSeq when the range holds none of its events).
	FirstSeq, LastSeq uint64
	Events            uint64
	// HeadBefore is the chain value after FirstSeq-1 and HeadAfter after
	// LastSeq: an export of the same range has the same in its manifest.
	HeadBefore, HeadAfter string
	// FromSeq is where the check started: the checkpoint before the
	// range (0: the stream's start); ToSeq where it ended.
	FromSeq, ToSeq uint64
	// Checked is the checkpoints compared; Problems what did not match.
	Checked  int
	Problems []string
	// Uncovered is the range's events after the last checkpoint.
	Uncovered uint64
}

// checkStream reads stream once: from its start when history is set (else
// from the chain check's start) to the range's end or the check's end,
// whichever is later. content is called with every message up to the
// range's end, and whether the message is in the range.
func checkStream(ctx context.Context, js jetstream.JetStream, stream string, from, to time.Time, history bool,
	p *reportProgress, content func(m consume.Msg, inRange bool)) (ChainCheck, error) {
	c := ChainCheck{Stream: stream}
	st, err := streamState(ctx, js, stream)
	if err != nil {
		return c, err
	}
	first, err := firstAtOrAfter(ctx, js, stream, from, st.LastSeq)
	if err != nil {
		return c, err
	}
	after, err := firstAtOrAfter(ctx, js, stream, to.Add(time.Nanosecond), st.LastSeq)
	if err != nil {
		return c, err
	}
	c.FirstSeq, c.LastSeq = first, after-1
	all, err := Checkpoints(ctx, js, stream)
	if err != nil {
		return c, err
	}
	// A checkpoint past the stream's end cannot be checked (and reading up
	// to it would wait for events that do not exist).
	var cps []Checkpoint
	for _, cp := range all {
		if cp.Seq > st.LastSeq {
			c.Problems = append(c.Problems, fmt.Sprintf("AUDIT seq %d: a checkpoint of sequence %d, past the stream's last, %d", cp.AuditSeq, cp.Seq, st.LastSeq))
			continue
		}
		cps = append(cps, cp)
	}
	var head events.ChainHead
	for _, cp := range cps {
		if cp.Seq >= first {
			break
		}
		if head, err = parseHead(cp.Head); err != nil {
			return c, err
		}
		c.FromSeq = cp.Seq
	}
	c.ToSeq = c.LastSeq
	covered := false
	for _, cp := range cps {
		if cp.Seq >= c.LastSeq {
			c.ToSeq, covered = cp.Seq, true
			break
		}
	}
	if c.LastSeq < first {
		// No event in the range: the head before it is the head after.
		h, err := headAt(ctx, js, stream, c.LastSeq, cps)
		if err != nil {
			return c, err
		}
		c.HeadBefore, c.HeadAfter, c.Result = hexHead(h), hexHead(h), ChainPass
		if len(c.Problems) > 0 {
			c.Result = ChainFail
		}
		if history {
			// The state after the range is still the fold of what came
			// before it.
			err = readRange(ctx, js, stream, 1, c.LastSeq, func(m consume.Msg) (bool, error) {
				p.tick(stream, m.Seq, c.LastSeq)
				content(m, false)
				return false, nil
			})
		}
		return c, err
	}
	at := map[uint64][]Checkpoint{}
	for _, cp := range cps {
		at[cp.Seq] = append(at[cp.Seq], cp)
	}
	lastCovered := c.FromSeq // the last sequence a checkpoint vouches for
	start := c.FromSeq + 1
	if history {
		start = 1
	}
	if c.FromSeq == first-1 {
		c.HeadBefore = hexHead(head)
	}
	// synced is the chain from the last checkpoint that did not match,
	// while it differs from the live chain (diverged).
	synced, diverged := head, false
	err = readRange(ctx, js, stream, start, max(c.ToSeq, c.LastSeq), func(m consume.Msg) (bool, error) {
		p.tick(stream, m.Seq, max(c.ToSeq, c.LastSeq))
		if m.Seq <= c.LastSeq {
			content(m, m.Seq >= first)
			if m.Seq >= first {
				c.Events++
			}
		}
		if m.Seq <= c.FromSeq {
			return false, nil
		}
		next := events.ChainNext(head, stream, m.Seq, m.Subject, m.Data)
		if diverged {
			synced = events.ChainNext(synced, stream, m.Seq, m.Subject, m.Data)
		} else {
			synced = next
		}
		head = next
		switch m.Seq {
		case first - 1:
			c.HeadBefore = hexHead(head)
		case c.LastSeq:
			c.HeadAfter = hexHead(head)
		}
		if cps := at[m.Seq]; len(cps) > 0 {
			live, fromCp := hexHead(head), hexHead(synced)
			liveOK, cpOK := false, false
			for _, cp := range cps {
				c.Checked++
				liveOK, cpOK = liveOK || cp.Head == live, cpOK || cp.Head == fromCp
				if cp.Head == live || cp.Head == fromCp {
					continue
				}
				c.Problems = append(c.Problems, fmt.Sprintf(
					"after sequence %d the live events fold into %s, but AUDIT's checkpoint (AUDIT seq %d, written %s) recorded %s: an event of sequences %d..%d was changed, removed or inserted, or the checkpoint is wrong",
					m.Seq, live, cp.AuditSeq, cp.Time.UTC().Format(time.RFC3339), cp.Head, lastCovered+1, m.Seq))
			}
			switch {
			case liveOK:
				synced, diverged = head, false
			case cpOK:
				// The stretch since the last mismatch folds from that
				// checkpoint: the mismatch was in the stretch before it.
				head, diverged = synced, false
			default:
				// Go on both from the live chain and from the
				// checkpoint, so that the next checkpoint tells a wrong
				// checkpoint (the live chain matches it) from a changed
				// event (the chain from this checkpoint matches it), and
				// each later stretch is judged on its own.
				synced, _ = parseHead(cps[len(cps)-1].Head)
				diverged = synced != head
			}
			lastCovered = m.Seq
		}
		return false, nil
	})
	if err != nil {
		return c, fmt.Errorf("read %s: %w", stream, err)
	}
	switch {
	case len(c.Problems) > 0:
		c.Result = ChainFail
	case !covered:
		c.Result = ChainIncomplete
		if lastCovered < c.LastSeq {
			c.Uncovered = c.LastSeq - max(lastCovered, first-1)
		}
	default:
		c.Result = ChainPass
	}
	return c, nil
}
