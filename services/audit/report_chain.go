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
	c, span, err := locate(ctx, js, stream, from, to)
	if err != nil {
		return c, err
	}
	if c.LastSeq < c.FirstSeq {
		return checkEmpty(ctx, js, c, span.cps, history, p, content)
	}
	w := newChainWalk(&c, span)
	start, end := c.FromSeq+1, max(c.ToSeq, c.LastSeq)
	if history {
		start = 1
	}
	err = readRange(ctx, js, stream, start, end, func(m consume.Msg) (bool, error) {
		p.tick(stream, m.Seq, end)
		if m.Seq <= c.LastSeq {
			inRange := m.Seq >= c.FirstSeq
			content(m, inRange)
			if inRange {
				c.Events++
			}
		}
		w.step(m)
		return false, nil
	})
	if err != nil {
		return c, fmt.Errorf("read %s: %w", stream, err)
	}
	w.finish(span.covered)
	return c, nil
}

// chainSpan is what locate finds around a range besides the sequences it
// sets on the ChainCheck.
type chainSpan struct {
	// cps are the checkpoints the check can compare, in order.
	cps []Checkpoint
	// head is the chain value after the check's start (FromSeq).
	head events.ChainHead
	// covered: a checkpoint at or after the range's end exists (ToSeq is
	// the first of them).
	covered bool
}

// locate finds the range on stream (FirstSeq..LastSeq), the last
// checkpoint before it (FromSeq, where the check starts) and the first at
// or after its end (ToSeq, where it ends; LastSeq when there is none). A
// checkpoint past the stream's end is a problem, not a checkpoint to
// compare.
func locate(ctx context.Context, js jetstream.JetStream, stream string, from, to time.Time) (ChainCheck, chainSpan, error) {
	c, span := ChainCheck{Stream: stream}, chainSpan{}
	st, err := streamState(ctx, js, stream)
	if err != nil {
		return c, span, err
	}
	first, err := firstAtOrAfter(ctx, js, stream, from, st.LastSeq)
	if err != nil {
		return c, span, err
	}
	after, err := firstAtOrAfter(ctx, js, stream, to.Add(time.Nanosecond), st.LastSeq)
	if err != nil {
		return c, span, err
	}
	c.FirstSeq, c.LastSeq = first, after-1
	all, err := Checkpoints(ctx, js, stream)
	if err != nil {
		return c, span, err
	}
	// A checkpoint past the stream's end cannot be checked (and reading up
	// to it would wait for events that do not exist).
	for _, cp := range all {
		if cp.Seq > st.LastSeq {
			c.Problems = append(c.Problems, fmt.Sprintf("AUDIT seq %d: a checkpoint of sequence %d, past the stream's last, %d", cp.AuditSeq, cp.Seq, st.LastSeq))
			continue
		}
		span.cps = append(span.cps, cp)
	}
	for _, cp := range span.cps {
		if cp.Seq >= first {
			break
		}
		if span.head, err = parseHead(cp.Head); err != nil {
			return c, span, err
		}
		c.FromSeq = cp.Seq
	}
	c.ToSeq = c.LastSeq
	for _, cp := range span.cps {
		if cp.Seq >= c.LastSeq {
			c.ToSeq, span.covered = cp.Seq, true
			break
		}
	}
	return c, span, nil
}

// checkEmpty finishes c for a range that holds no event of the stream: the
// head before it is the head after. With history, content gets every
// message before the range.
func checkEmpty(ctx context.Context, js jetstream.JetStream, c ChainCheck, cps []Checkpoint, history bool,
	p *reportProgress, content func(m consume.Msg, inRange bool)) (ChainCheck, error) {
	h, err := headAt(ctx, js, c.Stream, c.LastSeq, cps)
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
		err = readRange(ctx, js, c.Stream, 1, c.LastSeq, func(m consume.Msg) (bool, error) {
			p.tick(c.Stream, m.Seq, c.LastSeq)
			content(m, false)
			return false, nil
		})
	}
	return c, err
}
