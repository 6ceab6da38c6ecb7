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

// sink is a batch writer that notes what it wrote, fails the first writes
// it is told to, refuses some ids for good, and panics on others.
type sink struct {
	mu       sync.Mutex
	written  []string
	batches  int
	failures int             // transient failures left
	refuse   map[string]bool // refused rows
	panics   map[string]bool
	// acked, when set, is asked after each write whether any message of
	// it was acked already (it must not be).
	ackedDuring func() uint64
	ackedSeen   []uint64
}

func (s *sink) write(_ context.Context, batch []consume.Item[string]) ([]consume.Rejection, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures > 0 {
		s.failures--
		return nil, errors.New("clickhouse down")
	}
	var refused []consume.Rejection
	for _, it := range batch {
		if s.panics[it.Value] {
			panic("boom on " + it.Value)
		}
	}
	for _, it := range batch {
		if s.refuse[it.Value] {
			refused = append(refused, consume.Rejection{Seq: it.Seq, Reason: "refused " + it.Value})
			continue
		}
		s.written = append(s.written, fmt.Sprintf("%d:%s", it.Seq, it.Value))
	}
	s.batches++
	if s.ackedDuring != nil {
		s.ackedSeen = append(s.ackedSeen, s.ackedDuring())
	}
	return refused, nil
}

func (s *sink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.written...)
}

// prepareID decodes the envelope and returns its id; "prep-panic" panics.
func prepareID(m consume.Msg) (string, error) {
	ev, err := events.Decode(m.Data)
	if err != nil {
		return "", fmt.Errorf("decode envelope: %w", err)
	}
	if ev.ID == "prep-panic" {
		panic("prepare boom")
	}
	return ev.ID, nil
}

// TestBatcherPoisonAndPanics: on a durable consumer, an event that does not
// decode, one whose Prepare panics, one Write refuses and one Write panics
// on each end on REJECTED with the reason and are terminated; every other
// event is written once after a transient failure, in order, and acked
// only after its batch was written; a new event is written after them.
func TestBatcherPoisonAndPanics(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	ids := []string{"e1", "", "prep-panic", "e4-refused", "e5", "e6-panic", "e7"}
	for _, id := range ids {
		if id == "" {
			publishRaw(t, js, []byte("not an envelope"))
			continue
		}
		publishEvent(t, js, id)
	}
	const durable = "test-batcher"
	ackFloor := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := js.JS.Consumer(ctx, events.StreamAlerts, durable)
		if err != nil {
			return 0
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 0
		}
		return info.AckFloor.Stream
	}
	s := &sink{failures: 2, refuse: map[string]bool{"e4-refused": true}, panics: map[string]bool{"e6-panic": true}, ackedDuring: ackFloor}
	b := consume.NewBatcher(js.JS, consume.BatchConfig[string]{
		Stream: events.StreamAlerts, Durable: durable, AckWait: 5 * time.Second, MaxAckPending: 100,
		BatchSize: 100, BatchTimeout: 50 * time.Millisecond, Source: "testbatch", EventSource: events.SourceProjector,
		Prepare: prepareID, Write: s.write, NewBackOff: fastBackOff,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()

	select {
	case <-b.CaughtUp():
	case <-time.After(20 * time.Second):
		t.Fatalf("never caught up: %v", b.Status())
	}
	if want := "[1:e1 5:e5 7:e7]"; fmt.Sprint(s.got()) != want {
		t.Errorf("written %v, want %s", s.got(), want)
	}
	s.mu.Lock()
	for i, floor := range s.ackedSeen {
		if floor != 0 {
			t.Errorf("write %d: ack floor already %d while writing the first batch, want 0 (ack after write)", i, floor)
		}
		break
	}
	s.mu.Unlock()
	testutil.Eventually(t, 10*time.Second, func() bool { return ackFloor() == uint64(len(ids)) }, "ack floor %d, want %d", ackFloor(), len(ids))
	testutil.Eventually(t, 10*time.Second, func() bool { return js.Count(t, events.StreamRejected) == 4 }, "REJECTED holds %d, want 4", js.Count(t, events.StreamRejected))
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
		if d.Source != "testbatch" || d.Stream != events.StreamAlerts || m.Subject != events.RejectedSubject("testbatch") {
			t.Errorf("record %+v on %s", d, m.Subject)
		}
		reasons[d.StreamSeq] = d.Reason
	}
	tests := []struct {
		name string
		seq  uint64
		want string
	}{
		{"does not decode", 2, "decode envelope"},
		{"prepare panics", 3, "prepare panicked: prepare boom"},
		{"write refuses", 4, "refused e4-refused"},
		{"write panics", 6, "write panicked: boom on e6-panic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := reasons[tt.seq]; !strings.HasPrefix(got, tt.want) {
				t.Errorf("seq %d rejected for %q, want %q...", tt.seq, got, tt.want)
			}
		})
	}
	if b.Rejected() != 4 {
		t.Errorf("Rejected() = %d, want 4", b.Rejected())
	}
	publishEvent(t, js, "e8")
	testutil.Eventually(t, 10*time.Second, func() bool { return len(s.got()) == 4 }, "the next event was not written: %v", s.got())
	if b.Applied() != 8 || b.Lag() != 0 {
		t.Errorf("applied %d lag %d, want 8 and 0", b.Applied(), b.Lag())
	}
}

