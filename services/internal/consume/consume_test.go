package consume_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

func publishEvent(t *testing.T, js *testutil.JetStream, id string) {
	t.Helper()
	ev, err := events.New(id, events.SourceAlerting, events.TypeAlertRaised, events.AlertSubject("raised", "warning", "r"),
		time.Date(2025, 7, 22, 11, 30, 0, 0, time.UTC), map[string]string{"id": id})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ev.Marshal()
	publishRaw(t, js, b)
}

func publishRaw(t *testing.T, js *testutil.JetStream, b []byte) {
	t.Helper()
	if _, err := js.JS.Publish(context.Background(), events.AlertSubject("raised", "warning", "r"), b); err != nil {
		t.Fatal(err)
	}
}

// recorder is a handler that notes the events it applied, and fails or
// panics on the ids it is told to.
type recorder struct {
	mu        sync.Mutex
	applied   []string
	transient map[string]int // id -> failures left
	poison    map[string]bool
	panics    map[string]bool
}

func (r *recorder) handle(_ context.Context, m consume.Msg) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := m.Event.ID
	switch {
	case r.panics[id]:
		panic("boom on " + id)
	case r.poison[id]:
		return consume.Poison(fmt.Errorf("rule type error on %s", id))
	case r.transient[id] > 0:
		r.transient[id]--
		return errors.New("clickhouse down")
	}
	r.applied = append(r.applied, fmt.Sprintf("%d:%s", m.Seq, id))
	return nil
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.applied...)
}

func fastBackOff() backoff.BackOff { return backoff.NewConstantBackOff(5 * time.Millisecond) }

// TestPoisonAndPanicGoToRejected: an event that does not decode, one the
// handler calls poison, and one whose handler panics each end on REJECTED
// with the reason, and the next event is handled; a transient failure is
// retried until it passes, in order.
func TestPoisonAndPanicGoToRejected(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	publishEvent(t, js, "e1")
	publishRaw(t, js, []byte("not an envelope"))
	publishEvent(t, js, "e3-poison")
	publishEvent(t, js, "e4-panic")
	publishEvent(t, js, "e5-flaky")
	publishEvent(t, js, "e6")

	r := &recorder{transient: map[string]int{"e5-flaky": 3}, poison: map[string]bool{"e3-poison": true}, panics: map[string]bool{"e4-panic": true}}
	f := consume.New(js.JS, consume.Config{Stream: events.StreamAlerts, Source: "testconsumer", EventSource: events.SourceNotify,
		Handle: r.handle, NewBackOff: fastBackOff})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()

	select {
	case <-f.CaughtUp():
	case <-time.After(20 * time.Second):
		t.Fatalf("never caught up: %v", f.Status())
	}
	if err := f.Status(); err != nil {
		t.Errorf("status after catching up: %v", err)
	}
	want := []string{"1:e1", "5:e5-flaky", "6:e6"}
	if got := r.got(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("applied %v, want %v", got, want)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return js.Count(t, events.StreamRejected) == 3 }, "REJECTED holds %d records, want 3", js.Count(t, events.StreamRejected))
	reasons := map[uint64]string{}
	for _, m := range js.Events(t, events.StreamRejected) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		var d events.RejectedData
		if err := ev.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		if d.Stream != events.StreamAlerts || d.Source != "testconsumer" || m.Subject != events.RejectedSubject("testconsumer") || ev.Subject != m.Subject {
			t.Errorf("record %+v on %s (event subject %s)", d, m.Subject, ev.Subject)
		}
		reasons[d.StreamSeq] = d.Reason
	}
	for seq, want := range map[uint64]string{2: "decode event", 3: "rule type error on e3-poison", 4: "handler panicked: boom on e4-panic"} {
		if got := reasons[seq]; len(got) < len(want) || got[:len(want)] != want {
			t.Errorf("seq %d rejected for %q, want %q...", seq, got, want)
		}
	}
	if f.Rejected() != 3 {
		t.Errorf("Rejected() = %d, want 3", f.Rejected())
	}

	// Following goes on: a new event is handled.
	publishEvent(t, js, "e7")
	testutil.Eventually(t, 10*time.Second, func() bool { return len(r.got()) == 4 }, "the next event was not handled: %v", r.got())
}

// TestResumesFrom: a follower started after sequence 2 hands over only
// what follows, and is caught up at once on an empty rest.
func TestResumesFrom(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	for i := 1; i <= 4; i++ {
		publishEvent(t, js, fmt.Sprintf("e%d", i))
	}
	r := &recorder{}
	f := consume.New(js.JS, consume.Config{Stream: events.StreamAlerts, From: 3, Source: "t", EventSource: events.SourceNotify, Handle: r.handle})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-f.CaughtUp():
	case <-time.After(20 * time.Second):
		t.Fatalf("never caught up: %v", f.Status())
	}
	if got := r.got(); fmt.Sprint(got) != "[3:e3 4:e4]" {
		t.Errorf("applied %v, want [3:e3 4:e4]", got)
	}
	if f.Applied() != 4 || f.Lag() != 0 {
		t.Errorf("applied %d lag %d, want 4 and 0", f.Applied(), f.Lag())
	}
}

// TestMissingStreamIsNotReady: a stream that does not exist is reported by
// Status, and following starts once it does.
func TestMissingStreamIsNotReady(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{NoStreams: true})
	r := &recorder{}
	f := consume.New(js.JS, consume.Config{Stream: events.StreamAlerts, Source: "t", EventSource: events.SourceNotify, Handle: r.handle, NewBackOff: fastBackOff})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testutil.Eventually(t, 10*time.Second, func() bool {
		err := f.Status()
		return err != nil && contains(err.Error(), "stream info")
	}, "status does not say the stream is missing: %v", f.Status())
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := events.EnsureStreams(ctx2, js.JS, events.StreamOptions{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	publishEvent(t, js, "e1")
	testutil.Eventually(t, 20*time.Second, func() bool { return len(r.got()) == 1 && f.Status() == nil }, "not following after the stream appeared: %v", f.Status())
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
