package audit

import (
	"fmt"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// chainWalk folds a stream's hash chain over the events after the check's
// start and compares it with every checkpoint on the way, filling its
// ChainCheck: the heads around the range, Checked and Problems, and at
// the end the result.
type chainWalk struct {
	c *ChainCheck
	// head is the live chain. synced is the chain from the last
	// checkpoint that did not match, while it differs from the live chain
	// (diverged).
	head, synced events.ChainHead
	diverged     bool
	lastCovered  uint64 // the last sequence a checkpoint vouches for
	at           map[uint64][]Checkpoint
}

func newChainWalk(c *ChainCheck, span chainSpan) *chainWalk {
	w := &chainWalk{c: c, head: span.head, synced: span.head, lastCovered: c.FromSeq, at: map[uint64][]Checkpoint{}}
	for _, cp := range span.cps {
		w.at[cp.Seq] = append(w.at[cp.Seq], cp)
	}
	if c.FromSeq == c.FirstSeq-1 {
		c.HeadBefore = hexHead(span.head)
	}
	return w
}

// step folds m, the next message of the stream, into both chains and
// compares them with the checkpoints at its sequence. Messages up to the
// check's start are skipped: the walk starts from its head.
func (w *chainWalk) step(m consume.Msg) {
	c := w.c
	if m.Seq <= c.FromSeq {
		return
	}
	next := events.ChainNext(w.head, c.Stream, m.Seq, m.Subject, m.Data)
	if w.diverged {
		w.synced = events.ChainNext(w.synced, c.Stream, m.Seq, m.Subject, m.Data)
	} else {
		w.synced = next
	}
	w.head = next
	switch m.Seq {
	case c.FirstSeq - 1:
		c.HeadBefore = hexHead(w.head)
	case c.LastSeq:
		c.HeadAfter = hexHead(w.head)
	}
	w.compare(m.Seq)
}

// compare checks the chains after seq against AUDIT's checkpoints at seq,
// if any: a checkpoint matching neither is a problem.
func (w *chainWalk) compare(seq uint64) {
	cps := w.at[seq]
	if len(cps) == 0 {
		return
	}
	c := w.c
	live, fromCp := hexHead(w.head), hexHead(w.synced)
	liveOK, cpOK := false, false
	for _, cp := range cps {
		c.Checked++
		liveOK, cpOK = liveOK || cp.Head == live, cpOK || cp.Head == fromCp
		if cp.Head == live || cp.Head == fromCp {
			continue
		}
		c.Problems = append(c.Problems, fmt.Sprintf(
			"after sequence %d the live events fold into %s, but AUDIT's checkpoint (AUDIT seq %d, written %s) recorded %s: an event of sequences %d..%d was changed, removed or inserted, or the checkpoint is wrong",
			seq, live, cp.AuditSeq, cp.Time.UTC().Format(time.RFC3339), cp.Head, w.lastCovered+1, seq))
	}
	switch {
	case liveOK:
		w.synced, w.diverged = w.head, false
	case cpOK:
		// The stretch since the last mismatch folds from that
		// checkpoint: the mismatch was in the stretch before it.
		w.head, w.diverged = w.synced, false
	default:
		// Go on both from the live chain and from the checkpoint, so
		// that the next checkpoint tells a wrong checkpoint (the live
		// chain matches it) from a changed event (the chain from this
		// checkpoint matches it), and each later stretch is judged on
		// its own.
		w.synced, _ = parseHead(cps[len(cps)-1].Head)
		w.diverged = w.synced != w.head
	}
	w.lastCovered = seq
}

// finish sums the walk up: fail on any problem, else incomplete when no
// checkpoint at or after the range's end vouches for its last events
// (covered is false), else pass.
func (w *chainWalk) finish(covered bool) {
	c := w.c
	switch {
	case len(c.Problems) > 0:
		c.Result = ChainFail
	case !covered:
		c.Result = ChainIncomplete
		if w.lastCovered < c.LastSeq {
			c.Uncovered = c.LastSeq - max(w.lastCovered, c.FirstSeq-1)
		}
	default:
		c.Result = ChainPass
	}
}
