package events

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"
)

// MaxRejectedRaw is how many bytes of refused input a REJECTED record
// keeps. REJECTED takes input from anyone who can reach the broker: an
// unbounded copy let 20 payloads of 5 MB from one anonymous client grow it
// by 133 MB in 3 s. A device report is a few hundred bytes, so 64 KiB keeps
// every plausible report whole and only the start of an abusive one.
const MaxRejectedRaw = 64 << 10

// MaxRejectedReason is how many bytes of the reason a REJECTED record
// keeps: reasons quote parts of the input.
const MaxRejectedReason = 1 << 10

// NewRejected returns the REJECTED record of raw, refused by source for
// reason, with the bound applied: Raw keeps at most MaxRejectedRaw bytes
// (Truncated says it was cut), Reason at most MaxRejectedReason, and Size
// and SHA256 describe the whole input. Every REJECTED record is built
// here; the caller fills in where the input came from (Topic, or Stream
// and StreamSeq).
func NewRejected(source, reason string, raw []byte) RejectedData {
	sum := sha256.Sum256(raw)
	d := RejectedData{
		Source: source,
		Reason: cutString(reason, MaxRejectedReason),
		Raw:    raw,
		Size:   int64(len(raw)),
		SHA256: hex.EncodeToString(sum[:]),
	}
	if len(raw) > MaxRejectedRaw {
		d.Raw, d.Truncated = raw[:MaxRejectedRaw], true
	}
	return d
}

// cutString returns at most n bytes of s, cut before a UTF-8 sequence, with
// "..." when it was cut.
func cutString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len("...")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// NewRejectedEvent is the event that records on REJECTED an event of the
// log that consumer source (its envelope source eventSource, e.g.
// SourceAlerting) could never handle: stream and seq locate it, raw is the
// event as stored, at is when the stream stored it. Its id, also its
// Nats-Msg-Id, derives from (source, stream, seq), so a consumer that
// rejects the same event again after a restart records it once; its
// CloudEvents subject is the REJECTED subject it is published on, as for
// every record.
func NewRejectedEvent(source, eventSource, stream string, seq uint64, at time.Time, reason string, raw []byte) (Event, error) {
	data := NewRejected(source, reason, raw)
	data.Stream, data.StreamSeq = stream, seq
	return New(IdentityID("rj", source, stream, strconv.FormatUint(seq, 10)), eventSource, TypeRejected,
		RejectedSubject(source), at, data)
}
