package simulator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// sentReport is one publish attempt a fakeLink saw.
type sentReport struct {
	at      time.Time
	topic   string
	payload []byte
	fw      events.Firmware
	err     error
}

// fakeLink stands in for the broker in unit tests: it records every
// publish and answers it at once, failing the attempts fail picks.
type fakeLink struct {
	clock    svc.Clock
	mu       sync.Mutex
	attempts map[string]int // per status
	fail     func(status string, attempt int) bool
	sent     []sentReport
	online   []bool
}

func (l *fakeLink) publish(topic string, payload []byte, done func(error)) {
	var r report
	if err := json.Unmarshal(payload, &r); err != nil {
		panic(err)
	}
	fw := r.State.Reported.Firmware
	l.mu.Lock()
	if l.attempts == nil {
		l.attempts = map[string]int{}
	}
	n := l.attempts[fw.Status]
	l.attempts[fw.Status]++
	var err error
	if l.fail != nil && l.fail(fw.Status, n) {
		err = errors.New("broker unreachable")
	}
	l.sent = append(l.sent, sentReport{at: l.clock.Now(), topic: topic, payload: payload, fw: fw, err: err})
	l.mu.Unlock()
	done(err)
}

func (l *fakeLink) setOnline(_ context.Context, on bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.online = append(l.online, on)
	return nil
}

func (l *fakeLink) reports() []sentReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sentReport(nil), l.sent...)
}

// acked returns the statuses of the publishes that succeeded, in order.
func (l *fakeLink) acked() []string {
	var out []string
	for _, r := range l.reports() {
		if r.err == nil {
			out = append(out, r.fw.Status+" "+r.fw.Version)
		}
	}
	return out
}

