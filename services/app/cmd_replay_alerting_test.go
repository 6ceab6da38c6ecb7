package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/alerting"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/notify/webhook"
)

// replayFleet is a recorded rollout for the replay commands: 30 devices on
// 4.1.5, a job whose first wave sends 4.2.1 to 20 of them, of which 6
// fail (success rate 80%: success-rate-low is critical), 3 of those retry
// and succeed (90%: it drops to a warning), and a device that goes silent.
type replayFleet struct {
	t  *testing.T
	js *testutil.JetStream
	t0 time.Time
}

func (f *replayFleet) publish(subject string, ev events.Event) uint64 {
	f.t.Helper()
	b, err := ev.Marshal()
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := f.js.JS.Publish(ctx, subject, b, jetstream.WithMsgID(ev.ID))
	if err != nil {
		f.t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

func (f *replayFleet) report(dev, version, status string, dur float64, at time.Time) uint64 {
	f.t.Helper()
	fw := events.Firmware{Version: version, Timestamp: at, Status: status, UpdateDuration: dur}
	if status == events.StatusFailed {
		code := "E_FLASH"
		fw.ErrorCode = &code
	}
	ev, err := events.New(events.ReportEventID("gw", dev, fw), events.SourceBridge, events.TypeShadowReported,
		events.ShadowReportedSubject("gw", dev), at, events.ShadowReportedData{TypeID: "gw", DeviceID: dev, Firmware: fw})
	if err != nil {
		f.t.Fatal(err)
	}
	return f.publish(events.ShadowReportedSubject("gw", dev), ev)
}

func (f *replayFleet) desired(dev string, at time.Time) uint64 {
	f.t.Helper()
	ev, err := events.New(events.IdentityID("sd", dev, at.String()), events.SourceRollout, events.TypeShadowDesired,
		events.ShadowDesiredSubject("gw", dev), at,
		events.ShadowDesiredData{TypeID: "gw", DeviceID: dev, JobID: "job1", Wave: 1, Firmware: events.DesiredFirmware{Version: "4.2.1"}})
	if err != nil {
		f.t.Fatal(err)
	}
	return f.publish(events.ShadowDesiredSubject("gw", dev), ev)
}

func (f *replayFleet) rollout(name string, wave int, at time.Time) uint64 {
	f.t.Helper()
	d := events.RolloutData{JobID: "job1", Wave: wave, Target: &events.DesiredFirmware{Version: "4.2.1"}}
	ev, err := events.New(events.IdentityID("ro", name, fmt.Sprint(wave)), events.SourceRollout,
		"io.otawatch.rollout."+name+".v1", events.RolloutSubject("job1", name), at, d)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.publish(events.RolloutSubject("job1", name), ev)
}

// play records the rollout through the running alerting service al,
// ticking every 30 s of event time for 15 minutes.
func (f *replayFleet) play(al *alerting.Service) {
	f.t.Helper()
	sec := func(s int) time.Time { return f.t0.Add(time.Duration(s) * time.Second) }
	type step struct {
		at time.Time
		do func() (stream string, seq uint64)
	}
	var steps []step
	add := func(at time.Time, do func() (string, uint64)) { steps = append(steps, step{at, do}) }
	shadow := func(seq uint64) (string, uint64) { return events.StreamShadow, seq }
	for i := 1; i <= 30; i++ {
		dev := fmt.Sprintf("d%02d", i)
		add(sec(i), func() (string, uint64) { return shadow(f.report(dev, "4.1.5", events.StatusCompleted, 60, sec(i))) })
	}
	for i, name := range []string{"job_created", "job_started", "wave_started"} {
		add(sec(60+i), func() (string, uint64) { return events.StreamRollout, f.rollout(name, 1, sec(60+i)) })
	}
	for i := 1; i <= 20; i++ {
		dev := fmt.Sprintf("d%02d", i)
		add(sec(70+i), func() (string, uint64) { return shadow(f.desired(dev, sec(70+i))) })
		if i == 20 {
			continue // silent: stale
		}
		add(sec(100+i), func() (string, uint64) { return shadow(f.report(dev, "4.2.1", events.StatusInProgress, 0, sec(100+i))) })
		if i >= 14 { // d14..d19 fail
			add(sec(200+i), func() (string, uint64) { return shadow(f.report(dev, "4.1.5", events.StatusFailed, 80, sec(200+i))) })
			if i <= 16 { // d14..d16 retry and succeed
				add(sec(500+i), func() (string, uint64) { return shadow(f.report(dev, "4.2.1", events.StatusCompleted, 70, sec(500+i))) })
			}
			continue
		}
		add(sec(160+i), func() (string, uint64) {
			return shadow(f.report(dev, "4.2.1", events.StatusCompleted, float64(55+i), sec(160+i)))
		})
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].at.Before(steps[j].at) })
	const tick = 30 * time.Second
	next := 0
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for b := f.t0.Add(tick); !b.After(f.t0.Add(15 * time.Minute)); b = b.Add(tick) {
		for ; next < len(steps) && steps[next].at.Before(b); next++ {
			stream, seq := steps[next].do()
			// One at a time, as the history is recorded: the two streams
			// would race otherwise.
			testutil.Eventually(f.t, 30*time.Second, func() bool {
				st := al.Status()
				return stream == events.StreamShadow && st.ShadowSeq >= seq || stream == events.StreamRollout && st.RolloutSeq >= seq
			}, "alerting did not handle %s seq %d", stream, seq)
		}
		if err := al.Tick(ctx, b); err != nil {
			f.t.Fatalf("tick %s: %v", b, err)
		}
	}
}

