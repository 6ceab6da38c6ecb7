package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
	"github.com/otawatch/otawatch/services/internal/silence"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/rollout"
)

// chromium returns the browser the dashboard tests drive: $OTAWATCH_CHROMIUM,
// else chromium (or chromium-browser, google-chrome) on the PATH. It skips
// the test when there is none and CI is unset; under CI a missing browser
// fails it (scripts/install-deps installs the Debian package chromium).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("OTAWATCH_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not installed (scripts/install-deps installs it)")
	}
	t.Skip("chromium not installed; run scripts/install-deps")
	return ""
}

// screenshotDir is where the browser tests save their screenshots:
// $OTAWATCH_SCREENSHOTS when set (kept after the test), else a temporary
// directory.
func screenshotDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("OTAWATCH_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// page is one browser tab on the dashboard.
type page struct {
	t   *testing.T
	ctx context.Context
	dir string
	// jsErrors are the exceptions the page threw.
	mu       sync.Mutex
	jsErrors []string
}

// newBrowser starts a headless Chromium (as root it needs --no-sandbox),
// closed by t.Cleanup, and returns a function that opens a new tab: each tab
// has its own sessionStorage, so its own token.
func newBrowser(t *testing.T) func() *page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.Headless,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1400, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	dir := screenshotDir(t)
	return func() *page {
		ctx, cancel := chromedp.NewContext(bctx)
		t.Cleanup(cancel)
		p := &page{t: t, ctx: ctx, dir: dir}
		if err := chromedp.Listen(ctx, func(ev any) {
			if e, ok := ev.(*runtime.EventExceptionThrown); ok {
				p.mu.Lock()
				d := e.ExceptionDetails
				msg := fmt.Sprintf("%s at %d:%d", d.Text, d.LineNumber+1, d.ColumnNumber+1)
				if d.Exception != nil {
					msg += ": " + d.Exception.Description
				}
				p.jsErrors = append(p.jsErrors, msg)
				p.mu.Unlock()
			}
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			for _, e := range p.jsErrors {
				t.Errorf("the page threw: %s", e)
			}
		})
		return p
	}
}

