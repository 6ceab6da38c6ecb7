package alerting

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// t0 is the start of every test's event time: far from the wall clock, so
// a test that took time from the wall clock would fail.
var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// harness is one embedded JetStream and the alerting services a test runs
// on it, on one fake clock at t0.
type harness struct {
	t     *testing.T
	js    *testutil.JetStream
	log   *logBuffer
	clock *testutil.FakeClock
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return &harness{t: t, js: testutil.StartJetStream(t, testutil.JetStreamOptions{}), log: &logBuffer{}, clock: testutil.NewFakeClock(t0)}
}

// running is a started service.
type running struct {
	svc    *Service
	cancel context.CancelFunc
	done   chan error
}

// start runs a service with cfg on the harness's clock (which moves only
// when a test advances it: otherwise ticks happen only through Tick) until
// stop or the test's end.
func (h *harness) start(cfg Config) *running {
	return h.startWith(cfg, nil)
}

func (h *harness) startWith(cfg Config, prepare func(*Service)) *running {
	h.t.Helper()
	r := h.launchWith(cfg, prepare)
	testutil.Eventually(h.t, 30*time.Second, func() bool { return r.svc.Status().CaughtUp }, "alerting did not catch up")
	return r
}

// launch starts a service as start does, without waiting for it to catch
// up.
func (h *harness) launch(cfg Config) *running {
	h.t.Helper()
	return h.launchWith(cfg, nil)
}

func (h *harness) launchWith(cfg Config, prepare func(*Service)) *running {
	h.t.Helper()
	log := slog.New(slog.NewTextHandler(io.MultiWriter(h.log), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, svc.Deps{Log: log, NC: h.js.NC, JS: h.js.JS, Streams: events.StreamOptions{Replicas: 1}, Clock: h.clock})
	if err != nil {
		h.t.Fatalf("new alerting: %v", err)
	}
	if prepare != nil {
		prepare(s)
	}
	return h.run(s)
}

func (h *harness) run(s *Service) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{svc: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	h.t.Cleanup(func() { r.stop(h.t) })
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("alerting Run returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("alerting did not stop")
	}
}

// tick runs a manual tick.
func (r *running) tick(t *testing.T, tm time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.svc.Tick(ctx, tm); err != nil {
		t.Fatalf("tick at %s: %v", tm, err)
	}
}

// snapshot has the service write a snapshot now and waits for it.
func (r *running) snapshot(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	select {
	case r.svc.snapReq <- done:
	case <-ctx.Done():
		t.Fatal("snapshot request not taken")
	}
	if err := <-done; err != nil {
		t.Fatalf("snapshot: %v", err)
	}
}

// waitShadow waits until the service has handled SHADOW up to seq.
func (r *running) waitShadow(t *testing.T, seq uint64) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() bool { return r.svc.Status().ShadowSeq >= seq },
		"alerting did not handle SHADOW up to %d (at %v)", seq, lazy(func() string { return fmt.Sprint(r.svc.Status().ShadowSeq) }))
}

func (r *running) waitRollout(t *testing.T, seq uint64) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() bool { return r.svc.Status().RolloutSeq >= seq },
		"alerting did not handle ROLLOUT up to %d", seq)
}

// publish stores an event with its id as Nats-Msg-Id and returns its
// stream sequence.
func (h *harness) publish(subject string, ev events.Event) uint64 {
	h.t.Helper()
	data, err := ev.Marshal()
	if err != nil {
		h.t.Fatal(err)
	}
	return h.publishRaw(subject, data, ev.ID)
}

