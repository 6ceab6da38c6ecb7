package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// Problem is one thing an export does not satisfy. Stream, Seq, File and
// Line name the event when it is about one (Seq 0 otherwise).
type Problem struct {
	Stream string
	Seq    uint64
	File   string
	Line   int
	Reason string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s seq %d (%s line %d): %s", p.Stream, p.Seq, p.File, p.Line, p.Reason)
	}
	if p.File != "" {
		return fmt.Sprintf("%s: %s", p.File, p.Reason)
	}
	return p.Reason
}

// Report is what Verify found.
type Report struct {
	Manifest *Manifest
	// Signed: the manifest's signature checked out, by SignedBy (base64).
	Signed   bool
	SignedBy string
	// Live: the export was compared with the live streams.
	Live     bool
	Events   uint64
	Problems []Problem
}

// FirstBadEvent is the first problem about an event, if any.
func (r *Report) FirstBadEvent() (Problem, bool) {
	for _, p := range r.Problems {
		if p.Line > 0 {
			return p, true
		}
	}
	return Problem{}, false
}

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// PublicKey, when set, is the key the manifest must be signed with;
	// without it a signature is checked with the manifest's own key (which
	// proves the manifest unchanged since signing, not who signed).
	PublicKey ed25519.PublicKey
	// JS, when set, is the live system: the export is compared with it.
	JS jetstream.JetStream
}

// Verify checks the export in dir: the manifest and its signature, every
// file's SHA-256, every event's digest and chain value, the sequence, the
// heads at both ends and the checkpoints; with o.JS, every event against
// the live stream and the head before the range against the live chain.
// An error is returned only when dir cannot be read at all.
func Verify(ctx context.Context, dir string, o VerifyOptions) (*Report, error) {
	r := &Report{}
	mb, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		r.add(Problem{File: "manifest.json", Reason: fmt.Sprintf("not a manifest: %v", err)})
		return r, nil
	}
	r.Manifest = &m
	if m.Format != ManifestFormat {
		r.add(Problem{File: "manifest.json", Reason: fmt.Sprintf("format %q, want %q", m.Format, ManifestFormat)})
	}
	r.verifySignature(dir, mb, o.PublicKey)
	for _, sm := range m.Streams {
		r.verifyStream(dir, &m, sm)
	}
	if o.JS != nil {
		r.Live = true
		for _, sm := range m.Streams {
			if err := r.verifyLive(ctx, dir, &m, sm, o.JS); err != nil {
				r.add(Problem{Reason: fmt.Sprintf("%s: compare with the live stream: %v", sm.Stream, err)})
			}
		}
	}
	return r, nil
}

func (r *Report) add(p Problem) { r.Problems = append(r.Problems, p) }

func (r *Report) verifySignature(dir string, mb []byte, pinned ed25519.PublicKey) {
	sb, err := os.ReadFile(filepath.Join(dir, "manifest.json.sig"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		if pinned != nil || r.Manifest.PublicKey != "" {
			r.add(Problem{File: "manifest.json.sig", Reason: "missing: the manifest is not signed"})
		}
		return
	case err != nil:
		r.add(Problem{File: "manifest.json.sig", Reason: err.Error()})
		return
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sb)))
	if err != nil {
		r.add(Problem{File: "manifest.json.sig", Reason: "not base64"})
		return
	}
	key := pinned
	if key == nil {
		k, err := base64.StdEncoding.DecodeString(r.Manifest.PublicKey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			r.add(Problem{File: "manifest.json", Reason: "public_key is not an Ed25519 public key"})
			return
		}
		key = k
	}
	if !ed25519.Verify(key, mb, sig) {
		r.add(Problem{File: "manifest.json", Reason: "the Ed25519 signature does not match: the manifest was changed after signing (or signed by another key)"})
		return
	}
	r.Signed, r.SignedBy = true, base64.StdEncoding.EncodeToString(key)
}