// unitFleet is a fleet-mode fleet on a fake clock whose devices publish to
// fakeLinks; nothing connects.
func unitFleet(t *testing.T, cfg FleetConfig) (*Fleet, *fakeClock, []*fakeLink) {
	t.Helper()
	clk := newFakeClock()
	cfg.Clock = clk
	if cfg.Mode == "" {
		cfg.Mode = ModeFleet
	}
	f, err := NewFleet(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.runCtx.Store(&ctx)
	close(f.ready)
	links := make([]*fakeLink, len(f.devs))
	for i, d := range f.devs {
		links[i] = &fakeLink{clock: clk}
		d.link = links[i]
	}
	return f, clk, links
}

func deltaPayload(t testing.TB, version, job string, ts time.Time) []byte {
	t.Helper()
	b, err := json.Marshal(events.ShadowDelta{
		State:     events.DeltaState{Firmware: &events.DeltaFirmware{Version: version, Checksum: Checksum(version), URL: "https://fw.example/" + version, JobID: job}},
		Timestamp: ts,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReportRetryBackoff runs a device's report retries on a fake clock:
// a failed publish is retried after 5 s, 15 s and 45 s (divided by the time
// scale), and after the third retry fails the update is failed locally.
func TestReportRetryBackoff(t *testing.T) {
	ts := time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		timeScale float64
		fail      func(status string, n int) bool
		// wantAttempts are the offsets from the first in_progress attempt
		// of every in_progress attempt.
		wantAttempts []time.Duration
		wantAcked    []string
		wantLocal    int
		wantStatus   string
		wantCode     string
		wantRetries  int64
	}{
		{
			name: "no failure", timeScale: 1,
			wantAttempts: []time.Duration{0},
			wantAcked:    []string{"in_progress 4.2.0", "completed 4.2.0"},
			wantStatus:   statusCompleted,
		},
		{
			name: "two failures then delivered", timeScale: 1,
			fail:         func(s string, n int) bool { return s == statusInProgress && n < 2 },
			wantAttempts: []time.Duration{0, 5 * time.Second, 20 * time.Second},
			wantAcked:    []string{"in_progress 4.2.0", "completed 4.2.0"},
			wantStatus:   statusCompleted,
			wantRetries:  2,
		},
		{
			name: "every attempt fails", timeScale: 1,
			fail:         func(s string, n int) bool { return true },
			wantAttempts: []time.Duration{0, 5 * time.Second, 20 * time.Second, 65 * time.Second},
			wantLocal:    1,
			wantStatus:   statusFailed,
			wantCode:     ErrCodeReportUndelivered,
			wantRetries:  3,
		},
		{
			name: "time scale 10", timeScale: 10,
			fail:         func(s string, n int) bool { return s == statusInProgress },
			wantAttempts: []time.Duration{0, 500 * time.Millisecond, 2 * time.Second, 6500 * time.Millisecond},
			wantLocal:    1,
			wantStatus:   statusFailed,
			wantCode:     ErrCodeReportUndelivered,
			wantRetries:  3,
		},
		{
			name: "time scale 1000: retries no sooner than 100 ms", timeScale: 1000,
			fail:         func(s string, n int) bool { return s == statusInProgress },
			wantAttempts: []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond},
			wantLocal:    1,
			wantStatus:   statusFailed,
			wantCode:     ErrCodeReportUndelivered,
			wantRetries:  3,
		},
		{
			name: "final report delivered on the last retry", timeScale: 1,
			fail:         func(s string, n int) bool { return s == statusCompleted && n < 3 },
			wantAttempts: []time.Duration{0},
			wantAcked:    []string{"in_progress 4.2.0", "completed 4.2.0"},
			wantStatus:   statusCompleted,
			wantRetries:  3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, clk, links := unitFleet(t, FleetConfig{Devices: 1, TimeScale: tt.timeScale, Seed: 3})
			links[0].fail = tt.fail
			start := clk.Now()
			f.devs[0].handleDelta(deltaPayload(t, "4.2.0", "job-1", ts), false, false)
			clk.Advance(24 * time.Hour)

			var got []time.Duration
			for _, r := range links[0].reports() {
				if r.fw.Status == statusInProgress {
					got = append(got, r.at.Sub(start))
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantAttempts) {
				t.Errorf("in_progress attempts at %v, want %v", got, tt.wantAttempts)
			}
			if fmt.Sprint(links[0].acked()) != fmt.Sprint(tt.wantAcked) {
				t.Errorf("acknowledged reports %v, want %v", links[0].acked(), tt.wantAcked)
			}
			st, _ := f.Device("d-00001")
			if st.LastStatus != tt.wantStatus || st.LastErrorCode != tt.wantCode || st.LocalFailures != tt.wantLocal {
				t.Errorf("device ended %s/%q with %d local failures, want %s/%q with %d", st.LastStatus, st.LastErrorCode, st.LocalFailures, tt.wantStatus, tt.wantCode, tt.wantLocal)
			}
			wantInstalled := "4.1.5"
			if tt.wantStatus == statusCompleted {
				wantInstalled = "4.2.0"
			}
			if st.Installed != wantInstalled {
				t.Errorf("installed %s, want %s", st.Installed, wantInstalled)
			}
			if s := f.Stats(); s.Retries != tt.wantRetries {
				t.Errorf("stats count %d retries, want %d", s.Retries, tt.wantRetries)
			}
			// Retries reuse the report: same bytes, so the bridge stores it once.
			byStatus := map[string]string{}
			for _, r := range links[0].reports() {
				if prev, ok := byStatus[r.fw.Status]; ok && prev != string(r.payload) {
					t.Errorf("a retry of %s changed the payload:\n%s\n%s", r.fw.Status, prev, r.payload)
				}
				byStatus[r.fw.Status] = string(r.payload)
			}
			if clk.Pending() != 0 {
				t.Errorf("%d timers left after the update ended", clk.Pending())
			}
		})
	}
}

// TestDesiredStateHandling feeds one device sequences of desired-state
// deliveries and checks what it installs, reports and counts.
func TestDesiredStateHandling(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC)
	type step struct {
		payload  []byte
		retained bool
		dup      bool
		offline  bool          // deliver while the device is offline
		advance  time.Duration // clock time after the delivery
	}
	v2 := func(ts time.Time) []byte { return deltaPayload(t, "4.2.0", "job-1", ts) }
	tests := []struct {
		name         string
		failureRate  float64
		steps        []step
		wantInstalls int
		wantReceived int
		wantAcked    []string
		wantIgnored  int64
		wantBad      int64
	}{
		{
			name:         "one delta, one install",
			steps:        []step{{payload: v2(t0), advance: time.Hour}},
			wantInstalls: 1, wantReceived: 1,
			wantAcked: []string{"in_progress 4.2.0", "completed 4.2.0"},
		},
		{
			name: "retained replay after reconnect is not a second install",
			steps: []step{
				{payload: v2(t0), advance: time.Second},
				{payload: v2(t0), retained: true, advance: time.Hour},
				{payload: v2(t0), retained: true, advance: time.Hour},
			},
			wantInstalls: 1, wantReceived: 1, wantIgnored: 2,
			wantAcked: []string{"in_progress 4.2.0", "completed 4.2.0"},
		},
		{
			name: "the same desired state published twice is received twice, installed once",
			steps: []step{
				{payload: v2(t0), advance: time.Hour},
				{payload: v2(t0), advance: time.Hour},
			},
			wantInstalls: 1, wantReceived: 2, wantIgnored: 1,
			wantAcked: []string{"in_progress 4.2.0", "completed 4.2.0"},
		},
		{
			name: "a QoS 1 redelivery (DUP) is not counted again",
			steps: []step{
				{payload: v2(t0), advance: time.Second},
				{payload: v2(t0), dup: true, advance: time.Hour},
			},
			wantInstalls: 1, wantReceived: 1, wantIgnored: 1,
			wantAcked: []string{"in_progress 4.2.0", "completed 4.2.0"},
		},
		{
			name:         "the installed version asks nothing",
			steps:        []step{{payload: deltaPayload(t, "4.1.5", "job-0", t0), advance: time.Hour}},
			wantInstalls: 0, wantReceived: 1, wantIgnored: 1,
		},
		{
			name: "in sync and cleared deltas ask nothing",
			steps: []step{
				{payload: []byte(`{"state":{},"timestamp":"2026-11-25T11:00:00Z"}`), advance: time.Hour},
				{payload: nil, retained: true, advance: time.Hour},
			},
			wantInstalls: 0, wantReceived: 1,
		},
		{
			name:         "garbage is counted and ignored",
			steps:        []step{{payload: []byte(`{"state":`), advance: time.Hour}},
			wantInstalls: 0, wantReceived: 1, wantBad: 1,
		},
		{
			name: "a new target during an install follows it",
			steps: []step{
				{payload: v2(t0), advance: time.Second},
				{payload: deltaPayload(t, "4.3.0", "job-2", t0.Add(time.Minute)), advance: 24 * time.Hour},
			},
			wantInstalls: 2, wantReceived: 2,
			wantAcked: []string{"in_progress 4.2.0", "completed 4.2.0", "in_progress 4.3.0", "completed 4.3.0"},
		},
		{
			name:        "a failed update is not retried by the same desired state, but by a newer one",
			failureRate: 1,
			steps: []step{
				{payload: v2(t0), advance: time.Hour},
				{payload: v2(t0), retained: true, advance: time.Hour},
				{payload: v2(t0.Add(time.Hour)), advance: time.Hour},
			},
			wantInstalls: 2, wantReceived: 2, wantIgnored: 1,
			wantAcked: []string{"in_progress 4.2.0", "failed 4.2.0", "in_progress 4.2.0", "failed 4.2.0"},
		},
		{
			name:         "a delta delivered while offline is missed",
			steps:        []step{{payload: v2(t0), offline: true, advance: time.Hour}},
			wantInstalls: 0, wantReceived: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, clk, links := unitFleet(t, FleetConfig{Devices: 1, FailureRate: tt.failureRate, Seed: 9})
			d := f.devs[0]
			for _, s := range tt.steps {
				d.mu.Lock()
				d.online = !s.offline
				d.mu.Unlock()
				d.handleDelta(s.payload, s.retained, s.dup)
				clk.Advance(s.advance)
			}
			st, _ := f.Device(d.id)
			if st.Installs != tt.wantInstalls {
				t.Errorf("installs %d, want %d", st.Installs, tt.wantInstalls)
			}
			if got := f.DeltasReceived(d.id); got != tt.wantReceived || st.DeltasReceived != got {
				t.Errorf("deltas received %d (state %d), want %d", got, st.DeltasReceived, tt.wantReceived)
			}
			if fmt.Sprint(links[0].acked()) != fmt.Sprint(tt.wantAcked) {
				t.Errorf("reports %v, want %v", links[0].acked(), tt.wantAcked)
			}
			s := f.Stats()
			if s.DeltasIgnored != tt.wantIgnored || s.BadDeltas != tt.wantBad {
				t.Errorf("ignored %d bad %d, want %d and %d", s.DeltasIgnored, s.BadDeltas, tt.wantIgnored, tt.wantBad)
			}
		})
	}
}

