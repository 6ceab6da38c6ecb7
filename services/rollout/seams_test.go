package rollout

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestNewRefusesBadConfig: New applies the defaults, validates, and lists
// every problem, keyed as in the file, in one *conf.Error.
func TestNewRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // keys
	}{
		{"defaults", Config{}, nil},
		{"every problem at once", Config{Waves: -1, Gate: 2, OnFailure: "retry", Tick: 10 * time.Second, Instance: "a b"},
			[]string{"rollout.instance", "rollout.waves", "rollout.gate", "rollout.on_failure", "rollout.tick"}},
		{"tls files on a plain broker", Config{Broker: "tcp://127.0.0.1:1883", TLS: conf.TLSClient{CAFile: "/nonexistent/ca.pem"}},
			[]string{"rollout.tls", "rollout.tls.ca_file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, svc.Deps{})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("New: %v, want nil", err)
				}
				return
			}
			var ce *conf.Error
			if !errors.As(err, &ce) {
				t.Fatalf("New: %v (%T), want a *conf.Error", err, err)
			}
			var got []string
			for _, p := range ce.Problems {
				got = append(got, p.Key)
			}
			// Keys in any order: the walk reports nested sections first.
			sort.Strings(got)
			want := append([]string(nil), tt.want...)
			sort.Strings(want)
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("problems %v, want keys %v", ce.Problems, tt.want)
			}
		})
	}
}

// runAlone runs the service on js with deps.Clock set to clock (nil: the
// wall clock) until the test ends, and waits until it has caught up.
func runAlone(t *testing.T, js *testutil.JetStream, clock svc.Clock) *Service {
	t.Helper()
	cfg := Config{Broker: "tcp://127.0.0.1:1", Tick: 20 * time.Millisecond, LeaseTTL: time.Second}
	s, err := New(cfg, svc.Deps{Log: testLog(), NC: js.NC, JS: js.JS, Streams: events.StreamOptions{Replicas: 1},
		Health: svc.NewHealth(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := s.waitReady(wctx); err != nil {
		t.Fatalf("never caught up: %v", err)
	}
	return s
}

// TestClockIsDepsClock: what the service stamps from its own clock (a
// created job's time) comes from svc.Deps.Clock.
func TestClockIsDepsClock(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	at := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	s := runAlone(t, js, testutil.NewFakeClock(at))
	spec := &events.RolloutSpec{ID: "clocked", Target: target(), Devices: []string{"sensor/d-1"}}
	rep := s.Handle(context.Background(), CmdCreate, events.RolloutRequest{Spec: spec, Actor: "test"})
	if rep.Error != "" {
		t.Fatalf("create: %s", rep.Error)
	}
	if !rep.Job.CreatedAt.Equal(at) {
		t.Errorf("job created at %s, want the fake clock's %s", rep.Job.CreatedAt, at)
	}
	for _, m := range js.Events(t, events.StreamRollout) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if !ev.Time.Equal(at) {
			t.Errorf("%s at %s, want the fake clock's %s", ev.Type, ev.Time, at)
		}
	}
}

// TestFoldRejectsWhatItCannotApply: a ROLLOUT message that is not an
// envelope and an event the job fold refuses (a wave before its job) each
// end on REJECTED (rejected.rollout) with the reason, and the service
// catches up and folds what comes next.
func TestFoldRejectsWhatItCannotApply(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	ctx := context.Background()
	if _, err := js.JS.Publish(ctx, events.RolloutSubject("junk", "job_created"), []byte("not an envelope")); err != nil {
		t.Fatal(err)
	}
	ev, err := events.New("orphan", events.SourceRollout, events.TypeRolloutWaveStarted, "ghost", time.Now(),
		events.RolloutData{JobID: "ghost", Wave: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ev.Marshal()
	if _, err := js.JS.Publish(ctx, events.RolloutSubject("ghost", "wave_started"), b); err != nil {
		t.Fatal(err)
	}

	s := runAlone(t, js, nil)
	testutil.Eventually(t, 10*time.Second, func() bool { return js.Count(t, events.StreamRejected) == 2 },
		"REJECTED holds %d records, want 2", js.Count(t, events.StreamRejected))
	want := map[uint64]string{1: "decode event", 2: "before job_created"}
	for _, m := range js.Events(t, events.StreamRejected) {
		rev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		var d events.RejectedData
		if err := rev.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		if m.Subject != events.RejectedSubject(RejectedSource) || d.Source != RejectedSource || d.Stream != events.StreamRollout {
			t.Errorf("record on %s: source %q stream %q, want rejected.rollout, rollout, ROLLOUT", m.Subject, d.Source, d.Stream)
		}
		if w, ok := want[d.StreamSeq]; !ok || !strings.Contains(d.Reason, w) {
			t.Errorf("record of ROLLOUT seq %d: reason %q, want one with %q", d.StreamSeq, d.Reason, w)
		}
		delete(want, d.StreamSeq)
	}

	spec := &events.RolloutSpec{ID: "after", Target: target(), Devices: []string{"sensor/d-1"}}
	if rep := s.Handle(ctx, CmdCreate, events.RolloutRequest{Spec: spec, Actor: "test"}); rep.Error != "" {
		t.Fatalf("create after the rejects: %s", rep.Error)
	}
	if rep := s.Handle(ctx, "show", events.RolloutRequest{JobID: "after"}); rep.Error != "" || rep.Job.Status != events.RolloutCreated {
		t.Errorf("show after: %+v, want the created job", rep)
	}
}
