package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/audit"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/rollout"
)

// TestAuditReportCommand: a rollout driven by the rollout service over 12
// devices that answer their desired state through the log (2 of wave 2
// fail, one with an error code that is markup), steered from the command
// line by three people (the failure policy pauses it, bob resumes, dave
// pauses with a hostile reason, bob resumes, carol retries the failed
// devices and silences device-failed), checkpointed by the audit service.
// "otawatch audit report" writes the HTML (and the PDF when Chromium is
// installed) with the rollout, the actors, the outcomes and a passing
// chain check; without Chromium it says so and still writes the HTML; on
// a wrong checkpoint it writes the report and exits 1.
func TestAuditReportCommand(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: true})
	url := js.Server.ClientURL()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(name string, s svc.Service) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	cli := func(user string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append(args, "--nats", url), &Env{Stdout: &out, Stderr: &errb, Environ: []string{"USER=" + user}})
		return code, out.String(), errb.String()
	}
	must := func(user string, args ...string) string {
		t.Helper()
		code, out, errs := cli(user, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}

	// Before the range: 12 gateways on 1.0.0.
	var devices []string
	for i := range 12 {
		id := fmt.Sprintf("gw-%02d", i)
		devices = append(devices, "gateway/"+id)
		storeReport(t, js.JS, id, events.Firmware{Version: "1.0.0", PreviousVersion: "0.9.0", Status: events.StatusCompleted, Timestamp: time.Now().UTC()})
	}
	time.Sleep(20 * time.Millisecond)
	from := time.Now().UTC()

	// The devices: on a desired state they report in_progress and then
	// completed, except gw-05 and gw-06 on their first attempt.
	failing := map[string]string{"gw-05": "E_FLASH_WRITE", "gw-06": `<script>alert("x")</script>`}
	sub, err := js.NC.Subscribe(events.SubjectShadowDesired+".>", func(m *nats.Msg) {
		e, err := events.Decode(m.Data)
		if err != nil {
			t.Error(err)
			return
		}
		var d events.ShadowDesiredData
		if err := e.DecodeData(&d); err != nil {
			t.Error(err)
			return
		}
		fw := events.Firmware{Version: d.Firmware.Version, PreviousVersion: "1.0.0", Checksum: d.Firmware.Checksum, Timestamp: time.Now().UTC(), Status: events.StatusInProgress}
		storeReport(t, js.JS, d.DeviceID, fw)
		fw.Timestamp, fw.Status, fw.UpdateDuration = time.Now().UTC(), events.StatusCompleted, 90
		if code, ok := failing[d.DeviceID]; ok && d.Attempt == 0 {
			fw.Status, fw.ErrorCode = events.StatusFailed, &code
		}
		storeReport(t, js.JS, d.DeviceID, fw)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	rcfg := rollout.Config{Broker: "tcp://" + js.Server.MQTTAddr(), Tick: 20 * time.Millisecond, LeaseTTL: time.Second, RetainedWait: time.Second}
	rcfg.SetDefaults()
	rs, err := rollout.New(rcfg, svc.Deps{Log: log, NC: js.NC, JS: js.JS, Streams: events.StreamOptions{Replicas: 1}, Health: svc.NewHealth()})
	if err != nil {
		t.Fatal(err)
	}
	start("rollout", rs)
	acfg := audit.Config{CheckpointEvery: 5, CheckpointInterval: time.Second, LeaseTTL: time.Second}
	acfg.SetDefaults()
	as, err := audit.New(acfg, svc.Deps{Log: log, NC: js.NC, JS: js.JS, Streams: events.StreamOptions{Replicas: 1}, Health: svc.NewHealth()})
	if err != nil {
		t.Fatal(err)
	}
	start("audit", as)
	testutil.Eventually(t, 30*time.Second, func() bool { c, _, _ := cli("alice", "rollout", "list"); return c == 0 }, "the rollout service never answered")

	job := func() *events.RolloutJob {
		var rep events.RolloutReply
		if err := json.Unmarshal([]byte(must("alice", "rollout", "show", "r1", "--json")), &rep); err != nil || rep.Job == nil {
			t.Fatalf("rollout show: %v", err)
		}
		return rep.Job
	}
	must("alice", "rollout", "create", "--id", "r1", "--target-version", "2.0.0", "--checksum", "sha256:"+strings.Repeat("20", 32),
		"--url", "https://fw.example/2.0.0.bin", "--devices", strings.Join(devices, ","), "--wave-size", "4", "--gate", "0.75",
		"--max-failure", "0.3", "--min-finished", "4", "--device-timeout", "5m", "--rate", "100", "--start")
	testutil.Eventually(t, 60*time.Second, func() bool { j := job(); return j.Status == events.RolloutPaused && j.By == events.ByFailurePolicy },
		"the failure policy never paused r1 in wave 2")
	must("bob", "rollout", "resume", "r1")
	must("dave", "rollout", "pause", "r1", "--reason", "<script>alert(1)</script> look at the flash errors")
	must("bob", "rollout", "resume", "r1")
	must("carol", "rollout", "retry-failed", "r1")
	out := must("carol", "silence", "add", "--for", "1h", "--comment", "flash <b>errors</b> known", "--json", `rule="device-failed"`)
	var sil events.SilenceData
	if err := json.Unmarshal([]byte(out), &sil); err != nil || sil.ID == "" {
		t.Fatalf("silence add --json: %v: %s", err, out)
	}
	must("carol", "silence", "expire", sil.ID)
	testutil.Eventually(t, 60*time.Second, func() bool { return job().Status == events.RolloutCompleted }, "r1 never completed")

	// Every stream checkpointed up to its end.
	testutil.Eventually(t, 60*time.Second, func() bool {
		for _, s := range events.ChainedStreams() {
			last := testutil.StreamMsgs(js.JS, s)
			cps, err := audit.Checkpoints(context.Background(), js.JS, s)
			if err != nil || (last > 0 && (len(cps) == 0 || cps[len(cps)-1].Seq != last)) {
				return false
			}
		}
		return true
	}, "the audit service did not checkpoint every stream's end")

	dir := t.TempDir()
	to := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	report := func(chromium string, name string) (code int, stdout, stderr string, page string) {
		t.Helper()
		args := []string{"audit", "report", "--from", from.Format(time.RFC3339Nano), "--to", to, "--out", filepath.Join(dir, name+".html"), "--pdf", filepath.Join(dir, name+".pdf")}
		if chromium != "" {
			args = append(args, "--chromium", chromium)
		}
		code, stdout, stderr = cli("erin", args...)
		b, err := os.ReadFile(filepath.Join(dir, name+".html"))
		if err != nil {
			t.Fatalf("no HTML report: %v (exit %d)\n%s%s", err, code, stdout, stderr)
		}
		return code, stdout, stderr, string(b)
	}

	_, chromiumErr := exec.LookPath("chromium")
	code, stdout, stderr, page := report("", "report")
	if chromiumErr == nil && (code != 0 || !strings.Contains(stdout, "report.pdf")) {
		t.Fatalf("report with chromium: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"wrote " + filepath.Join(dir, "report.html"), "1 rollouts, 28 reports (2 failed), 10 actions",
		"hash chain: PASS (SHADOW pass, ROLLOUT pass, ALERTS pass, NOTIFY pass, REJECTED pass)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if chromiumErr == nil {
		b, err := os.ReadFile(filepath.Join(dir, "report.pdf"))
		if err != nil || !bytes.HasPrefix(b, []byte("%PDF-")) {
			t.Errorf("report.pdf: %v", err)
		}
	}
	text := html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(page, ""))
	for _, want := range []string{
		"Rollout r1: completed", "2.0.0", "alice", "bob", "carol", "dave", "otawatch (failure policy)",
		"<script>alert(1)</script> look at the flash errors", "flash <b>errors</b> known", `<script>alert("x")</script>`, "E_FLASH_WRITE",
		"85.7%", "PASS",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the report's text lacks %q", want)
		}
	}
	// Each wave's gate passed with 3 or 4 of its 4 devices completed.
	if n := len(regexp.MustCompile(`passed: [34] of 4 online completed, 3 required`).FindAllString(text, -1)); n != 3 {
		t.Errorf("%d waves with a passed gate, want 3", n)
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "<b>errors") {
		t.Errorf("hostile input reached the page as markup")
	}

	// Without Chromium: said, the HTML written, exit 1.
	code, _, stderr, page = report(filepath.Join(dir, "no-such-chromium"), "nochrome")
	if code != 1 || !strings.Contains(stderr, "no PDF: no Chromium found") || !strings.Contains(page, "Rollout") {
		t.Errorf("without chromium: exit %d, stderr %s", code, stderr)
	}

	// A wrong checkpoint of ROLLOUT inside the range: the report shows
	// the failed check and the command exits 1.
	last := testutil.StreamMsgs(js.JS, events.StreamRollout)
	d := events.AuditCheckpointData{Stream: events.StreamRollout, Seq: last - 2, Head: strings.Repeat("ee", 32), Time: time.Now().UTC(), Events: last - 2}
	b, err := events.Encode("forged-checkpoint", events.SourceAudit, events.TypeAuditCheckpoint, events.AuditCheckpointSubject(events.StreamRollout), d.Time, &d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.JS.Publish(context.Background(), events.AuditCheckpointSubject(events.StreamRollout), b, jetstream.WithMsgID("forged-checkpoint")); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr, page = report(filepath.Join(dir, "no-such-chromium"), "forged")
	if code != 1 || !strings.Contains(stdout, "hash chain: FAIL") || !strings.Contains(stdout, "ROLLOUT fail") ||
		!strings.Contains(stderr, "the hash-chain check failed") || !strings.Contains(page, fmt.Sprintf("after sequence %d the live events fold into", last-2)) {
		t.Errorf("with a wrong checkpoint: exit %d\n%s%s", code, stdout, stderr)
	}
}

// storeReport stores a device's report on SHADOW as the bridge does.
func storeReport(t *testing.T, js jetstream.JetStream, id string, fw events.Firmware) {
	t.Helper()
	d := events.ShadowReportedData{TypeID: "gateway", DeviceID: id, Topic: events.ReportTopic("gateway", id), Firmware: fw}
	subject := events.ShadowReportedSubject("gateway", id)
	eid := events.ReportEventID("gateway", id, fw)
	b, err := events.Encode(eid, events.SourceBridge, events.TypeShadowReported, subject, time.Now().UTC(), &d)
	if err != nil {
		t.Error(err)
		return
	}
	if _, err := js.Publish(context.Background(), subject, b, jetstream.WithMsgID(eid)); err != nil {
		t.Error(err)
	}
}

// BenchmarkAuditReport stores OTAWATCH_BENCH_EVENTS (200,000) reports and
// runs "otawatch audit report" over them (SHADOW read from its start and
// chained), printing its own summary line with the time it took.
func BenchmarkAuditReport(b *testing.B) {
	n := 200000
	if v, err := strconv.Atoi(os.Getenv("OTAWATCH_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	from := time.Now().Add(-time.Hour).Format(time.RFC3339)
	began := time.Now()
	storeReports(b, js.JS, n)
	b.Logf("stored %d reports in %s", n, time.Since(began).Round(time.Millisecond))
	to := time.Now().Add(time.Hour).Format(time.RFC3339)
	var took time.Duration
	for i := 0; i < b.N; i++ {
		out := filepath.Join(b.TempDir(), "report.html")
		var stdout, stderr bytes.Buffer
		began := time.Now()
		code := Main(context.Background(), []string{"audit", "report", "--from", from, "--to", to, "--out", out, "--nats", js.Server.ClientURL()},
			&Env{Stdout: &stdout, Stderr: &stderr})
		if code != 0 {
			b.Fatalf("report: %d %s %s", code, stdout.String(), stderr.String())
		}
		fmt.Print(stderr.String(), stdout.String())
		took += time.Since(began)
		fmt.Printf("report: %d events in %s (%.0f events/s)\n", n, time.Since(began).Round(time.Millisecond), float64(n)/time.Since(began).Seconds())
	}
	b.ReportMetric(float64(n)*float64(b.N)/took.Seconds(), "report_events/s")
}

// TestAuditReportUsage: a wrong command line is refused before anything
// is read, naming what is wrong.
func TestAuditReportUsage(t *testing.T) {
	out := filepath.Join(t.TempDir(), "r.html")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no out", []string{"--from", "2026-03-01", "--to", "2026-03-02"}, "--out FILE.html is required"},
		{"no range", []string{"--out", out}, "--from and --to are required"},
		{"bad time", []string{"--out", out, "--from", "yesterday", "--to", "2026-03-02"}, `--from: "yesterday" is not RFC 3339`},
		{"inverted", []string{"--out", out, "--from", "2026-03-02", "--to", "2026-03-01"}, "--to 2026-03-01 is not after --from 2026-03-02"},
		{"extra argument", []string{"--out", out, "--from", "2026-03-01", "--to", "2026-03-02", "more"}, `unexpected argument "more"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), append([]string{"audit", "report"}, tt.args...), &Env{Stdout: &stdout, Stderr: &stderr})
			if code != 2 || !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("exit %d, want 2 and %q in stderr:\n%s", code, tt.want, stderr.String())
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatal("a report was written")
			}
		})
	}
}