// TestSeededFailures checks that the failure rate is honoured over a seeded
// run with exact, reproducible counts, independent of timing: each
// device's outcome comes from its own seeded draws.
func TestSeededFailures(t *testing.T) {
	const devices = 2000
	run := func(seed uint64) (failed int, codes map[string]int, outcome []string) {
		f, clk, links := unitFleet(t, FleetConfig{Devices: devices, FailureRate: 0.1, Seed: seed, TimeScale: 60})
		delta := deltaPayload(t, "4.2.0", "job-1", time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC))
		for _, d := range f.devs {
			d.handleDelta(delta, false, false)
		}
		clk.Advance(24 * time.Hour)
		codes = map[string]int{}
		for i, d := range f.devs {
			st := d.state()
			outcome = append(outcome, st.LastStatus+"/"+st.LastErrorCode)
			if st.LastStatus == statusFailed {
				failed++
				codes[st.LastErrorCode]++
			}
			if n := len(links[i].acked()); n != 2 {
				t.Fatalf("device %s sent %d reports, want 2", d.id, n)
			}
		}
		s := f.Stats()
		if int(s.Failed) != failed || int(s.Completed) != devices-failed || s.Installs != devices {
			t.Errorf("stats failed=%d completed=%d installs=%d, devices say failed=%d of %d", s.Failed, s.Completed, s.Installs, failed, devices)
		}
		return failed, codes, outcome
	}
	failed, codes, first := run(42)
	// The exact count for seed 42: any change to how devices draw shows here.
	if failed != 204 {
		t.Errorf("seed 42: %d failed, want 204", failed)
	}
	// And it is what the rate says, within 3 standard deviations.
	mean, sd := devices*0.1, math.Sqrt(devices*0.1*0.9)
	if math.Abs(float64(failed)-mean) > 3*sd {
		t.Errorf("%d failed of %d at rate 0.1: outside %.0f±%.0f", failed, devices, mean, 3*sd)
	}
	if len(codes) != len(DefaultErrorCodes) {
		t.Errorf("error codes drawn %v, want all of %v", codes, DefaultErrorCodes)
	}
	if _, _, again := run(42); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Error("the same seed gave different per-device outcomes")
	}
	if _, _, other := run(43); fmt.Sprint(other) == fmt.Sprint(first) {
		t.Error("another seed gave the same per-device outcomes")
	}
}

