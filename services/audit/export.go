package audit

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// ManifestFormat names the manifest's layout.
const ManifestFormat = "otawatch-audit-export/1"

// Record is one exported event: where it is stored, its bytes, and its
// place in the chain (Prev before it, Chain after it).
type Record struct {
	Stream  string    `json:"stream"`
	Seq     uint64    `json:"seq"`
	Subject string    `json:"subject"`
	Stored  time.Time `json:"stored"`
	SHA256  string    `json:"sha256"`
	Prev    string    `json:"prev"`
	Chain   string    `json:"chain"`
	// Encoding is "text" (Data is the bytes, valid UTF-8) or "base64".
	Encoding string `json:"encoding"`
	Data     string `json:"data"`
}

// Bytes are the event's bytes as stored.
func (r *Record) Bytes() ([]byte, error) {
	if r.Encoding == "base64" {
		return base64.StdEncoding.DecodeString(r.Data)
	}
	return []byte(r.Data), nil
}

// StreamManifest is one stream's part of the manifest.
type StreamManifest struct {
	Stream string `json:"stream"`
	File   string `json:"file"`
	// Device is set when only that device's events were kept; the chain
	// values still cover every event of the range.
	Device string `json:"device,omitempty"`
	// FirstSeq and LastSeq bound the range on the stream (LastSeq <
	// FirstSeq when the range is empty).
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Count    uint64 `json:"count"`
	// HeadBefore is the chain value after FirstSeq-1; HeadAfter after
	// LastSeq.
	HeadBefore string `json:"head_before"`
	HeadAfter  string `json:"head_after"`
	// Checkpoints are AUDIT's checkpoints inside the range.
	Checkpoints []Checkpoint `json:"checkpoints"`
}

// Manifest describes an export; manifest.json.sig, when present, is the
// Ed25519 signature of manifest.json's bytes (base64).
type Manifest struct {
	Format  string            `json:"format"`
	Created time.Time         `json:"created"`
	From    time.Time         `json:"from"`
	To      time.Time         `json:"to"`
	Device  string            `json:"device,omitempty"`
	Files   map[string]string `json:"files"` // name -> SHA-256 (hex)
	Streams []StreamManifest  `json:"streams"`
	// PublicKey is the signing key's public half (base64), when signed.
	PublicKey string `json:"public_key,omitempty"`
}

// ExportOptions say what to export.
type ExportOptions struct {
	From, To time.Time
	// Device is TYPE/ID: only its SHADOW events are kept.
	Device  string
	Streams []string // default: every chained stream
	Format  string   // jsonl (default) or csv
	Dir     string
	// Key signs the manifest when set.
	Key ed25519.PrivateKey
	// Progress is called about every ProgressEvery with a line to print.
	Progress      func(string)
	ProgressEvery time.Duration
	Now           func() time.Time
}

// Export writes the export directory and returns its manifest.
func Export(ctx context.Context, js jetstream.JetStream, o ExportOptions) (*Manifest, error) {
	devSuffix, err := o.check()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	m := &Manifest{Format: ManifestFormat, Created: o.Now().UTC(), From: o.From.UTC(), To: o.To.UTC(), Device: o.Device, Files: map[string]string{}}
	p := &exportProgress{o: &o, began: time.Now(), last: time.Now()}
	for _, stream := range o.Streams {
		sm, sum, err := exportStream(ctx, js, &o, stream, devSuffix, p)
		if err != nil {
			return nil, err
		}
		m.Files[sm.File] = sum
		m.Streams = append(m.Streams, sm)
	}
	if err := writeManifest(o.Dir, m, o.Key); err != nil {
		return nil, err
	}
	return m, nil
}

