package app

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// storeReports publishes n reports (async, acked) of 1000 devices.
func storeReports(tb testing.TB, js jetstream.JetStream, n int) {
	tb.Helper()
	t0 := time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; {
		var acks []jetstream.PubAckFuture
		// Under nats.go's 4,000 pending async publishes: past them a
		// publish stalls and, on a busy machine, fails.
		for ; i < n && len(acks) < 2048; i++ {
			dev := "dev-" + strconv.Itoa(i%1000)
			d := events.ShadowReportedData{TypeID: "gateway", DeviceID: dev, Topic: events.ReportTopic("gateway", dev),
				Firmware:      events.Firmware{Version: "4.2.1", Timestamp: t0.Add(time.Duration(i) * time.Millisecond), Status: events.StatusCompleted, Checksum: "sha256:abc", PreviousVersion: "4.1.5", UpdateDuration: 127},
				PayloadSHA256: strings.Repeat("ab", 32)}
			subject := events.ShadowReportedSubject("gateway", dev)
			id := events.ReportEventID("gateway", dev, d.Firmware)
			b, err := events.Encode(id, events.SourceBridge, events.TypeShadowReported, subject, t0, &d)
			if err != nil {
				tb.Fatal(err)
			}
			a, err := js.PublishAsync(subject, b, jetstream.WithMsgID(id))
			if err != nil {
				tb.Fatal(err)
			}
			acks = append(acks, a)
		}
		for _, a := range acks {
			select {
			case <-a.Ok():
			case err := <-a.Err():
				tb.Fatal(err)
			}
		}
	}
}

func runAudit(js *testutil.JetStream, env []string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	if js != nil && (args[0] == "export" || args[0] == "verify") {
		args = append(args, "--nats", js.Server.ClientURL())
	}
	code = Main(context.Background(), append([]string{"audit"}, args...), &Env{Stdout: &out, Stderr: &errb, Environ: env})
	return code, out.String(), errb.String()
}

// TestAuditCommand: keygen, a signed export, verify against the live
// streams (ok), then a changed event makes verify name it and exit 1.
func TestAuditCommand(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	storeReports(t, js.JS, 50)
	dir := t.TempDir()
	key := filepath.Join(dir, "audit.key")
	if code, out, errs := runAudit(nil, nil, "keygen", "--out", key); code != 0 || !strings.Contains(out, "audit.key.pub") {
		t.Fatalf("keygen: %d %s %s", code, out, errs)
	}
	if code, _, errs := runAudit(nil, nil, "keygen", "--out", key); code != 1 || !strings.Contains(errs, "not overwriting") {
		t.Fatalf("keygen over a key: %d %s", code, errs)
	}
	env := []string{"OTAWATCH_AUDIT_SIGNING_KEY_FILE=" + key}
	out := filepath.Join(dir, "export")
	from, to := time.Now().Add(-time.Hour).Format(time.RFC3339), time.Now().Add(time.Hour).Format(time.RFC3339)
	code, stdout, errs := runAudit(js, env, "export", "--from", from, "--to", to, "--device", "gateway/dev-7", "--format", "csv", "--out", out)
	if code != 0 || !strings.Contains(stdout, "exported 1 events") || !strings.Contains(stdout, "signed") {
		t.Fatalf("export --device: %d\n%s\n%s", code, stdout, errs)
	}
	code, stdout, errs = runAudit(js, nil, "verify", "--public-key", key+".pub", out)
	if code != 0 || !strings.Contains(stdout, "against the live streams") || !strings.Contains(stdout, "signature: good, by the given key") {
		t.Fatalf("verify device export: %d\n%s\n%s", code, stdout, errs)
	}

	out = filepath.Join(dir, "export-all")
	code, stdout, errs = runAudit(js, env, "export", "--from", from, "--to", to, "--streams", "SHADOW", "--out", out)
	if code != 0 || !strings.Contains(stdout, "exported 50 events") {
		t.Fatalf("export: %d\n%s\n%s", code, stdout, errs)
	}
	if code, stdout, errs = runAudit(js, nil, "verify", out); code != 0 || !strings.Contains(stdout, ": ok") {
		t.Fatalf("verify: %d\n%s\n%s", code, stdout, errs)
	}
	name := filepath.Join(out, "events-SHADOW.jsonl")
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	lines[9] = strings.Replace(lines[9], "4.2.1", "4.2.9", 1)
	if err := os.WriteFile(name, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, _ = runAudit(js, nil, "verify", out)
	want := "first bad event: SHADOW seq 10 (events-SHADOW.jsonl line 10): its bytes do not match its SHA-256"
	if code != 1 || !strings.Contains(stdout, want) {
		t.Fatalf("verify a changed export: code %d, want 1 and %q in\n%s", code, want, stdout)
	}
}

// BenchmarkAuditExportVerify stores OTAWATCH_BENCH_EVENTS (200,000)
// reports and runs "otawatch audit export" and "otawatch audit verify"
// (against the live stream) over them, printing their own rate lines
// (scripts/bench audit).
func BenchmarkAuditExportVerify(b *testing.B) {
	n := 200000
	if v, err := strconv.Atoi(os.Getenv("OTAWATCH_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	began := time.Now()
	storeReports(b, js.JS, n)
	b.Logf("stored %d reports in %s", n, time.Since(began).Round(time.Millisecond))
	from, to := time.Now().Add(-time.Hour).Format(time.RFC3339), time.Now().Add(time.Hour).Format(time.RFC3339)
	var took [3]time.Duration // export, verify, verify --offline: summed over b.N
	for i := 0; i < b.N; i++ {
		out := filepath.Join(b.TempDir(), "export")
		t0 := time.Now()
		code, stdout, errs := runAudit(js, nil, "export", "--from", from, "--to", to, "--streams", "SHADOW", "--out", out)
		if code != 0 {
			b.Fatalf("export: %d %s %s", code, stdout, errs)
		}
		took[0] += time.Since(t0)
		fmt.Print(errs, stdout)
		t0 = time.Now()
		code, stdout, errs = runAudit(js, nil, "verify", out)
		if code != 0 {
			b.Fatalf("verify: %d %s %s", code, stdout, errs)
		}
		took[1] += time.Since(t0)
		fmt.Print(errs, stdout)
		t0 = time.Now()
		code, stdout, errs = runAudit(nil, nil, "verify", "--offline", out)
		if code != 0 {
			b.Fatalf("verify --offline: %d %s %s", code, stdout, errs)
		}
		took[2] += time.Since(t0)
		fmt.Print("offline: ", stdout)
	}
	// The commands' whole runs, connecting and writing files included.
	for i, unit := range []string{"export_events/s", "verify_events/s", "verify_offline_events/s"} {
		b.ReportMetric(float64(n)*float64(b.N)/took[i].Seconds(), unit)
	}
}