// verifyStream checks one stream's file on its own.
func (r *Report) verifyStream(dir string, m *Manifest, sm StreamManifest) {
	format := strings.TrimPrefix(filepath.Ext(sm.File), ".")
	if sm.File != filepath.Base(sm.File) || (format != "jsonl" && format != "csv") {
		r.add(Problem{File: "manifest.json", Reason: fmt.Sprintf("stream %s: file %q is not an export file", sm.Stream, sm.File)})
		return
	}
	fb, err := os.Open(filepath.Join(dir, sm.File))
	if err != nil {
		r.add(Problem{File: sm.File, Reason: err.Error()})
		return
	}
	defer fb.Close()
	sum := sha256.New()
	rr, err := newRecordReader(io.TeeReader(fb, sum), format)
	if err != nil {
		r.add(Problem{File: sm.File, Reason: err.Error()})
		return
	}
	c, err := newStreamCheck(r, sm)
	if err != nil {
		r.add(Problem{File: "manifest.json", Reason: fmt.Sprintf("stream %s: head_before: %v", sm.Stream, err)})
		return
	}
	for {
		rec, err := rr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			// A line that does not parse is named; the file's sum and
			// count are still checked below.
			c.bad(nil, rr.line, "%v", err)
			break
		}
		if !c.record(rec, rr.line) {
			return // the first bad event is named; what follows it cannot be judged
		}
	}
	_, _ = io.Copy(io.Discard, io.TeeReader(fb, sum)) // a csv reader may stop short of the end
	if got := hex.EncodeToString(sum.Sum(nil)); got != m.Files[sm.File] {
		r.add(Problem{File: sm.File, Reason: fmt.Sprintf("SHA-256 %s differs from the manifest's %s", got, m.Files[sm.File])})
	}
	c.end()
}

// streamCheck follows one stream's file record by record: the chain from
// the manifest's head before the range, the last sequence seen, and the
// checkpoints the manifest lists.
type streamCheck struct {
	r        *Report
	sm       StreamManifest
	cps      map[uint64]string // checkpoint heads by sequence
	filtered bool              // one device's events: sequences have gaps
	head     events.ChainHead
	lastSeq  uint64
	count    uint64
}

func newStreamCheck(r *Report, sm StreamManifest) (*streamCheck, error) {
	head, err := parseHead(sm.HeadBefore)
	if err != nil {
		return nil, err
	}
	c := &streamCheck{r: r, sm: sm, cps: map[uint64]string{}, filtered: sm.Device != "", head: head, lastSeq: sm.FirstSeq - 1}
	for _, cp := range sm.Checkpoints {
		c.cps[cp.Seq] = cp.Head
	}
	return c, nil
}

func (c *streamCheck) bad(rec *Record, line int, format string, args ...any) {
	var seq uint64
	if rec != nil {
		seq = rec.Seq
	}
	c.r.add(Problem{Stream: c.sm.Stream, Seq: seq, File: c.sm.File, Line: line, Reason: fmt.Sprintf(format, args...)})
}

// record checks one record against its bytes, its place and the chain; it
// reports whether the record passed.
func (c *streamCheck) record(rec *Record, line int) bool {
	c.count++
	c.r.Events++
	data, derr := rec.Bytes()
	d := sha256.Sum256(data)
	prev, perr := parseHead(rec.Prev)
	switch {
	case rec.Stream != c.sm.Stream:
		c.bad(rec, line, "stream %q in the %s file", rec.Stream, c.sm.Stream)
	case derr != nil:
		c.bad(rec, line, "data: %v", derr)
	case hex.EncodeToString(d[:]) != rec.SHA256:
		c.bad(rec, line, "its bytes do not match its SHA-256: the event was changed")
	case rec.Seq <= c.lastSeq:
		c.bad(rec, line, "sequence %d after %d: events out of order (reordered or inserted)", rec.Seq, c.lastSeq)
	case !c.filtered && rec.Seq != c.lastSeq+1:
		c.bad(rec, line, "sequence %d follows %d: %d event(s) missing (removed)", rec.Seq, c.lastSeq, rec.Seq-c.lastSeq-1)
	case rec.Seq > c.sm.LastSeq:
		c.bad(rec, line, "sequence %d is after the range's last, %d (inserted)", rec.Seq, c.sm.LastSeq)
	case perr != nil:
		c.bad(rec, line, "prev: %v", perr)
	case !c.filtered && prev != c.head:
		c.bad(rec, line, "its prev chain value %s is not the chain value after the event before it (%s)", rec.Prev, hexHead(c.head))
	default:
		next := events.ChainNext(prev, c.sm.Stream, rec.Seq, rec.Subject, data)
		if got := hexHead(next); got != rec.Chain {
			c.bad(rec, line, "chain value does not match: recorded %s, computed %s", rec.Chain, got)
			return false
		}
		if want, ok := c.cps[rec.Seq]; ok && want != rec.Chain {
			c.bad(rec, line, "chain value %s differs from AUDIT's checkpoint at this sequence (%s)", rec.Chain, want)
			return false
		}
		c.head, c.lastSeq = next, rec.Seq
		return true
	}
	return false
}