// check fills in o's defaults and checks it; it returns the subject
// suffix of the device whose SHADOW events are kept ("" for all).
func (o *ExportOptions) check() (devSuffix string, err error) {
	if o.Format == "" {
		o.Format = "jsonl"
	}
	if o.Format != "jsonl" && o.Format != "csv" {
		return "", fmt.Errorf("format %q: want jsonl or csv", o.Format)
	}
	if len(o.Streams) == 0 {
		o.Streams = events.ChainedStreams()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Device == "" {
		return "", nil
	}
	typ, id, ok := strings.Cut(o.Device, "/")
	if !ok || events.ValidateID("type", typ) != nil || events.ValidateID("device", id) != nil {
		return "", fmt.Errorf("device %q: want TYPE/ID", o.Device)
	}
	return "." + typ + "." + id, nil
}

// exportProgress prints a progress line about every o.ProgressEvery.
type exportProgress struct {
	o           *ExportOptions
	began, last time.Time
	total       uint64 // events read, over every stream
}

func (p *exportProgress) read(stream string, seq uint64) {
	p.total++
	if p.o.Progress != nil && time.Since(p.last) >= p.o.ProgressEvery {
		p.last = time.Now()
		p.o.Progress(fmt.Sprintf("export: %s seq %d, %d events, %.0f events/s", stream, seq, p.total, float64(p.total)/time.Since(p.began).Seconds()))
	}
}

// exportStream writes one stream's events of the range to its file,
// chaining every event from the range's start, and returns its part of
// the manifest and the file's SHA-256.
func exportStream(ctx context.Context, js jetstream.JetStream, o *ExportOptions, stream, devSuffix string, p *exportProgress) (StreamManifest, string, error) {
	sm := StreamManifest{Stream: stream, File: "events-" + stream + "." + o.Format}
	if devSuffix != "" && stream == events.StreamShadow {
		sm.Device = o.Device
	}
	st, err := streamState(ctx, js, stream)
	if err != nil {
		return sm, "", err
	}
	first, err := firstAtOrAfter(ctx, js, stream, o.From, st.LastSeq)
	if err != nil {
		return sm, "", err
	}
	cps, err := Checkpoints(ctx, js, stream)
	if err != nil {
		return sm, "", err
	}
	head, err := headAt(ctx, js, stream, first-1, cps)
	if err != nil {
		return sm, "", err
	}
	sm.FirstSeq, sm.LastSeq, sm.HeadBefore = first, first-1, hexHead(head)
	f, err := os.Create(filepath.Join(o.Dir, sm.File))
	if err != nil {
		return sm, "", err
	}
	sum := sha256.New()
	w := newRecordWriter(io.MultiWriter(f, sum), o.Format)
	err = readRange(ctx, js, stream, first, st.LastSeq, func(msg consume.Msg) (bool, error) {
		if msg.Stored.After(o.To) {
			return true, nil
		}
		prev := head
		head = events.ChainNext(head, stream, msg.Seq, msg.Subject, msg.Data)
		sm.LastSeq = msg.Seq
		p.read(stream, msg.Seq)
		if sm.Device != "" && !strings.HasSuffix(msg.Subject, devSuffix) {
			return false, nil
		}
		if !utf8.ValidString(msg.Subject) {
			// Subjects are ASCII by construction (events.ValidateID); a
			// JSON or CSV line could not carry this one's bytes.
			return true, fmt.Errorf("seq %d: subject %q is not UTF-8", msg.Seq, msg.Subject)
		}
		sm.Count++
		return false, w.write(newRecord(stream, msg, prev, head))
	})
	if err == nil {
		err = w.flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return sm, "", fmt.Errorf("export %s: %w", stream, err)
	}
	sm.HeadAfter = hexHead(head)
	sm.Checkpoints = []Checkpoint{}
	for _, cp := range cps {
		if cp.Seq >= sm.FirstSeq && cp.Seq <= sm.LastSeq {
			sm.Checkpoints = append(sm.Checkpoints, cp)
		}
	}
	return sm, hex.EncodeToString(sum.Sum(nil)), nil
}

// writeManifest writes manifest.json, and with key its Ed25519 signature
// manifest.json.sig.
func writeManifest(dir string, m *Manifest, key ed25519.PrivateKey) error {
	if key != nil {
		m.PublicKey = base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		return err
	}
	if key == nil {
		return nil
	}
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(key, b)) + "\n"
	return os.WriteFile(filepath.Join(dir, "manifest.json.sig"), []byte(sig), 0o644)
}