// TestBatcherFatalAcksNothing: a write that fails with Fatal ends Run with
// the error and leaves its batch unacked; a new batcher on the same durable
// gets it again.
func TestBatcherFatalAcksNothing(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	for i := 1; i <= 5; i++ {
		publishEvent(t, js, fmt.Sprintf("e%d", i))
	}
	crash := errors.New("crash after write")
	cfg := consume.BatchConfig[string]{Stream: events.StreamAlerts, Durable: "test-fatal", AckWait: 2 * time.Second,
		BatchSize: 100, BatchTimeout: 20 * time.Millisecond, Source: "t", EventSource: events.SourceProjector, Prepare: prepareID,
		Write: func(context.Context, []consume.Item[string]) ([]consume.Rejection, error) {
			return nil, consume.Fatal(crash)
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := consume.NewBatcher(js.JS, cfg).Run(ctx); !errors.Is(err, crash) {
		t.Fatalf("Run returned %v, want the crash", err)
	}
	s := &sink{}
	cfg.Write = s.write
	b := consume.NewBatcher(js.JS, cfg)
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(rctx) }()
	defer func() { rcancel(); <-done }()
	testutil.Eventually(t, 40*time.Second, func() bool { return len(s.got()) == 5 }, "the unacked batch was not delivered again: %v", s.got())
}

// TestBatcherReplayUntil: an ordered batcher from a sequence writes up to
// Until and returns, acking and recording nothing (a replay).
func TestBatcherReplayUntil(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	for i := 1; i <= 6; i++ {
		publishEvent(t, js, fmt.Sprintf("e%d", i))
	}
	publishRaw(t, js, []byte("broken"))
	publishEvent(t, js, "e8")
	s := &sink{}
	var poison int
	b := consume.NewBatcher(js.JS, consume.BatchConfig[string]{Stream: events.StreamAlerts, From: 3, Until: 7, NoRecord: true,
		BatchSize: 2, BatchTimeout: time.Second, Source: "t", EventSource: events.SourceProjector, Prepare: prepareID, Write: s.write,
		Written: func(_ []consume.Item[string], p int) { poison += p }})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Run(ctx); err != nil || ctx.Err() != nil {
		t.Fatalf("Run returned %v (ctx %v), want nil before the timeout", err, ctx.Err())
	}
	if want := "[3:e3 4:e4 5:e5 6:e6]"; fmt.Sprint(s.got()) != want {
		t.Errorf("written %v, want %s", s.got(), want)
	}
	if poison != 1 || b.Rejected() != 1 || js.Count(t, events.StreamRejected) != 0 {
		t.Errorf("poison %d rejected %d on REJECTED %d, want 1, 1 and 0 (replays record nothing)", poison, b.Rejected(), js.Count(t, events.StreamRejected))
	}
	if b.Applied() != 7 {
		t.Errorf("applied %d, want 7", b.Applied())
	}
}

// TestBatcherParallelCommitsInOrder: with Parallel 2 the second batch is
// written while the first still is (the first write waits for it), and
// batches are still done with (acked, Written) in the order they were read.
func TestBatcherParallelCommitsInOrder(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	for i := 1; i <= 6; i++ {
		publishEvent(t, js, fmt.Sprintf("e%d", i))
	}
	secondStarted := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var order []uint64
	overlapped := true
	b := consume.NewBatcher(js.JS, consume.BatchConfig[string]{Stream: events.StreamAlerts, Durable: "test-parallel", AckWait: 5 * time.Second,
		MaxAckPending: 100, BatchSize: 2, BatchTimeout: time.Second, Parallel: 2, Source: "t", EventSource: events.SourceProjector,
		Prepare: prepareID,
		Write: func(_ context.Context, batch []consume.Item[string]) ([]consume.Rejection, error) {
			switch batch[0].Seq {
			case 1:
				select {
				case <-secondStarted:
				case <-time.After(10 * time.Second):
					mu.Lock()
					overlapped = false
					mu.Unlock()
				}
			case 3:
				once.Do(func() { close(secondStarted) })
			}
			return nil, nil
		},
		Written: func(batch []consume.Item[string], _ int) {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, batch[0].Seq)
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testutil.Eventually(t, 20*time.Second, func() bool { return b.Applied() == 6 }, "applied %d, want 6", b.Applied())
	mu.Lock()
	defer mu.Unlock()
	if !overlapped {
		t.Error("the second batch was not written while the first was")
	}
	if fmt.Sprint(order) != "[1 3 5]" {
		t.Errorf("batches done with in order %v, want [1 3 5]", order)
	}
}

// TestBatcherRecoveryWakesWaitingBatches: two batches in flight each fail
// once (the server is down); the first then waits out an hour-long backoff,
// the second a 50 ms one. When the second goes in, the first tries again at
// once rather than after its hour, and the failure stays reported while the
// first is still failing.
func TestBatcherRecoveryWakesWaitingBatches(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	for i := 1; i <= 4; i++ {
		publishEvent(t, js, fmt.Sprintf("e%d", i))
	}
	var (
		mu        sync.Mutex
		calls     = map[uint64]int{} // attempts by a batch's first sequence
		statusErr error              // Status at the first batch's second attempt
		sleeps    int
	)
	firstSleeps := make(chan struct{})
	var b *consume.Batcher[string]
	b = consume.NewBatcher(js.JS, consume.BatchConfig[string]{Stream: events.StreamAlerts, Durable: "test-wake", AckWait: 5 * time.Second,
		MaxAckPending: 100, BatchSize: 2, BatchTimeout: time.Second, Parallel: 2, Source: "t", EventSource: events.SourceProjector,
		Prepare: prepareID,
		// The first backoff to be waited out is an hour long, the others
		// 50 ms.
		NewBackOff: func() backoff.BackOff {
			return backoffFunc(func() time.Duration {
				mu.Lock()
				defer mu.Unlock()
				if sleeps++; sleeps == 1 {
					close(firstSleeps)
					return time.Hour
				}
				return 50 * time.Millisecond
			})
		},
		Write: func(_ context.Context, batch []consume.Item[string]) ([]consume.Rejection, error) {
			first := batch[0].Seq
			mu.Lock()
			calls[first]++
			n := calls[first]
			if first == 1 && n == 2 {
				statusErr = b.Status()
			}
			mu.Unlock()
			if n > 1 {
				return nil, nil
			}
			if first == 3 {
				// The second batch fails once the first is asleep.
				select {
				case <-firstSleeps:
				case <-time.After(10 * time.Second):
				}
			}
			return nil, errors.New("clickhouse down")
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testutil.Eventually(t, 10*time.Second, func() bool { return b.Applied() == 4 },
		"applied %d of 4: the first batch still waits out its hour-long backoff", b.Applied())
	mu.Lock()
	defer mu.Unlock()
	if calls[1] != 2 || calls[3] != 2 {
		t.Errorf("attempts by batch %v, want two each", calls)
	}
	if statusErr == nil {
		t.Error("Status was nil while the first batch was still failing")
	}
	if err := b.Status(); err != nil {
		t.Errorf("Status after recovery: %v", err)
	}
}

// backoffFunc is a backoff.BackOff of a function.
type backoffFunc func() time.Duration

func (f backoffFunc) NextBackOff() time.Duration { return f() }
func (f backoffFunc) Reset()                     {}