// TestScheduledOutage runs the configured offline share on the fake clock:
// exactly that share goes offline within the window, stays away, comes back
// and reconciles (republishing an outcome the broker never acknowledged).
func TestScheduledOutage(t *testing.T) {
	f, clk, links := unitFleet(t, FleetConfig{
		Devices: 40, OfflineShare: 0.25, OfflineWithin: 10 * time.Minute, OfflineFor: 20 * time.Minute, Seed: 5,
	})
	for _, d := range f.devs {
		if d.offlineFor > 0 {
			d := d
			f.clock.AfterFunc(f.scale(d.offlineAt), func() { d.wantOffline(d.offlineFor) })
		}
	}
	clk.Advance(10 * time.Minute)
	if s := f.Stats(); s.Offline != 10 || s.OfflineEvents != 10 {
		t.Fatalf("after the window: %d offline, %d outages; want 10 and 10", s.Offline, s.OfflineEvents)
	}
	offline := map[int]bool{}
	for i, l := range links {
		l.mu.Lock()
		if fmt.Sprint(l.online) == "[false]" {
			offline[i] = true
		}
		l.mu.Unlock()
	}
	if len(offline) != 10 {
		t.Fatalf("%d links were taken offline, want 10", len(offline))
	}
	// Outages last OfflineFor x U(0.5, 1.5): all over within 10 + 30 min.
	clk.Advance(30 * time.Minute)
	s := f.Stats()
	if s.Offline != 0 || s.Reconnects != 10 {
		t.Fatalf("after the outages: %d offline, %d reconnects; want 0 and 10", s.Offline, s.Reconnects)
	}
	for i := range offline {
		l := links[i]
		if fmt.Sprint(l.online) != "[false true]" {
			t.Errorf("device %d link went %v, want [false true]", i, l.online)
		}
		if st := f.devs[i].state(); st.Reconnects != 1 || !st.Online {
			t.Errorf("device %d: online %v after %d reconnects", i, st.Online, st.Reconnects)
		}
	}
}