func (h *harness) publishRaw(subject string, data []byte, id string) uint64 {
	h.t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = data
	if id != "" {
		msg.Header.Set(jetstream.MsgIDHeader, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := h.js.JS.PublishMsg(ctx, msg)
	if err != nil {
		h.t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

// report publishes a shadow report of device t/dev and returns its SHADOW
// sequence.
func (h *harness) report(dev, version, status string, dur float64, when time.Time) uint64 {
	h.t.Helper()
	fw := events.Firmware{Version: version, Timestamp: when, Status: status, UpdateDuration: dur}
	if status == events.StatusFailed {
		code := "E_FLASH"
		fw.ErrorCode = &code
	}
	ev, err := events.New(events.ReportEventID("t", dev, fw), events.SourceBridge, events.TypeShadowReported,
		events.ShadowReportedSubject("t", dev), when,
		events.ShadowReportedData{TypeID: "t", DeviceID: dev, Topic: events.ReportTopic("t", dev), Firmware: fw})
	if err != nil {
		h.t.Fatal(err)
	}
	return h.publish(events.ShadowReportedSubject("t", dev), ev)
}

func (h *harness) desired(dev, job string, wave int, version string, when time.Time) uint64 {
	h.t.Helper()
	ev, err := events.New(events.IdentityID("sd", dev, job, when.String()), events.SourceRollout, events.TypeShadowDesired,
		events.ShadowDesiredSubject("t", dev), when,
		events.ShadowDesiredData{TypeID: "t", DeviceID: dev, JobID: job, Wave: wave, Firmware: events.DesiredFirmware{Version: version}})
	if err != nil {
		h.t.Fatal(err)
	}
	return h.publish(events.ShadowDesiredSubject("t", dev), ev)
}

func (h *harness) rollout(job, name string, wave int, target string, when time.Time) uint64 {
	h.t.Helper()
	d := events.RolloutData{JobID: job, Wave: wave}
	if target != "" {
		d.Target = &events.DesiredFirmware{Version: target}
	}
	ev, err := events.New(events.IdentityID("ro", job, name, fmt.Sprint(wave)), events.SourceRollout,
		"io.otawatch.rollout."+name+".v1", events.RolloutSubject(job, name), when, d)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.publish(events.RolloutSubject(job, name), ev)
}

// targetD1 starts wave 1 of job j1 with device t/d1 in it (its desired
// state at 0s, so stale-shadow holds for it from 10 minutes on) and waits
// until the service has handled it; it returns the SHADOW and ROLLOUT
// sequences.
func (h *harness) targetD1(r *running) (shadowSeq, rolloutSeq uint64) {
	h.t.Helper()
	h.rollout("j1", "job_started", 0, "", at(0))
	rolloutSeq = h.rollout("j1", "wave_started", 1, "", at(0))
	shadowSeq = h.desired("d1", "j1", 1, "4.2.1", at(0))
	r.waitShadow(h.t, shadowSeq)
	r.waitRollout(h.t, rolloutSeq)
	return shadowSeq, rolloutSeq
}

// alert is one ALERTS event, decoded.
type alert struct {
	ID      string
	Subject string
	Time    time.Time
	events.AlertData
}

func (a alert) String() string {
	return fmt.Sprintf("%s %s %s %s@%s", a.State, a.Severity, a.Key, a.Reason, a.Time.Sub(t0))
}

// alerts reads ALERTS, optionally only one rule's events.
func (h *harness) alerts(rule string) []alert {
	h.t.Helper()
	var out []alert
	for _, m := range h.js.Events(h.t, events.StreamAlerts) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			h.t.Fatalf("ALERTS seq %d: %v", m.Sequence, err)
		}
		if ev.Type == events.TypeRulesLoaded {
			continue // the service's rule set (rulesrecord.go), not an alert
		}
		var a alert
		if err := ev.DecodeData(&a.AlertData); err != nil {
			h.t.Fatal(err)
		}
		a.ID, a.Subject, a.Time = ev.ID, m.Subject, ev.Time
		if m.Header.Get(jetstream.MsgIDHeader) != ev.ID {
			h.t.Errorf("ALERTS seq %d: Nats-Msg-Id %q, event id %q", m.Sequence, m.Header.Get(jetstream.MsgIDHeader), ev.ID)
		}
		if rule == "" || a.RuleID == rule {
			out = append(out, a)
		}
	}
	return out
}

// waitAlerts waits until ALERTS holds n events of rule ("": of any).
func (h *harness) waitAlerts(rule string, n int) []alert {
	h.t.Helper()
	var got []alert
	testutil.Eventually(h.t, 30*time.Second, func() bool {
		got = h.alerts(rule)
		return len(got) >= n
	}, "ALERTS has %v of rule %q, want %d", lazy(func() string { return fmt.Sprintf("%d events (%s)", len(got), describe(got)) }), rule, n)
	return got
}

// lazy is a message argument formatted when the message is.
type lazy func() string

func (f lazy) String() string { return f() }

func describe(as []alert) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = a.String()
	}
	return strings.Join(parts, "; ")
}

// shadowEvents returns the SHADOW events of one type.
func (h *harness) shadowEvents(typ string) []events.Event {
	h.t.Helper()
	var out []events.Event
	for _, m := range h.js.Events(h.t, events.StreamShadow) {
		ev, err := events.Decode(m.Data)
		if err == nil && ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// logBuffer collects the service's log lines for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
