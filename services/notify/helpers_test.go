package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// testReceiver is a receivers entry of the tests: a name, and a fake
// block whose secret_file must exist (to show the section checks it).
type testReceiver struct {
	Name string     `yaml:"name"`
	Fake *fakeBlock `yaml:"fake"`
	n    Notifier
}

type fakeBlock struct {
	SecretFile string `yaml:"secret_file"`
}

func (r *testReceiver) ReceiverName() string { return r.Name }
func (r *testReceiver) ReceiverKind() string { return KindWebhook }
func (r *testReceiver) SetDefaults()         {}
func (r *testReceiver) Validate(p conf.Problems) {
	if r.Fake == nil {
		return
	}
	if r.Fake.SecretFile != "" {
		if _, err := os.Stat(r.Fake.SecretFile); err != nil {
			p.Addf("fake.secret_file", "%v", err)
		}
	}
}
func (r *testReceiver) Notifier(*slog.Logger) (Notifier, error) {
	if r.n == nil {
		return nil, errors.New("no fake notifier")
	}
	return r.n, nil
}

// fakeNotifier records every call and answers as scripted: the first
// len(fail) calls fail with those results, the rest succeed.
type fakeNotifier struct {
	clock *testutil.FakeClock
	mu    sync.Mutex
	fail  []Result
	// delay is a real pause in every call, one call at a time (the kill
	// test's storm).
	delay  time.Duration
	serial sync.Mutex
	calls  []call
	// delivered are the notifications answered with success.
	delivered []Notification
}

type call struct {
	at time.Time
	n  Notification
}

func (f *fakeNotifier) Notify(ctx context.Context, n *Notification) (Result, error) {
	f.mu.Lock()
	i := len(f.calls)
	f.calls = append(f.calls, call{at: f.clock.Now(), n: *n})
	f.mu.Unlock()
	if i < len(f.fail) {
		r := f.fail[i]
		return r, fmt.Errorf("fake: status %d", r.Status)
	}
	if f.delay > 0 {
		f.serial.Lock()
		defer f.serial.Unlock()
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delivered = append(f.delivered, *n)
	return Result{Status: 202, Answer: `{"status":"success"}`}, nil
}

func (f *fakeNotifier) Delivered() []Notification {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Notification(nil), f.delivered...)
}

func (f *fakeNotifier) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

func dur(d time.Duration) *time.Duration { return &d }

// t0 is the fake clock's start.
var t0 = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)

// harness is one test's JetStream, clock and fake receiver "pd".
type harness struct {
	t     *testing.T
	js    *testutil.JetStream
	clock *testutil.FakeClock
	fake  *fakeNotifier
	cfg   Config[*testReceiver]
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	clock := testutil.NewFakeClock(t0)
	h := &harness{t: t, js: testutil.StartJetStream(t, testutil.JetStreamOptions{}), clock: clock,
		fake: &fakeNotifier{clock: clock}}
	h.cfg = Config[*testReceiver]{
		Receivers: []*testReceiver{{Name: "pd", n: h.fake}},
		Route: &Route{Receiver: "pd", GroupBy: []string{LabelRule, LabelJob, LabelWave},
			GroupWait: dur(10 * time.Second), GroupInterval: dur(time.Minute), RepeatInterval: dur(4 * time.Hour)},
		RetryInitial: 500 * time.Millisecond, RetryMax: time.Second,
		LeaseTTL: 2 * time.Second, LeaseBucket: "notify_lease_test",
	}
	return h
}

// start runs a service on h's configuration until the returned stop is
// called (or the test ends) and waits until it has caught up.
func (h *harness) start() (*Service, func()) {
	h.t.Helper()
	s, stop := h.run()
	testutil.Eventually(h.t, 20*time.Second, func() bool { return s.Status().CaughtUp }, "service did not catch up")
	return s, stop
}

// run runs a service on h's configuration until the returned stop is
// called (or the test ends).
func (h *harness) run() (*Service, func()) {
	h.t.Helper()
	s, err := New(h.cfg, svc.Deps{JS: h.js.JS, Clock: h.clock, Log: testLog(h.t)})
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}
	h.t.Cleanup(stop)
	return s, stop
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// deviceAlert is a device-failed alert of device dev in job j, wave 1.
func deviceAlert(dev, job string, startsAt time.Time) events.AlertData {
	return events.AlertData{Key: "device-failed/gw/" + dev, RuleID: "device-failed", Severity: "critical",
		State: events.AlertRaised, TypeID: "gw", DeviceID: dev, JobID: job, Wave: 1,
		Message: dev + " failed", StartsAt: startsAt}
}

// publishAlert stores a's event (raised or resolved, by a.State) on ALERTS.
func (h *harness) publishAlert(a events.AlertData) {
	h.t.Helper()
	at := a.StartsAt
	if a.State == events.AlertResolved {
		if a.EndsAt == nil {
			end := h.clock.Now()
			a.EndsAt = &end
		}
		at = *a.EndsAt
	}
	id := events.AlertEventID(a.Key, a.Severity, a.StartsAt, a.State)
	ev, err := events.New(id, events.SourceAlerting, events.AlertEventType(a.State), a.Key, at, a)
	if err != nil {
		h.t.Fatal(err)
	}
	h.publish(events.AlertSubject(a.State, a.Severity, a.RuleID), ev)
}

func (h *harness) publish(subject string, ev events.Event) {
	h.t.Helper()
	b, err := ev.Marshal()
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.js.JS.Publish(ctx, subject, b, jetstream.WithMsgID(ev.ID)); err != nil {
		h.t.Fatalf("publish %s: %v", subject, err)
	}
}

func resolved(a events.AlertData, at time.Time) events.AlertData {
	a.State, a.EndsAt, a.Reason = events.AlertResolved, &at, events.ResolvedCleared
	return a
}

// notifyEvents are NOTIFY's events of type typ, decoded.
func (h *harness) notifyEvents(typ string) []events.Event {
	h.t.Helper()
	var out []events.Event
	for _, m := range h.js.Events(h.t, events.StreamNotify) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			h.t.Fatalf("NOTIFY seq %d: %v", m.Sequence, err)
		}
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

func (h *harness) countNotify(typ string) int { return len(h.notifyEvents(typ)) }

// waitAlerts waits until s holds n alerts (ALERTS was read that far).
func waitAlerts(t *testing.T, s *Service, n int) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() bool { return s.Status().Alerts == n }, "service holds %d alerts, want %d", s.Status().Alerts, n)
}

// waitIdle waits until no delivery of s is in flight.
func waitIdle(t *testing.T, s *Service) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.d == nil {
			return true
		}
		for _, g := range s.d.groups {
			if g.inflight {
				return false
			}
		}
		return true
	}, "deliveries still in flight")
}

// digestFake is a fakeNotifier that renders digests (DigestNotifier),
// recording each digest's start.
type digestFake struct {
	*fakeNotifier
	mu     sync.Mutex
	sinces []time.Time
}

func (f *digestFake) NotifyDigest(ctx context.Context, n *Notification, since time.Time) (Result, error) {
	f.mu.Lock()
	f.sinces = append(f.sinces, since)
	f.mu.Unlock()
	return f.Notify(ctx, n)
}
