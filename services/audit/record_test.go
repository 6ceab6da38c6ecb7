package audit

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// FuzzRecordRoundTrip: whatever bytes an event has, the record written for
// it in either format reads back as the same record with the same bytes,
// and the readers take any input without panicking.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add("shadow.reported.gateway.dev-1", []byte(`{"specversion":"1.0","data":{"v":"<&>"}}`), uint64(7), []byte("{\"stream\":\"SHADOW\"}\n"))
	f.Add("x", []byte("\xff\r\n\"a,b\""), uint64(1), []byte("stream,seq\nSHADOW,x"))
	f.Add("", []byte{}, uint64(0), []byte{})
	f.Fuzz(func(t *testing.T, subject string, data []byte, seq uint64, junk []byte) {
		if !utf8.ValidString(subject) {
			t.Skip("Export refuses a subject that is not UTF-8")
		}
		m := consume.Msg{Stream: "SHADOW", Seq: seq, Subject: subject, Stored: time.Unix(1700000000, 123).UTC(), Data: data}
		var prev events.ChainHead
		rec := newRecord("SHADOW", m, prev, events.ChainNext(prev, "SHADOW", seq, subject, data))
		for _, format := range []string{"jsonl", "csv"} {
			var buf bytes.Buffer
			w := newRecordWriter(&buf, format)
			if err := w.write(rec); err != nil {
				t.Fatal(err)
			}
			if err := w.flush(); err != nil {
				t.Fatal(err)
			}
			rr, err := newRecordReader(&buf, format)
			if err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			got, err := rr.next()
			if err != nil {
				t.Fatalf("%s: read back: %v", format, err)
			}
			if !reflect.DeepEqual(got, rec) {
				t.Fatalf("%s: read back %+v, wrote %+v", format, got, rec)
			}
			b, err := got.Bytes()
			if err != nil || !bytes.Equal(b, data) {
				t.Fatalf("%s: bytes %q (%v), want %q", format, b, err, data)
			}
			if _, err := rr.next(); !errors.Is(err, io.EOF) {
				t.Fatalf("%s: after the record: %v", format, err)
			}
			// Junk is refused or read, never a panic.
			if rr, err := newRecordReader(bytes.NewReader(junk), format); err == nil {
				for i := 0; i < 100; i++ {
					if _, err := rr.next(); err != nil {
						break
					}
				}
			}
		}
	})
}