// TestReplayAlertingAndNotifyCommands records a rollout with a failing
// share through the live alerting (its rules from a directory) and notify
// (webhook receivers, wall clock) services, then runs "replay alerting"
// and "replay notify" on the record: no difference, and notify's replay
// calls no receiver (its webhook points at a server that fails the test on
// any request). Changing the rules directory on disk changes nothing (the
// recorded rules are replayed); --rules with a stricter success-rate-low
// names that alert and exits 1; notify with other grouping exits 1.
func TestReplayAlertingAndNotifyCommands(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	t0 := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	liveRules, stricter := t.TempDir(), t.TempDir()
	testutil.WriteRules(t, liveRules, "", "", "")
	testutil.WriteRules(t, stricter, "success-rate-low.yaml", "successRate < 0.90", "successRate < 0.85")

	var received atomic.Int64
	liveHook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		received.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer liveHook.Close()
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a replay sent %s %s", r.Method, r.URL)
		http.Error(w, "a replay must not send", http.StatusTeapot)
	}))
	defer refuse.Close()

	log := slog.New(slog.DiscardHandler)
	deps := svc.Deps{Log: log, NC: js.NC, JS: js.JS, Streams: events.StreamOptions{Replicas: 1}}
	alDeps := deps
	alDeps.Clock = testutil.NewFakeClock(t0) // ticks only through Tick, at event times
	al, err := alerting.New(alerting.Config{TickInterval: 30 * time.Second, RulesDir: liveRules}, alDeps)
	if err != nil {
		t.Fatal(err)
	}
	dur := func(d time.Duration) *time.Duration { return &d }
	// Notify runs on the wall clock, so its timers are not the test's: each
	// alert is its own group, notified when the group is made (group_wait
	// 0) and not again within the test (group_interval 1h). What it
	// decides then depends on the order of ALERTS only, and the replay (on
	// the stored times) must find exactly it. Timer-paced grouping and
	// resolves are replayed on a fake clock in services/notify.
	route := func(groupBy ...string) *notify.Route {
		return &notify.Route{Receiver: "hooks", GroupBy: groupBy, GroupWait: dur(0), GroupInterval: dur(time.Hour)}
	}
	nt, err := notify.New(NotifyConfig{Route: route("..."),
		Receivers: []*NotifyReceiver{{Name: "hooks", Webhook: &webhook.Config{URL: liveHook.URL + "/hook"}}}}, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- al.Run(ctx) }()
	go func() { done <- nt.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			for range 2 {
				if err := <-done; err != nil {
					t.Errorf("service: %v", err)
				}
			}
		}
	}
	defer stop()
	testutil.Eventually(t, 30*time.Second, func() bool { return al.Status().CaughtUp && nt.Status().CaughtUp }, "services did not start")
	liveFrom := time.Now().Add(-time.Second)

	(&replayFleet{t: t, js: js, t0: t0}).play(al)
	testutil.Eventually(t, 60*time.Second, func() bool {
		st := nt.Status()
		return st.AlertsSeq == js.Count(t, events.StreamAlerts) && st.Busy == 0 && st.Attempts == st.Sent
	}, "notify did not deliver everything: %+v", nt.Status())
	liveTo := time.Now()
	stop()
	raised := al.Status().Raised
	if raised["critical"] < 6 || raised["warning"] < 1 || nt.Status().Sent < 8 {
		t.Fatalf("the rollout raised %v and notify sent %d: too little to replay", raised, nt.Status().Sent)
	}
	sent := nt.Status().Sent

	// The configuration the commands read: the same routes, and a webhook
	// that must never be called.
	cfgFile := filepath.Join(t.TempDir(), "otawatch.yaml")
	writeConfig := func(groupBy string) {
		t.Helper()
		cfg := fmt.Sprintf(`nats:
  url: %s
alerting:
  tick_interval: 30s
notify:
  route:
    receiver: hooks
    group_by: [%s]
    group_wait: 0s
    group_interval: 1h
  receivers:
    - name: hooks
      webhook:
        url: %s/hook
`, js.Server.ClientURL(), groupBy, refuse.URL)
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(`"..."`)
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append([]string{"replay"}, args...), &Env{Stdout: &out, Stderr: &errb, Environ: nil})
		return code, out.String(), errb.String()
	}
	alertRange := []string{"-c", cfgFile, "--from", "2026-03-01T08:00:00Z", "--to", "2026-03-01T08:15:00Z"}
	notifyRange := []string{"-c", cfgFile, "--from", liveFrom.UTC().Format(time.RFC3339Nano), "--to", liveTo.UTC().Format(time.RFC3339Nano)}
	check := func(name string, code int, out, errOut string, wantCode int, want ...string) {
		t.Helper()
		t.Logf("%s: exit %d\n%s%s", name, code, out, errOut)
		if code != wantCode {
			t.Errorf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", name, code, wantCode, out, errOut)
			return
		}
		for _, w := range want {
			if !strings.Contains(out+errOut, w) {
				t.Errorf("%s: output lacks %q\nstdout:\n%s\nstderr:\n%s", name, w, out, errOut)
			}
		}
	}

	code, out, errOut := run(append([]string{"alerting"}, alertRange...)...)
	check("replay alerting", code, out, errOut, 0, "rules: as recorded on ALERTS, 1 set(s)", " start "+liveRules,
		"0 missing, 0 extra, 0 different: no difference")

	// Another rule set on disk: the replay still runs the recorded one.
	testutil.WriteRules(t, liveRules, "success-rate-low.yaml", "successRate < 0.90", "successRate < 0.85")
	code, out, errOut = run(append([]string{"alerting"}, alertRange...)...)
	check("replay alerting after the rules dir changed", code, out, errOut, 0, "no difference")

	code, out, errOut = run(append([]string{"alerting", "--rules", stricter}, alertRange...)...)
	check("replay alerting --rules stricter", code, out, errOut, 1, "rules: "+stricter+" (given)", "success-rate-low/fleet", "DIFFERENT",
		"difference(s) from the recorded alerts")

	code, out, errOut = run(append([]string{"notify"}, notifyRange...)...)
	check("replay notify", code, out, errOut, 0, fmt.Sprintf("would send %d notification(s)", sent), "POST "+refuse.URL+"/hook",
		"[CRITICAL] device-failed in job job1 wave 1: 1 device", fmt.Sprintf("%d matched, 0 missing, 0 extra, 0 different", sent),
		"nothing was sent", "no difference")

	code, out, errOut = run(append([]string{"notify", "--json"}, notifyRange...)...)
	var js1 struct {
		Same          bool `json:"same"`
		Matched       int  `json:"matched"`
		Notifications []struct {
			Text string `json:"text"`
		} `json:"notifications"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &js1) != nil || !js1.Same || js1.Matched != int(sent) || len(js1.Notifications) != int(sent) {
		t.Errorf("replay notify --json: exit %d, %+v\n%s\n%s", code, js1, out, errOut)
	}

	// Grouped by rule, the replay batches what was sent one by one.
	writeConfig("rule")
	code, out, errOut = run(append([]string{"notify"}, notifyRange...)...)
	check("replay notify with other grouping", code, out, errOut, 1, "EXTRA", "MISSING", "difference(s) from the recorded decisions")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"alerting", "--from", "yesterday", "--to", "2026-03-01"}, "--from: \"yesterday\" is not RFC 3339"},
		{[]string{"alerting", "--from", "2026-03-02", "--to", "2026-03-01"}, "is not after --from"},
		{[]string{"alerting", "--to", "2026-03-01"}, "--from and --to are required"},
		{[]string{"alerting", "--from", "2026-03-01", "--to", "2026-03-02", "--rules", filepath.Join(stricter, "nope")}, "is not a directory"},
		{[]string{"notify", "--from", "2026-03-01", "--to", "2026-03-02", "--time", "wall"}, `--time "wall": want stored or event`},
	} {
		code, out, errOut := run(tc.args...)
		check(strings.Join(tc.args, " "), code, out, errOut, 2, tc.want)
	}
	if n := received.Load(); n != int64(sent) {
		t.Errorf("the live webhook got %d requests, notify recorded %d sent", n, sent)
	}
}