// do runs actions with a bound, failing the test on an error.
func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression into v.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor waits until the JavaScript expression is true on the page. The
// bound is generous: the machine is shared and slow at times, and what is
// asserted is that it happens, not how fast.
func (p *page) waitFor(expr, what string) {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !eval[bool](p, expr) {
		if time.Now().After(deadline) {
			p.screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
			p.t.Fatalf("the page never showed %s (%s)", what, expr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot saves the whole page as NAME.png and logs where.
func (p *page) screenshot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(p.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
}

// signIn opens the dashboard, which asks for a token, and signs in with tok.
func (p *page) signIn(base, tok string) {
	p.t.Helper()
	p.do("open the dashboard", chromedp.Navigate(base+"/"))
	p.waitFor(`!document.getElementById("signin").hidden`, "the sign-in form")
	p.do("sign in",
		chromedp.SendKeys(chromedp.CSS("#token"), tok),
		chromedp.Click(chromedp.CSS("#signin-form button")))
	p.waitFor(`!document.getElementById("app").hidden && document.getElementById("dot").className.includes("live")`, "the live dashboard")
}

// rig is the api and rollout services on one embedded JetStream with its
// MQTT listener (where the rollout service sends desired state), and a
// stand-in fleet: the test stores the devices' reports on SHADOW itself, as
// the bridge would, when it wants them to progress.
type browserRig struct {
	h *harness
	// desired gets every desired state the rollout service stored.
	mu      sync.Mutex
	desired map[string]int // device -> wave
}

func startBrowserRig(t *testing.T) *browserRig {
	t.Helper()
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: true})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("OTAWATCH_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	connect := func(name string) (*nats.Conn, jetstream.JetStream) {
		nc, err := js.Server.Connect(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		j, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return nc, j
	}
	run := func(name string, r interface{ Run(context.Context) error }) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: Run returned %v", name, err)
			}
		})
	}

	rnc, rjs := connect("rollout")
	rcfg := rollout.Config{Broker: "tcp://" + js.Server.MQTTAddr(), Tick: 20 * time.Millisecond, LeaseTTL: time.Second, RetainedWait: time.Second}
	ro, err := rollout.New(rcfg, svc.Deps{Log: log, NC: rnc, JS: rjs, Streams: events.StreamOptions{Replicas: 1}, Health: svc.NewHealth()})
	if err != nil {
		t.Fatal(err)
	}
	run("rollout", ro)

	anc, ajs := connect("api")
	cfg := Config{Listen: "127.0.0.1:0", TokensFile: writeTokens(t), DashboardRefresh: 100 * time.Millisecond}
	a, err := New(cfg, svc.Deps{Log: log, NC: anc, JS: ajs, Health: svc.NewHealth()})
	if err != nil {
		t.Fatal(err)
	}
	run("api", a)
	testutil.Eventually(t, 10*time.Second, func() bool { return a.Addr() != "" }, "the api did not listen")

	r := &browserRig{h: &harness{js: js, svc: a, base: "http://" + a.Addr(), token: opToken, stop: func() {}}, desired: map[string]int{}}
	sub, err := js.NC.Subscribe("shadow.desired.>", func(m *nats.Msg) {
		e, err := events.Decode(m.Data)
		if err != nil {
			return
		}
		var d events.ShadowDesiredData
		if e.DecodeData(&d) == nil {
			r.mu.Lock()
			r.desired[d.TypeID+"/"+d.DeviceID] = d.Wave
			r.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

// sentIn returns the devices of wave sent a desired state so far, sorted.
func (r *browserRig) sentIn(wave int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for d, w := range r.desired {
		if w == wave {
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out
}

// waitSent waits until n devices of wave have their desired state.
func (r *browserRig) waitSent(t *testing.T, wave, n int) []string {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, func() bool { return len(r.sentIn(wave)) >= n },
		"wave %d: %d devices sent a desired state, want %d", wave, len(r.sentIn(wave)), n)
	return r.sentIn(wave)
}

// complete stores a completed report on the target for each device.
func (r *browserRig) complete(t *testing.T, devices []string, version string, seconds float64) {
	t.Helper()
	var last uint64
	for i, d := range devices {
		typ, id, _ := strings.Cut(d, "/")
		last = r.h.report(t, typ, id, version, events.StatusCompleted, seconds+float64(10*i), time.Now().UTC())
	}
	r.h.waitShadow(t, last)
}

// TestDashboardInBrowser drives the dashboard in a headless Chromium: an
// operator signs in, sees the fleet numbers /api/v1/fleet gives, watches a
// rollout's wave bars advance live and pauses the job from the page (the
// ROLLOUT event names the token's user); a read-only token sees the same
// page without a control. Screenshots are saved (see screenshotDir).
func TestDashboardInBrowser(t *testing.T) {
	newPage := newBrowser(t)
	r := startBrowserRig(t)
	h := r.h

	// The fleet before the rollout: twelve devices on 1.0, three on others,
	// one of them offline.
	var devices []string
	for i := 1; i <= 12; i++ {
		devices = append(devices, fmt.Sprintf("sensor/d%02d", i))
	}
	start := time.Now().UTC().Add(-time.Hour)
	for i, d := range devices {
		_, id, _ := strings.Cut(d, "/")
		h.report(t, "sensor", id, "1.0", events.StatusCompleted, float64(60+i), start)
	}
	h.report(t, "sensor", "x1", "0.9", events.StatusCompleted, 30, start)
	h.report(t, "sensor", "x2", "0.9", events.StatusFailed, 12, start)
	h.report(t, "gateway", "g1", "7.1", events.StatusInProgress, 0, start)
	// x1's will message said offline: the broker knows it is gone.
	h.waitShadow(t, h.presence(t, "sensor", "x1", events.PresenceOffline, start, start.Add(time.Minute)))

	op := newPage()
	op.signIn(h.base, opToken)
	op.waitFor(`document.getElementById("who").textContent === "alice · operator"`, "the operator's name and role")
	checkFleetNumbers(t, op, h)

	// An operator creates the rollout from the page's form.
	const job = "fw-2-0"
	checksum := "sha256:" + strings.Repeat("ab", 32)
	op.do("fill the rollout form",
		chromedp.Click(chromedp.CSS("#create summary")),
		chromedp.SendKeys(chromedp.CSS(`#create-form [name=version]`), "2.0"),
		chromedp.SendKeys(chromedp.CSS(`#create-form [name=checksum]`), checksum),
		chromedp.SendKeys(chromedp.CSS(`#create-form [name=url]`), "https://fw.example.com/2.0.bin"),
		chromedp.SendKeys(chromedp.CSS(`#create-form [name=devices]`), strings.Join(devices, "\n")),
		chromedp.SendKeys(chromedp.CSS(`#create-form [name=waves]`), "3"),
		chromedp.SendKeys(chromedp.CSS(`#create-form [name=gate]`), "100"),
		chromedp.SendKeys(chromedp.CSS(`#create-form [name=id]`), job),
	)
	op.screenshot("1-create-form")
	op.do("submit the rollout form", chromedp.Click(chromedp.CSS("#create-submit")))
	var shown struct {
		Job events.RolloutJob `json:"job"`
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		status, b := h.do(t, http.MethodGet, "/api/v1/rollouts/"+job, "", nil)
		return status == http.StatusOK && json.Unmarshal(b, &shown) == nil && shown.Job.Status == events.RolloutRunning
	}, "the job created from the page is not running")
	if s := shown.Job.Spec; s.Gate != 1 || s.Waves != 3 || len(s.Devices) != 12 || s.Target.Checksum != checksum || shown.Job.WaveCount != 3 {
		t.Errorf("job from the form: spec %+v, %d waves; want gate 1, 3 waves of the 12 devices, checksum %s", s, shown.Job.WaveCount, checksum)
	}

	// Wave 1's bar advances live as its devices complete.
	w1 := r.waitSent(t, 1, 4)
	op.waitFor(waveIs(job, 1, 0, 4), "wave 1 with 4 targeted")
	r.complete(t, w1[:2], "2.0", 40)
	op.waitFor(waveIs(job, 1, 2, 4), "wave 1 with 2 of 4 completed")
	op.screenshot("2-wave-1-half")
	r.complete(t, w1[2:], "2.0", 60)
	op.waitFor(waveIs(job, 1, 4, 4), "wave 1 with 4 of 4 completed")
	// Its gate passes at 100%: wave 2 starts, its bar appears.
	w2 := r.waitSent(t, 2, 4)
	r.complete(t, w2[:1], "2.0", 90)
	op.waitFor(waveIs(job, 2, 1, 4), "wave 2 with 1 of 4 completed")
	op.waitFor(`document.querySelector('[data-chart=timeline] [data-gate="1"]') !== null`, "wave 1's gate on the timeline")
	op.waitFor(`document.querySelectorAll('[data-chart=histogram] rect').length > 0`, "the duration histogram")
	op.waitFor(`document.querySelector('[data-chart=versions] rect[data-version="2.0"]') !== null`, "version 2.0 in the versions chart")
	op.screenshot("3-wave-2-running")

	// Pausing from the page pauses the job, recorded as alice's.
	op.do("click pause", chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[data-cmd="pause"][data-job=%q]`, job))))
	op.waitFor(`document.getElementById("confirm").open`, "the pause dialog")
	op.do("give a reason and confirm",
		chromedp.SendKeys(chromedp.CSS("#confirm-reason"), "checking wave 2 by hand"),
		chromedp.Click(chromedp.CSS("#confirm-ok")))
	op.waitFor(fmt.Sprintf(`document.querySelector('#jobs tr[data-job=%q] [data-status]').dataset.status === "paused"`, job), "the job paused")
	op.waitFor(`document.querySelector('[data-chart=timeline] [data-mark="paused"]') !== null`, "the pause on the timeline")
	checkFleetNumbers(t, op, h)
	op.screenshot("4-paused")
	if status, b := h.do(t, http.MethodGet, "/api/v1/rollouts/"+job, "", nil); status != http.StatusOK || json.Unmarshal(b, &shown) != nil ||
		shown.Job.Status != events.RolloutPaused || shown.Job.Reason != "checking wave 2 by hand" {
		t.Errorf("GET the job: %d %s, want it paused with the reason typed", status, b)
	}
	var paused *events.RolloutData
	for _, m := range h.js.Events(t, events.StreamRollout) {
		e, err := events.Decode(m.Data)
		if err != nil || e.Type != events.TypeRolloutJobPaused {
			continue
		}
		var d events.RolloutData
		if err := e.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		paused = &d
	}
	if paused == nil || paused.JobID != job || paused.Actor != "alice" || paused.By != events.ByOperator || paused.Reason != "checking wave 2 by hand" {
		t.Errorf("job_paused %+v, want %s paused by the operator alice with the reason typed", paused, job)
	}

	// Abort asks for a reason before it sends anything.
	op.do("click abort", chromedp.Click(chromedp.CSS(fmt.Sprintf(`button[data-cmd="abort"][data-job=%q]`, job))))
	op.waitFor(`document.getElementById("confirm").open`, "the abort dialog")
	op.do("confirm without a reason", chromedp.Click(chromedp.CSS("#confirm-ok")))
	if !eval[bool](op, `document.getElementById("confirm").open`) {
		t.Error("the abort dialog closed without a reason")
	}
	op.screenshot("5-abort-needs-a-reason")
	op.do("cancel the abort", chromedp.Click(chromedp.CSS("#confirm-cancel")))
	if status, b := h.do(t, http.MethodGet, "/api/v1/rollouts/"+job, "", nil); status != http.StatusOK || json.Unmarshal(b, &shown) != nil ||
		shown.Job.Status != events.RolloutPaused {
		t.Errorf("after a cancelled abort: %d %s, want the job still paused", status, b)
	}

	// A read-only token: the same page, without a control.
	ro := newPage()
	ro.signIn(h.base, roToken)
	ro.waitFor(`document.getElementById("who").textContent === "grafana · read-only"`, "the read-only name and role")
	ro.waitFor(fmt.Sprintf(`document.querySelector('#jobs tr[data-job=%q]') !== null`, job), "the job")
	ro.waitFor(waveIs(job, 2, 1, 4), "wave 2 with 1 of 4 completed")
	checkFleetNumbers(t, ro, h)
	if n := eval[int](ro, `document.querySelectorAll("button.ctl, [data-cmd]").length`); n != 0 {
		t.Errorf("the read-only page offers %d controls, want none", n)
	}
	if eval[bool](ro, `getComputedStyle(document.getElementById("create-form").closest("section")).display !== "none"`) {
		t.Error("the read-only page shows the new-rollout form")
	}
	if eval[bool](op, `getComputedStyle(document.getElementById("create-form").closest("section")).display === "none"`) {
		t.Error("the operator's page hides the new-rollout form")
	}
	ro.screenshot("6-read-only")
}

// waveIs is a page expression: the wave row of job shows completed of
// targeted devices (the data attributes the wave table renders).
func waveIs(job string, wave, completed, targeted int) string {
	return fmt.Sprintf(`(() => { const r = document.querySelector('#waves tr[data-wave="%s/%d"]');
		return r !== null && r.dataset.completed === "%d" && r.dataset.targeted === "%d"; })()`, job, wave, completed, targeted)
}

// checkFleetNumbers waits until the page's fleet figures are the ones
// GET /api/v1/fleet answers (the page follows the log a refresh period
// behind, so it is compared once both have settled).
func checkFleetNumbers(t *testing.T, p *page, h *harness) {
	t.Helper()
	var m fleet.Metrics
	var want, got map[string]string
	deadline := time.Now().Add(60 * time.Second)
	for {
		h.getJSON(t, "/api/v1/fleet", http.StatusOK, &m)
		want = map[string]string{
			"devices": fmt.Sprint(m.Devices), "online": fmt.Sprint(m.Online), "potentiallyOffline": fmt.Sprint(m.PotentiallyOffline), "offline": fmt.Sprint(m.Offline),
			"inProgress": fmt.Sprint(m.InProgress), "completed": fmt.Sprint(m.Completed), "failed": fmt.Sprint(m.Failed),
			"successRate": fmt.Sprintf("%.1f%%", m.SuccessRate*100),
		}
		got = eval[map[string]string](p, `Object.fromEntries([...document.querySelectorAll("[data-kpi]")].map(k => [k.dataset.kpi, k.querySelector(".value").textContent]))`)
		match := true
		for k, v := range want {
			match = match && got[k] == v
		}
		if match {
			// Every figure fits its card, the duration pair at its widest
			// too (it once ran past the card's edge at this window width;
			// the next refresh puts the real one back).
			if over := eval[[]string](p, `(() => {
				document.querySelector('[data-kpi="duration"] .value').textContent = "120.0 min / 120.0 min";
				return [...document.querySelectorAll("[data-kpi]")].filter(k => k.scrollWidth > k.clientWidth).map(k => k.dataset.kpi + ": " + k.querySelector(".value").textContent);
			})()`); len(over) > 0 {
				p.screenshot("kpi-overflow")
				t.Errorf("figures run past their cards: %v", over)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page shows %v, /api/v1/fleet %v", got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// screenshotOf saves the element sel matches as NAME.png.
func (p *page) screenshotOf(name, sel string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(sel)))
	if err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(p.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
}

// TestDashboardNotificationsInBrowser: the page's Notifications panel
// lists the decisions NOTIFY holds, newest first and coloured by outcome,
// and its Silences panel the active and pending silences with their
// matchers, author, comment and end. An operator expires a silence from
// the page (recorded as theirs); a read-only token sees both panels
// without an Expire button.
func TestDashboardNotificationsInBrowser(t *testing.T) {
	newPage := newBrowser(t)
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}})

	now := time.Now().UTC().Truncate(time.Second)
	h.silenced(t, events.SilenceData{ID: "s-wave2", Matchers: []string{`job="fw-2"`, `severity=~"warning|info"`},
		StartsAt: now.Add(-10 * time.Minute), EndsAt: now.Add(2 * time.Hour), CreatedBy: "alice", Comment: "wave 2 devices are flashed by hand"}, now.Add(-10*time.Minute))
	h.silenced(t, events.SilenceData{ID: "s-gateways", Matchers: []string{`device_type="gateway"`},
		StartsAt: now.Add(90 * time.Minute), EndsAt: now.Add(5 * time.Hour), CreatedBy: "carol", Comment: "gateway swap tonight"}, now.Add(-9*time.Minute))

	const group = `{}:{job="fw-2",rule="update_failed",wave="2"}`
	labels := map[string]string{"job": "fw-2", "rule": "update_failed", "wave": "2"}
	firing := make([]string, 12)
	for i := range firing {
		firing[i] = fmt.Sprintf("a%02d", i)
	}
	h.notified(t, events.NotifySent, events.NotificationData{Receiver: "pagerduty", GroupKey: group, GroupLabels: labels, Status: "firing",
		Firing: firing, Attempt: 1, Code: 202, Answer: `{"status":"success","dedup_key":"9f2c1e"}`}, now.Add(-8*time.Minute))
	h.notified(t, events.NotifyFailed, events.NotificationData{Receiver: "slack", GroupKey: group, GroupLabels: labels, Status: "firing",
		Firing: firing, Attempt: 1, Code: 503, Error: "slack: 503 Service Unavailable", Retry: true}, now.Add(-7*time.Minute))
	h.notified(t, events.NotifyFailed, events.NotificationData{Receiver: "webhook", GroupKey: group, GroupLabels: labels, Status: "firing",
		Firing: firing, Attempt: 3, Code: 400, Error: "webhook: 400 Bad Request: unknown field", Final: true}, now.Add(-6*time.Minute))
	for _, a := range []string{"b1", "b2", "b3"} {
		h.suppressed(t, events.SuppressedData{Receiver: "email", GroupKey: `{}:{job="fw-2",rule="slow_update"}`, AlertID: a, Key: a,
			RuleID: "slow_update", Severity: "warning", Reason: events.SuppressedSilence, SilenceID: "s-wave2"}, now.Add(-5*time.Minute))
	}
	h.notified(t, events.NotifySent, events.NotificationData{Receiver: "pagerduty", GroupKey: group, GroupLabels: labels, Status: "resolved",
		Resolved: firing[:4], Firing: firing[4:], Count: 1, Attempt: 1, Code: 202, Answer: `{"status":"success"}`}, now.Add(-time.Minute))

	// The panels as the operator sees them.
	op := newPage()
	op.signIn(h.base, opToken)
	op.waitFor(`document.querySelectorAll("#notifications tr[data-outcome]").length === 5`, "five notification rows")
	op.waitFor(`document.querySelectorAll("#silences tr[data-silence]").length === 2`, "two silences")
	rows := eval[[]map[string]string](op, `[...document.querySelectorAll("#notifications tr[data-outcome]")].map(r => ({
		outcome: r.dataset.outcome, text: [...r.cells].map(c => c.textContent).join(" | "),
		colour: getComputedStyle(r.querySelector(".badge")).color }))`)
	wantRows := []struct{ outcome, colour, has string }{
		{"sent", "rgb(26, 127, 75)", `pagerduty | sent | resolved | 12 | job=fw-2 rule=update_failed wave=2 | 202 {"status":"success"}`},
		{"suppressed", "rgb(183, 121, 31)", `email | suppressed |  | 3 | {}:{job="fw-2",rule="slow_update"} | silence s-wave2`},
		{"failed", "rgb(197, 48, 48)", `webhook | failed | firing | 12 | job=fw-2 rule=update_failed wave=2 | webhook: 400 Bad Request: unknown field (final)`},
		{"failed", "rgb(197, 48, 48)", `slack | failed | firing | 12 | job=fw-2 rule=update_failed wave=2 | slack: 503 Service Unavailable (will retry)`},
		{"sent", "rgb(26, 127, 75)", `pagerduty | sent | firing | 12 | job=fw-2 rule=update_failed wave=2 | 202 {"status":"success","dedup_key":"9f2c1e"}`},
	}
	for i, w := range wantRows {
		if i >= len(rows) || rows[i]["outcome"] != w.outcome || rows[i]["colour"] != w.colour || !strings.Contains(rows[i]["text"], w.has) {
			t.Errorf("notification row %d: %v, want %s in %s with %q", i+1, rows, w.outcome, w.colour, w.has)
			break
		}
	}
	sils := eval[[]string](op, `[...document.querySelectorAll("#silences tr[data-silence]")].map(r => r.dataset.silence + ": " + [...r.cells].map(c => c.textContent).join(" | "))`)
	wantSils := []string{
		`s-wave2: job="fw-2"severity=~"warning|info" | alice | wave 2 devices are flashed by hand | in 2.0h | active | Expire`,
		`s-gateways: device_type="gateway" | carol | gateway swap tonight | in 5.0h | pending starts in 1.5h | Expire`,
	}
	if strings.Join(sils, "\n") != strings.Join(wantSils, "\n") {
		t.Errorf("silence rows:\n%s\nwant:\n%s", strings.Join(sils, "\n"), strings.Join(wantSils, "\n"))
	}
	op.do("scroll to the panels", chromedp.ScrollIntoView(chromedp.CSS("#notifications")))
	op.screenshotOf("7-notifications-operator", "#notifications-panel")
	op.screenshotOf("8-silences-operator", "#silences-panel")
	op.screenshot("9-dashboard-operator")

	// Expire from the page: a confirmation, then DELETE; the silence
	// leaves the panel and NOTIFY records alice's expiry.
	op.do("click expire", chromedp.Click(chromedp.CSS(`button[data-expire="s-wave2"]`)))
	op.waitFor(`document.getElementById("confirm").open`, "the expire dialog")
	op.screenshot("10-expire-dialog")
	op.do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
	op.waitFor(`document.querySelector('#silences tr[data-silence="s-wave2"]') === null`, "the expired silence gone")
	list, err := silence.Read(context.Background(), h.js.JS)
	if err != nil {
		t.Fatal(err)
	}
	var expired *silence.Silence
	for i := range list {
		if list[i].ID == "s-wave2" {
			expired = &list[i]
		}
	}
	if expired == nil || expired.ExpiredAt == nil || expired.ExpiredBy != "alice" {
		t.Errorf("s-wave2 on NOTIFY: %+v, want expired by alice", expired)
	}

	// Read-only: both panels, no Expire button.
	ro := newPage()
	ro.signIn(h.base, roToken)
	ro.waitFor(`document.getElementById("who").textContent === "grafana · read-only"`, "the read-only name and role")
	ro.waitFor(`document.querySelectorAll("#notifications tr[data-outcome]").length === 5`, "five notification rows")
	ro.waitFor(`document.querySelector('#silences tr[data-silence="s-gateways"]') !== null`, "the pending silence")
	if n := eval[int](ro, `document.querySelectorAll("#silences button, [data-expire]").length`); n != 0 {
		t.Errorf("the read-only page offers %d Expire buttons, want none", n)
	}
	if head := eval[string](ro, `[...document.querySelectorAll("#silences th")].map(c => c.textContent).join(",")`); head != "Matchers,Created by,Comment,Ends,State" {
		t.Errorf("the read-only silences table has columns %q", head)
	}
	ro.do("scroll to the panels", chromedp.ScrollIntoView(chromedp.CSS("#notifications")))
	ro.screenshotOf("11-silences-read-only", "#silences-panel")
}
