package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

var t0 = time.Date(2026, 3, 3, 10, 0, 0, 0, time.UTC)

// publishReports stores reports first to first+n-1 of devices dev-0..dev-4.
func publishReports(t testing.TB, js jetstream.JetStream, first, n int) {
	t.Helper()
	ctx := context.Background()
	for i := first; i < first+n; i++ {
		dev := fmt.Sprintf("dev-%d", i%5)
		d := events.ShadowReportedData{TypeID: "gateway", DeviceID: dev, Topic: events.ReportTopic("gateway", dev),
			Firmware:      events.Firmware{Version: "4.2.1", Timestamp: t0.Add(time.Duration(i) * time.Second), Status: events.StatusCompleted},
			PayloadSHA256: strings.Repeat("ab", 32)}
		subject := events.ShadowReportedSubject("gateway", dev)
		id := events.ReportEventID("gateway", dev, d.Firmware)
		b, err := events.Encode(id, events.SourceBridge, events.TypeShadowReported, subject, t0, &d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, subject, b, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
}

func liveHead(t *testing.T, js jetstream.JetStream, stream string, seq uint64) events.ChainHead {
	t.Helper()
	h, err := headAt(context.Background(), js, stream, seq, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestServiceWritesCheckpoints: the service checkpoints every N events and
// after the interval, each head the chain's value at its sequence, and a
// second run resumes from the last checkpoint.
func TestServiceWritesCheckpoints(t *testing.T) {
	j := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	publishReports(t, j.JS, 0, 25)
	cfg := Config{CheckpointEvery: 10, CheckpointInterval: time.Second, LeaseTTL: time.Second}
	run := func(until func([]Checkpoint) bool) []Checkpoint {
		s, err := New(cfg, svc.Deps{JS: j.JS, NC: j.NC})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			cps, err := Checkpoints(context.Background(), j.JS, events.StreamShadow)
			if err != nil {
				t.Fatal(err)
			}
			if until(cps) {
				return cps
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal("checkpoints not written in time")
		return nil
	}
	cps := run(func(cps []Checkpoint) bool { return len(cps) >= 3 })
	want := []uint64{10, 20, 25}
	for i, cp := range cps[:3] {
		if cp.Seq != want[i] {
			t.Errorf("checkpoint %d at seq %d, want %d", i, cp.Seq, want[i])
		}
		if h := liveHead(t, j.JS, events.StreamShadow, cp.Seq); hexHead(h) != cp.Head {
			t.Errorf("checkpoint at %d: head %s, chain %s", cp.Seq, cp.Head, hexHead(h))
		}
	}
	publishReports(t, j.JS, 25, 3)
	cps = run(func(cps []Checkpoint) bool { return len(cps) >= 4 })
	if len(cps) != 4 || cps[3].Seq != 28 {
		t.Fatalf("after 3 more events: checkpoints %+v, want a 4th at 28", cps)
	}
	if h := liveHead(t, j.JS, events.StreamShadow, 28); hexHead(h) != cps[3].Head {
		t.Errorf("resumed chain: head %s, want %s", cps[3].Head, hexHead(h))
	}
}

// exportFixture exports SHADOW and ROLLOUT (signed, in format) into a
// fresh directory.
func exportFixture(t *testing.T, j *testutil.JetStream, format string) (dir string, o VerifyOptions) {
	t.Helper()
	dir = t.TempDir()
	sk, err := WriteKeyPairForTest(t)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Export(context.Background(), j.JS, ExportOptions{From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour),
		Streams: []string{events.StreamShadow, events.StreamRollout}, Format: format, Dir: dir, Key: sk})
	if err != nil {
		t.Fatal(err)
	}
	return dir, VerifyOptions{PublicKey: sk.Public().(ed25519PublicKey)}
}

func editLines(t *testing.T, name string, edit func(lines []string) []string) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	lines = edit(lines)
	if err := os.WriteFile(name, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestExportVerify(t *testing.T) {
	j := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	publishReports(t, j.JS, 0, 20)
	ctx := context.Background()
	// Checkpoints at 7 and 14, as the service writes them.
	for _, seq := range []uint64{7, 14} {
		h := liveHead(t, j.JS, events.StreamShadow, seq)
		d := events.AuditCheckpointData{Stream: events.StreamShadow, Seq: seq, Head: hexHead(h), Time: t0, Events: seq}
		b, err := events.Encode(events.AuditCheckpointID(events.StreamShadow, seq), events.SourceAudit, events.TypeAuditCheckpoint,
			events.AuditCheckpointSubject(events.StreamShadow), t0, &d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := j.JS.Publish(ctx, events.AuditCheckpointSubject(events.StreamShadow), b); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("untouched", func(t *testing.T) {
		dir, o := exportFixture(t, j, "jsonl")
		for _, live := range []bool{false, true} {
			if live {
				o.JS = j.JS
			}
			rep, err := Verify(ctx, dir, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) > 0 || !rep.Signed || rep.Events != 20 || rep.Live != live {
				t.Fatalf("live=%v: problems %v, signed %v, events %d", live, rep.Problems, rep.Signed, rep.Events)
			}
		}
		var m Manifest
		b, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if s := m.Streams[0]; s.Count != 20 || s.FirstSeq != 1 || s.LastSeq != 20 || len(s.Checkpoints) != 2 ||
			s.HeadAfter != hexHead(liveHead(t, j.JS, events.StreamShadow, 20)) {
			t.Fatalf("manifest SHADOW: %+v", s)
		}
	})

	swapData := func(lines []string, i int) {
		lines[i] = strings.Replace(lines[i], `4.2.1`, `4.2.2`, 1)
	}
	manifestEdit := func(from, to string, unsign bool) func(dir string) {
		return func(dir string) {
			editLines(t, filepath.Join(dir, "manifest.json"), func(l []string) []string {
				for i, s := range l {
					l[i] = strings.Replace(s, from, to, 1)
				}
				return l
			})
			if unsign {
				_ = os.Remove(filepath.Join(dir, "manifest.json.sig"))
			}
		}
	}
	tests := []struct {
		name string
		// edit changes the SHADOW file's lines (l[0] is the first event's);
		// editDir the directory otherwise.
		edit    func(l []string) []string
		editDir func(dir string)
		// seq and line (of the first event: 1) of the first bad event; 0
		// for a problem with the manifest. reason: part of the reason.
		seq    uint64
		line   int
		reason string
		// jsonlOnly: the edit parses a JSON line.
		jsonlOnly bool
	}{
		{name: "changed", edit: func(l []string) []string { swapData(l, 4); return l }, seq: 5, line: 5, reason: "changed"},
		{name: "changed with its digest and chain recomputed", edit: func(l []string) []string { return forge(t, l, 4) },
			seq: 6, line: 6, reason: "prev chain value", jsonlOnly: true},
		{name: "removed", edit: func(l []string) []string { return append(l[:4:4], l[5:]...) }, seq: 6, line: 5, reason: "missing (removed)"},
		{name: "reordered", edit: func(l []string) []string { l[4], l[5] = l[5], l[4]; return l }, seq: 6, line: 5, reason: "missing (removed)"},
		{name: "inserted", edit: func(l []string) []string { return append(l[:5:5], append([]string{l[4]}, l[5:]...)...) },
			seq: 5, line: 6, reason: "out of order"},
		{name: "manifest changed", editDir: manifestEdit(`"count": 20`, `"count": 19`, false), reason: "signature does not match"},
		{name: "manifest range past the live stream", editDir: manifestEdit(`"last_seq": 20`, `"last_seq": 1000000`, true),
			reason: "manifest.json.sig: missing"},
	}
	for _, format := range []string{"jsonl", "csv"} {
		// A csv file's first line is its header.
		off := 0
		if format == "csv" {
			off = 1
		}
		for _, tc := range tests {
			if tc.jsonlOnly && format != "jsonl" {
				continue
			}
			t.Run(format+"/"+tc.name, func(t *testing.T) {
				dir, o := exportFixture(t, j, format)
				if tc.edit != nil {
					editLines(t, filepath.Join(dir, "events-SHADOW."+format), func(l []string) []string {
						return append(l[:off:off], tc.edit(l[off:])...)
					})
				} else {
					tc.editDir(dir)
				}
				for _, live := range []bool{false, true} {
					if live {
						o.JS = j.JS
					}
					rep, err := Verify(ctx, dir, o)
					if err != nil {
						t.Fatal(err)
					}
					if len(rep.Problems) == 0 {
						t.Fatalf("live=%v: verified", live)
					}
					if tc.seq == 0 {
						if !strings.Contains(rep.Problems[0].String(), tc.reason) {
							t.Fatalf("live=%v: first problem %q, want one with %q", live, rep.Problems[0], tc.reason)
						}
						continue
					}
					p, ok := rep.FirstBadEvent()
					if !ok || p.Stream != events.StreamShadow || p.Seq != tc.seq || p.Line != tc.line+off || !strings.Contains(p.Reason, tc.reason) {
						t.Fatalf("live=%v: first bad event %q, want SHADOW seq %d line %d with %q (all: %v)", live, p, tc.seq, tc.line+off, tc.reason, rep.Problems)
					}
				}
			})
		}
	}
}

// TestVerifyLiveRangePastStream: a manifest whose range goes past the live
// stream is reported, not waited for.
func TestVerifyLiveRangePastStream(t *testing.T) {
	j := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	publishReports(t, j.JS, 0, 5)
	dir := t.TempDir()
	ctx := context.Background()
	if _, err := Export(ctx, j.JS, ExportOptions{From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour),
		Streams: []string{events.StreamShadow}, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	editLines(t, filepath.Join(dir, "manifest.json"), func(l []string) []string {
		for i, s := range l {
			l[i] = strings.Replace(s, `"last_seq": 5`, `"last_seq": 1000000`, 1)
		}
		return l
	})
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	rep, err := Verify(ctx, dir, VerifyOptions{JS: j.JS})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range rep.Problems {
		found = found || strings.Contains(p.Reason, "goes past the live stream's last sequence, 5")
	}
	if !found || ctx.Err() != nil {
		t.Fatalf("problems %v (ctx %v)", rep.Problems, ctx.Err())
	}
}

// forge changes line i's event and recomputes its digest and chain value,
// as someone who knows the scheme would: the next line's prev no longer
// matches.
func forge(t *testing.T, lines []string, i int) []string {
	t.Helper()
	var r Record
	if err := json.Unmarshal([]byte(lines[i]), &r); err != nil {
		t.Fatal(err)
	}
	r.Data = strings.Replace(r.Data, "4.2.1", "4.2.2", 1)
	data, _ := r.Bytes()
	prev, _ := parseHead(r.Prev)
	rec := newRecordFromBytes(r, data, prev)
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rec); err != nil {
		t.Fatal(err)
	}
	lines[i] = strings.TrimSuffix(b.String(), "\n")
	return lines
}

// TestVerifyCatchesRewrittenExport: someone who knows the scheme changes
// event 5 and rewrites everything after it (chain values, the manifest's
// head and file digest) and drops the signature. The export alone gives it
// away at AUDIT's checkpoint at sequence 7; against the live stream the
// changed event itself is named.
func TestVerifyCatchesRewrittenExport(t *testing.T) {
	j := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	publishReports(t, j.JS, 0, 10)
	ctx := context.Background()
	h := liveHead(t, j.JS, events.StreamShadow, 7)
	d := events.AuditCheckpointData{Stream: events.StreamShadow, Seq: 7, Head: hexHead(h), Time: t0, Events: 7}
	b, err := events.Encode(events.AuditCheckpointID(events.StreamShadow, 7), events.SourceAudit, events.TypeAuditCheckpoint,
		events.AuditCheckpointSubject(events.StreamShadow), t0, &d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.JS.Publish(ctx, events.AuditCheckpointSubject(events.StreamShadow), b); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := Export(ctx, j.JS, ExportOptions{From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour),
		Streams: []string{events.StreamShadow}, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "events-SHADOW.jsonl")
	var head string
	editLines(t, name, func(lines []string) []string {
		var prev events.ChainHead
		for i := range lines {
			var r Record
			if err := json.Unmarshal([]byte(lines[i]), &r); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				prev, _ = parseHead(r.Prev)
			}
			if i == 4 {
				r.Data = strings.Replace(r.Data, "4.2.1", "4.2.2", 1)
			}
			data, _ := r.Bytes()
			r.Prev = hexHead(prev)
			r = newRecordFromBytes(r, data, prev)
			prev, _ = parseHead(r.Chain)
			nb, _ := json.Marshal(r)
			lines[i] = string(nb)
		}
		head = hexHead(prev)
		return lines
	})
	fb, _ := os.ReadFile(name)
	sum := sha256.Sum256(fb)
	var m Manifest
	mb, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatal(err)
	}
	m.Streams[0].HeadAfter = head
	m.Files["events-SHADOW.jsonl"] = hex.EncodeToString(sum[:])
	mb, _ = json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), mb, 0o644); err != nil {
		t.Fatal(err)
	}

	rep, err := Verify(ctx, dir, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := rep.FirstBadEvent(); !ok || p.Seq != 7 || !strings.Contains(p.Reason, "checkpoint") {
		t.Fatalf("offline: first bad event %q, want seq 7 against the checkpoint (all: %v)", p, rep.Problems)
	}
	rep, err = Verify(ctx, dir, VerifyOptions{JS: j.JS})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range rep.Problems {
		if p.Seq == 5 && p.Line == 5 && strings.Contains(p.Reason, "differ from the live stream") {
			found = true
		}
	}
	if !found {
		t.Fatalf("live: no problem naming seq 5 as differing from the live stream: %v", rep.Problems)
	}
}

// TestExportMidStream: a range that starts inside the stream takes its
// head_before from AUDIT's last checkpoint before it plus the events in
// between, and verifies, also against the live stream.
func TestExportMidStream(t *testing.T) {
	j := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	ctx := context.Background()
	publishReports(t, j.JS, 0, 10)
	h := liveHead(t, j.JS, events.StreamShadow, 7)
	d := events.AuditCheckpointData{Stream: events.StreamShadow, Seq: 7, Head: hexHead(h), Time: t0, Events: 7}
	b, err := events.Encode(events.AuditCheckpointID(events.StreamShadow, 7), events.SourceAudit, events.TypeAuditCheckpoint,
		events.AuditCheckpointSubject(events.StreamShadow), t0, &d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.JS.Publish(ctx, events.AuditCheckpointSubject(events.StreamShadow), b); err != nil {
		t.Fatal(err)
	}
	// Another stream's checkpoint after it, with a head that is not
	// SHADOW's: reading SHADOW's checkpoints must not take it.
	other := events.AuditCheckpointData{Stream: events.StreamRollout, Seq: 9, Head: strings.Repeat("ee", 32), Time: t0, Events: 9}
	b, err = events.Encode(events.AuditCheckpointID(events.StreamRollout, 9), events.SourceAudit, events.TypeAuditCheckpoint,
		events.AuditCheckpointSubject(events.StreamRollout), t0, &other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.JS.Publish(ctx, events.AuditCheckpointSubject(events.StreamRollout), b); err != nil {
		t.Fatal(err)
	}
	if cps, err := Checkpoints(ctx, j.JS, events.StreamShadow); err != nil || len(cps) != 1 || cps[0].Seq != 7 {
		t.Fatalf("SHADOW's checkpoints: %+v, %v", cps, err)
	}
	time.Sleep(50 * time.Millisecond)
	mid := time.Now()
	time.Sleep(50 * time.Millisecond)
	publishReports(t, j.JS, 10, 10)
	dir := t.TempDir()
	m, err := Export(ctx, j.JS, ExportOptions{From: mid, To: time.Now().Add(time.Hour), Streams: []string{events.StreamShadow}, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s := m.Streams[0]
	if s.FirstSeq != 11 || s.LastSeq != 20 || s.Count != 10 || s.HeadBefore != hexHead(liveHead(t, j.JS, events.StreamShadow, 10)) {
		t.Fatalf("manifest: %+v", s)
	}
	rep, err := Verify(ctx, dir, VerifyOptions{JS: j.JS})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 || rep.Events != 10 {
		t.Fatalf("verify: %d events, problems %v", rep.Events, rep.Problems)
	}
}