// end checks the file's end against the manifest: the count, and for a
// whole stream the last sequence and the chain head.
func (c *streamCheck) end() {
	sm := c.sm
	if c.count != sm.Count {
		c.r.add(Problem{File: "manifest.json", Reason: fmt.Sprintf("stream %s: %d events in %s, the manifest says %d", sm.Stream, c.count, sm.File, sm.Count)})
	}
	if c.filtered {
		return
	}
	if c.lastSeq != sm.LastSeq {
		c.r.add(Problem{File: "manifest.json", Reason: fmt.Sprintf("stream %s: the file ends at sequence %d, the manifest at %d", sm.Stream, c.lastSeq, sm.LastSeq)})
	} else if got := hexHead(c.head); got != sm.HeadAfter {
		c.r.add(Problem{File: "manifest.json", Reason: fmt.Sprintf("stream %s: chain head after the last event is %s, the manifest says %s", sm.Stream, got, sm.HeadAfter)})
	}
}

// verifyLive compares one stream's file with the live stream: the chain
// value before the range, then every event of the range.
func (r *Report) verifyLive(ctx context.Context, dir string, m *Manifest, sm StreamManifest, js jetstream.JetStream) error {
	st, err := streamState(ctx, js, sm.Stream)
	if err != nil {
		return err
	}
	if sm.LastSeq > st.LastSeq || sm.FirstSeq > st.LastSeq+1 {
		// Reading up to a sequence the stream has not reached would wait
		// for it.
		r.add(Problem{File: "manifest.json", Reason: fmt.Sprintf("stream %s: the range %d..%d goes past the live stream's last sequence, %d", sm.Stream, sm.FirstSeq, sm.LastSeq, st.LastSeq)})
		return nil
	}
	cps, err := Checkpoints(ctx, js, sm.Stream)
	if err != nil {
		return err
	}
	for _, cp := range sm.Checkpoints {
		if !hasCheckpoint(cps, cp) {
			r.add(Problem{File: "manifest.json", Reason: fmt.Sprintf("stream %s: checkpoint at sequence %d (%s) is not on the live AUDIT stream", sm.Stream, cp.Seq, cp.Head)})
		}
	}
	head, err := headAt(ctx, js, sm.Stream, sm.FirstSeq-1, cps)
	if err != nil {
		return err
	}
	if hexHead(head) != sm.HeadBefore {
		r.add(Problem{File: "manifest.json", Reason: fmt.Sprintf("stream %s: head_before %s, the live chain after sequence %d is %s", sm.Stream, sm.HeadBefore, sm.FirstSeq-1, hexHead(head))})
	}
	f, err := os.Open(filepath.Join(dir, sm.File))
	if err != nil {
		return err
	}
	defer f.Close()
	rr, err := newRecordReader(f, strings.TrimPrefix(filepath.Ext(sm.File), "."))
	if err != nil {
		return err
	}
	suffix := ""
	if sm.Device != "" {
		suffix = "." + strings.Replace(sm.Device, "/", ".", 1)
	}
	rec, rerr := rr.next()
	done := false
	err = readRange(ctx, js, sm.Stream, sm.FirstSeq, sm.LastSeq, func(msg consume.Msg) (bool, error) {
		if suffix != "" && !strings.HasSuffix(msg.Subject, suffix) {
			return false, nil
		}
		problem := func(format string, args ...any) (bool, error) {
			p := Problem{Stream: sm.Stream, Seq: msg.Seq, File: sm.File, Line: rr.line, Reason: fmt.Sprintf(format, args...)}
			if rec != nil {
				p.Seq = rec.Seq
			}
			r.add(p)
			done = true
			return true, nil
		}
		if rerr != nil {
			if rerr == io.EOF {
				return problem("the export ends; the live stream has sequence %d next (removed)", msg.Seq)
			}
			return problem("%v", rerr)
		}
		data, err := rec.Bytes()
		switch {
		case err != nil:
			return problem("data: %v", err)
		case rec.Seq != msg.Seq:
			return problem("the live stream has sequence %d here, the export %d", msg.Seq, rec.Seq)
		case rec.Subject != msg.Subject:
			return problem("subject %q, the live stream has %q", rec.Subject, msg.Subject)
		case !bytes.Equal(data, msg.Data):
			return problem("its bytes differ from the live stream's event at sequence %d", msg.Seq)
		}
		rec, rerr = rr.next()
		return false, nil
	})
	if err != nil {
		return err
	}
	if !done && rerr != io.EOF {
		p := Problem{Stream: sm.Stream, File: sm.File, Line: rr.line, Reason: "not on the live stream in the range (inserted)"}
		if rec != nil {
			p.Seq = rec.Seq
		}
		r.add(p)
	}
	return nil
}

func hasCheckpoint(cps []Checkpoint, cp Checkpoint) bool {
	for _, c := range cps {
		if c.Seq == cp.Seq && c.Head == cp.Head {
			return true
		}
	}
	return false
}