// TestOutageWaitsForUpdate: an outage that falls into an update starts when
// the update ends, so a device never disconnects with reports pending.
func TestOutageWaitsForUpdate(t *testing.T) {
	f, clk, links := unitFleet(t, FleetConfig{Devices: 1, Seed: 1})
	d := f.devs[0]
	d.handleDelta(deltaPayload(t, "4.2.0", "job-1", time.Now()), false, false)
	d.wantOffline(-1)
	if st := d.state(); !st.Online || st.Installing != "4.2.0" {
		t.Fatalf("mid-update: online=%v installing=%q, want online and installing 4.2.0", st.Online, st.Installing)
	}
	clk.Advance(time.Hour)
	st := d.state()
	if st.Online || st.LastStatus != statusCompleted {
		t.Fatalf("after the update: online=%v last=%q, want offline after completing", st.Online, st.LastStatus)
	}
	if got := fmt.Sprint(links[0].acked()); got != "[in_progress 4.2.0 completed 4.2.0]" {
		t.Errorf("reports %s", got)
	}
}

// TestReconcileWithAPI: a device coming back online asks the HTTP API for its
// shadow delta and acts on it: installs a version it does not run,
// republishes its state when the cloud wants what it already runs, and
// reports an update it gave up locally. The server stands in for otawatch's
// api service, answering the documented endpoint.
func TestReconcileWithAPI(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		// before runs on the device before the outage.
		before    func(t *testing.T, d *device, clk *fakeClock, l *fakeLink)
		answer    string // body of the API's answer; "" is a 500
		wantAcked []string
		wantErrs  int64
	}{
		{
			name:      "delta for a new version installs it",
			answer:    string(deltaPayload(t, "4.2.0", "job-1", t0)),
			wantAcked: []string{"in_progress 4.2.0", "completed 4.2.0"},
		},
		{
			name:      "in sync does nothing",
			answer:    `{"state":{},"timestamp":"2026-11-25T11:00:00Z"}`,
			wantAcked: nil,
		},
		{
			name: "delta for the installed version republishes the state",
			before: func(t *testing.T, d *device, clk *fakeClock, l *fakeLink) {
				d.handleDelta(deltaPayload(t, "4.2.0", "job-1", t0), false, false)
				clk.Advance(time.Hour)
			},
			answer:    string(deltaPayload(t, "4.2.0", "job-1", t0)),
			wantAcked: []string{"in_progress 4.2.0", "completed 4.2.0", "completed 4.2.0"},
		},
		{
			name: "an update given up locally is reported",
			before: func(t *testing.T, d *device, clk *fakeClock, l *fakeLink) {
				l.fail = func(s string, n int) bool { return s == statusCompleted && n < 4 }
				d.handleDelta(deltaPayload(t, "4.2.0", "job-1", t0), false, false)
				clk.Advance(time.Hour)
			},
			answer:    `{"state":{},"timestamp":"2026-11-25T11:00:00Z"}`,
			wantAcked: []string{"in_progress 4.2.0", "failed 4.2.0"},
		},
		{
			name:      "an API error leaves the device as it was",
			answer:    "",
			wantAcked: nil,
			wantErrs:  1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var asked []string
			var mu sync.Mutex
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				asked = append(asked, r.URL.Path)
				mu.Unlock()
				if tt.answer == "" {
					http.Error(w, "boom", http.StatusInternalServerError)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(tt.answer))
			}))
			defer srv.Close()
			f, clk, links := unitFleet(t, FleetConfig{Devices: 1, APIURL: srv.URL, Seed: 1})
			d := f.devs[0]
			if tt.before != nil {
				tt.before(t, d, clk, links[0])
			}
			d.wantOffline(-1)
			d.comeBack()
			clk.Advance(time.Hour)
			if got := fmt.Sprint(links[0].acked()); got != fmt.Sprint(tt.wantAcked) {
				t.Errorf("reports %s, want %v", got, tt.wantAcked)
			}
			mu.Lock()
			defer mu.Unlock()
			if want := "/api/v0002/device/types/sensor/devices/d-00001/shadow/delta"; len(asked) != 1 || asked[0] != want {
				t.Errorf("API asked %v, want [%s]", asked, want)
			}
			if s := f.Stats(); s.Reconciles != 1 || s.ReconcileErrors != tt.wantErrs {
				t.Errorf("reconciles %d errors %d, want 1 and %d", s.Reconciles, s.ReconcileErrors, tt.wantErrs)
			}
		})
	}
}