// firstAtOrAfter is the sequence of stream's first message stored at or
// after t, or last+1 when there is none.
func firstAtOrAfter(ctx context.Context, js jetstream.JetStream, stream string, t time.Time, last uint64) (uint64, error) {
	if last == 0 {
		return 1, nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t})
	if err != nil {
		return 0, fmt.Errorf("find %s's first event at %s: %w", stream, t, err)
	}
	batch, err := cons.FetchNoWait(1)
	if err != nil {
		return 0, err
	}
	for m := range batch.Messages() {
		meta, err := m.Metadata()
		if err != nil {
			return 0, err
		}
		return meta.Sequence.Stream, nil
	}
	if err := batch.Error(); err != nil {
		return 0, err
	}
	return last + 1, nil
}

func newRecord(stream string, m consume.Msg, prev, head events.ChainHead) *Record {
	sum := sha256.Sum256(m.Data)
	r := &Record{Stream: stream, Seq: m.Seq, Subject: m.Subject, Stored: m.Stored.UTC(),
		SHA256: hex.EncodeToString(sum[:]), Prev: hexHead(prev), Chain: hexHead(head), Encoding: "text"}
	if utf8.Valid(m.Data) && !strings.ContainsRune(string(m.Data), '\r') {
		r.Data = string(m.Data)
	} else {
		r.Encoding, r.Data = "base64", base64.StdEncoding.EncodeToString(m.Data)
	}
	return r
}

// csvHeader is the csv format's first line.
var csvHeader = []string{"stream", "seq", "subject", "stored", "sha256", "prev", "chain", "encoding", "data"}

type recordWriter struct {
	bw  *bufio.Writer
	csv *csv.Writer
	enc *json.Encoder
}

func newRecordWriter(w io.Writer, format string) *recordWriter {
	bw := bufio.NewWriterSize(w, 1<<20)
	rw := &recordWriter{bw: bw}
	if format == "csv" {
		rw.csv = csv.NewWriter(bw)
		_ = rw.csv.Write(csvHeader)
	} else {
		rw.enc = json.NewEncoder(bw)
		rw.enc.SetEscapeHTML(false)
	}
	return rw
}

func (w *recordWriter) write(r *Record) error {
	if w.csv != nil {
		return w.csv.Write([]string{r.Stream, strconv.FormatUint(r.Seq, 10), r.Subject, r.Stored.Format(time.RFC3339Nano),
			r.SHA256, r.Prev, r.Chain, r.Encoding, r.Data})
	}
	return w.enc.Encode(r)
}

func (w *recordWriter) flush() error {
	if w.csv != nil {
		w.csv.Flush()
		if err := w.csv.Error(); err != nil {
			return err
		}
	}
	return w.bw.Flush()
}

// recordReader reads an export file back.
type recordReader struct {
	sc   *bufio.Scanner
	csv  *csv.Reader
	line int
}

func newRecordReader(r io.Reader, format string) (*recordReader, error) {
	if format == "csv" {
		c := csv.NewReader(bufio.NewReaderSize(r, 1<<20))
		c.FieldsPerRecord = len(csvHeader)
		c.ReuseRecord = true
		if _, err := c.Read(); err != nil {
			return nil, fmt.Errorf("csv header: %w", err)
		}
		return &recordReader{csv: c, line: 1}, nil
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	return &recordReader{sc: sc}, nil
}

// next returns the next record, io.EOF at the end, or an error naming the
// line.
func (rr *recordReader) next() (*Record, error) {
	rr.line++
	if rr.csv != nil {
		f, err := rr.csv.Read()
		if err != nil {
			if err == io.EOF {
				return nil, err
			}
			return nil, fmt.Errorf("not a record: %v", err)
		}
		seq, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("seq %q: %v", f[1], err)
		}
		stored, err := time.Parse(time.RFC3339Nano, f[3])
		if err != nil {
			return nil, fmt.Errorf("stored %q: %v", f[3], err)
		}
		return &Record{Stream: f[0], Seq: seq, Subject: f[2], Stored: stored, SHA256: f[4], Prev: f[5], Chain: f[6], Encoding: f[7], Data: f[8]}, nil
	}
	if !rr.sc.Scan() {
		if err := rr.sc.Err(); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	var r Record
	if err := json.Unmarshal(rr.sc.Bytes(), &r); err != nil {
		return nil, fmt.Errorf("not a record: %v", err)
	}
	return &r, nil
}
