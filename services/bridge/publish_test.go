package bridge

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/services/internal/testutil"
)

func TestParsePubAck(t *testing.T) {
	for _, tc := range []struct {
		data string
		hdr  nats.Header
		want pubAck
		err  string
	}{
		{data: `{"stream":"SHADOW","seq":7}`, want: pubAck{Stream: "SHADOW", Seq: 7}},
		{data: `{"stream":"SHADOW","seq":7,"duplicate":true}`, want: pubAck{Stream: "SHADOW", Seq: 7, Duplicate: true}},
		{data: `{"stream":"SHADOW","domain":"hub","seq":18446744073709551615}`, want: pubAck{Stream: "SHADOW", Seq: 18446744073709551615}},
		// forms the fast reader leaves to encoding/json
		{data: `{"stream":"SHADOW","seq":7,"batch":"b1","count":2}`, want: pubAck{Stream: "SHADOW", Seq: 7}},
		{data: `{ "stream": "SHADOW", "seq": 7, "duplicate": false }`, want: pubAck{Stream: "SHADOW", Seq: 7}},
		{data: `{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"SHADOW","seq":0}`,
			err: "JetStream refused the publish: maximum messages exceeded (code 503, err_code 10077)"},
		{data: `{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}`,
			err: "JetStream refused the publish: expected stream does not match (code 400, err_code 10060)"},
		{hdr: nats.Header{"Status": []string{"503"}}, err: "no JetStream stream answered (503 no responders)"},
		{hdr: nats.Header{"Status": []string{"408"}, "Description": []string{"Request Timeout"}}, err: "JetStream replied with status 408 Request Timeout"},
		{err: "empty PubAck"},
		{data: `{"stream":"SHADOW"`, err: "PubAck is not JSON"},
		{data: `{"stream":"SHADOW","seq":0}`, err: "PubAck without stream or sequence"},
		{data: `{"seq":3}`, err: "PubAck without stream or sequence"},
	} {
		got, err := parsePubAck(&nats.Msg{Data: []byte(tc.data), Header: tc.hdr})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s %v: error %v, want %q", tc.data, tc.hdr, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.data, got, err, tc.want)
		}
	}
}

// FuzzParsePubAck: whatever the fast reader takes, encoding/json reads the
// same way.
func FuzzParsePubAck(f *testing.F) {
	for _, s := range []string{`{"stream":"SHADOW","seq":7}`, `{"stream":"SHADOW","seq":7,"duplicate":true}`,
		`{"stream":"S","domain":"d","seq":1}`, `{"stream":"a\"b","seq":1}`, `{"stream":"SHADOW","seq":01}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := parsePubAckFast(data)
		if !ok {
			return
		}
		var ref pubAck
		if err := json.Unmarshal(data, &ref); err != nil {
			t.Fatalf("fast reader took %q, which is not JSON: %v", data, err)
		}
		if ref != fast {
			t.Fatalf("%q: fast %+v, encoding/json %+v", data, fast, ref)
		}
	})
}

// TestPublisherOutcomes runs the publisher against a fake stream (a plain
// subscriber on a real server) that answers, stays silent or answers too
// late: each publish has exactly one outcome, and close returns the ones
// still waiting.
func TestPublisherOutcomes(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	nc := js.NC
	var lateMu sync.Mutex
	var late []*nats.Msg
	responder, err := nc.Subscribe("fake.>", func(m *nats.Msg) {
		if m.Header.Get(jetstream.MsgIDHeader) == "" || m.Header.Get(jetstream.ExpectedStreamHeader) != "FAKE" {
			t.Errorf("publish %s lacks its headers: %v", m.Subject, m.Header)
		}
		switch m.Subject {
		case "fake.ok":
			m.Respond([]byte(`{"stream":"FAKE","seq":1}`))
		case "fake.dup":
			m.Respond([]byte(`{"stream":"FAKE","seq":1,"duplicate":true}`))
		case "fake.refused":
			m.Respond([]byte(`{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`))
		case "fake.late":
			lateMu.Lock()
			late = append(late, m)
			lateMu.Unlock()
		}
		// fake.silent: no answer
	})
	if err != nil {
		t.Fatal(err)
	}
	defer responder.Unsubscribe()

	type result struct {
		subject string
		ack     pubAck
		err     error
	}
	results := make(chan result, 16)
	const timeout = 300 * time.Millisecond
	pb, err := newPublisher(nc, timeout, func(p *pending, ack pubAck, err error) {
		results <- result{p.subject, ack, err}
	})
	if err != nil {
		t.Fatal(err)
	}
	send := func(subject string) *pending {
		p := &pending{subject: subject, msgID: "id-" + subject, stream: "FAKE", body: []byte("{}")}
		if err := pb.publish(p); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
		return p
	}
	for _, s := range []string{"fake.ok", "fake.dup", "fake.refused", "fake.silent", "fake.late"} {
		send(s)
	}
	got := map[string]result{}
	for range 5 {
		select {
		case r := <-results:
			if _, twice := got[r.subject]; twice {
				t.Fatalf("%s had two outcomes", r.subject)
			}
			got[r.subject] = r
		case <-time.After(10 * time.Second):
			t.Fatalf("outcomes after 10s: %+v", got)
		}
	}
	if r := got["fake.ok"]; r.err != nil || r.ack != (pubAck{Stream: "FAKE", Seq: 1}) {
		t.Errorf("fake.ok: %+v", r)
	}
	if r := got["fake.dup"]; r.err != nil || !r.ack.Duplicate {
		t.Errorf("fake.dup: %+v", r)
	}
	if r := got["fake.refused"]; r.err == nil || !strings.Contains(r.err.Error(), "maximum messages exceeded") {
		t.Errorf("fake.refused: %+v", r)
	}
	for _, s := range []string{"fake.silent", "fake.late"} {
		if r := got[s]; !errors.Is(r.err, errPubAckTimeout) {
			t.Errorf("%s: %+v, want a timeout", s, r)
		}
	}
	// The late answer comes after the timeout: no second outcome.
	lateMu.Lock()
	for _, m := range late {
		m.Respond([]byte(`{"stream":"FAKE","seq":2}`))
	}
	lateMu.Unlock()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Still waiting at close: returned, with no outcome.
	waiting := send("fake.silent")
	left := pb.close()
	if len(left) != 1 || left[0] != waiting {
		t.Errorf("close returned %d waiting publishes, want the one silent", len(left))
	}
	select {
	case r := <-results:
		t.Errorf("outcome after the timeouts or after close: %+v", r)
	case <-time.After(2 * timeout):
	}
	if err := pb.publish(&pending{subject: "fake.ok"}); err == nil {
		t.Error("publish after close succeeded")
	}
}
