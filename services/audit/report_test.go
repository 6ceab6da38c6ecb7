package audit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/net/html"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// Hostile input the report must show as text: a pause reason, an actor and
// an error code.
const (
	hostileReason = `<script>alert(1)</script> investigate`
	hostileActor  = `ops-<b>dave</b>`
	hostileCode   = `<script>alert("code")</script>`
	checksumCode  = "E_CHECKSUM_MISMATCH"
)

// history writes events the way the services record them.
type history struct {
	t   *testing.T
	js  jetstream.JetStream
	at0 time.Time
	n   int
}

func (h *history) at(d time.Duration) time.Time { return h.at0.Add(d) }

func (h *history) pub(subject, typ string, at time.Time, data any) {
	h.t.Helper()
	h.n++
	id := fmt.Sprintf("ev-%d", h.n)
	b, err := events.Encode(id, events.SourceBridge, typ, subject, at, data)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.js.Publish(context.Background(), subject, b, jetstream.WithMsgID(id)); err != nil {
		h.t.Fatal(err)
	}
}

func (h *history) report(typ, dev, version, from, status, code string, at time.Time) {
	h.t.Helper()
	fw := events.Firmware{Version: version, PreviousVersion: from, Status: status, Timestamp: at, Checksum: "sha256:" + strings.Repeat("ab", 32)}
	if status != events.StatusInProgress {
		fw.UpdateDuration = 120
	}
	if code != "" {
		fw.ErrorCode = &code
	}
	h.pub(events.ShadowReportedSubject(typ, dev), events.TypeShadowReported, at,
		events.ShadowReportedData{TypeID: typ, DeviceID: dev, Topic: events.ReportTopic(typ, dev), Firmware: fw})
}

func (h *history) rollout(job, name string, at time.Time, d events.RolloutData) {
	h.t.Helper()
	d.JobID = job
	h.pub(events.RolloutSubject(job, name), "io.otawatch.rollout."+name+".v1", at, d)
}

func (h *history) desired(dev, job string, wave, attempt int, at time.Time) {
	h.t.Helper()
	h.pub(events.ShadowDesiredSubject("gateway", dev), events.TypeShadowDesired, at, events.ShadowDesiredData{TypeID: "gateway", DeviceID: dev,
		JobID: job, Wave: wave, Attempt: attempt, Firmware: events.DesiredFirmware{Version: "2.0.0", Checksum: "sha256:" + strings.Repeat("20", 32), URL: "https://fw.example/2.0.0.bin"}})
}

// checkpointAll writes, for every chained stream, the checkpoint the audit
// service would write at its last sequence.
func checkpointAll(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	for _, s := range events.ChainedStreams() {
		st, err := streamState(context.Background(), js, s)
		if err != nil {
			t.Fatal(err)
		}
		if st.LastSeq > 0 {
			writeCheckpoint(t, js, s, st.LastSeq, hexHead(liveHead(t, js, s, st.LastSeq)))
		}
	}
}

func writeCheckpoint(t *testing.T, js jetstream.JetStream, stream string, seq uint64, head string) {
	t.Helper()
	d := events.AuditCheckpointData{Stream: stream, Seq: seq, Head: head, Time: time.Now().UTC(), Events: seq}
	b, err := events.Encode(events.AuditCheckpointID(stream, seq)+head[:8], events.SourceAudit, events.TypeAuditCheckpoint,
		events.AuditCheckpointSubject(stream), d.Time, &d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), events.AuditCheckpointSubject(stream), b); err != nil {
		t.Fatal(err)
	}
}

// recordRollout writes a history: before the range, 5 sensors on 0.9.8,
// 30 gateways on 1.0.0 and a finished job "old"; in the range, job r1
// takes the gateways to 2.0.0 in 3 waves of 10. In wave 2, 3 devices fail
// (2 with E_CHECKSUM_MISMATCH, 1 with hostileCode), the failure policy
// pauses the job, cli:bob resumes it, hostileActor pauses and cli:bob
// resumes again, cli:carol retries the failed devices (which then
// complete) and silences device-failed meanwhile. It returns the start of
// the range.
func recordRollout(t *testing.T, js jetstream.JetStream) time.Time {
	h := &history{t: t, js: js, at0: time.Date(2026, 3, 3, 9, 0, 0, 0, time.UTC)}
	for i := range 5 {
		h.report("sensor", fmt.Sprintf("s-%d", i), "0.9.8", "0.9.7", events.StatusCompleted, "", h.at(-48*time.Hour))
	}
	for i := range 30 {
		h.report("gateway", fmt.Sprintf("gw-%02d", i), "1.0.0", "0.9.8", events.StatusCompleted, "", h.at(-24*time.Hour))
	}
	old := events.RolloutSpec{ID: "old", Target: events.DesiredFirmware{Version: "1.0.0"}, DeviceType: "gateway", Gate: 0.9, MaxFailure: 0.1, OnFailure: "pause"}
	h.rollout("old", "job_created", h.at(-25*time.Hour), events.RolloutData{Spec: &old, Target: &old.Target, Actor: "cli:olga"})
	h.rollout("old", "job_completed", h.at(-23*time.Hour), events.RolloutData{})
	checkpointAll(t, js)
	time.Sleep(20 * time.Millisecond)
	from := time.Now()
	time.Sleep(20 * time.Millisecond)

	var plan events.RolloutPlan
	var names []string
	for w := range 3 {
		var wave []events.DeviceRef
		for i := range 10 {
			id := fmt.Sprintf("gw-%02d", w*10+i)
			wave = append(wave, events.DeviceRef{TypeID: "gateway", DeviceID: id})
			names = append(names, "gateway/"+id)
		}
		plan.Waves = append(plan.Waves, wave)
	}
	spec := events.RolloutSpec{ID: "r1", Target: events.DesiredFirmware{Version: "2.0.0", Checksum: "sha256:" + strings.Repeat("20", 32), URL: "https://fw.example/2.0.0.bin"},
		Devices: names, WaveSize: 10, Gate: 0.9, MaxFailure: 0.2, MinFinished: 10, OnFailure: "pause"}
	h.rollout("r1", "job_created", h.at(0), events.RolloutData{Spec: &spec, Target: &spec.Target, Actor: "cli:alice"})
	h.rollout("r1", "job_started", h.at(0), events.RolloutData{Plan: &plan, Actor: "cli:alice"})
	gated := func(w, completed int, at time.Time) {
		p := events.WaveProgress{Targeted: 10, Completed: completed, Failed: 10 - completed}
		g := events.GateDecision{Passed: true, Reason: "gate passed", Online: 10, Completed: completed, Required: 9}
		h.rollout("r1", "wave_gated", at, events.RolloutData{Wave: w, Gate: &g, Progress: &p, Reason: g.Reason})
		h.rollout("r1", "wave_completed", at, events.RolloutData{Wave: w, Progress: &p})
	}
	update := func(i, wave, attempt int, start time.Time, code string) {
		id := fmt.Sprintf("gw-%02d", i)
		h.desired(id, "r1", wave, attempt, start)
		h.report("gateway", id, "2.0.0", "1.0.0", events.StatusInProgress, "", start.Add(time.Minute))
		if code == "" {
			h.report("gateway", id, "2.0.0", "1.0.0", events.StatusCompleted, "", start.Add(time.Duration(3+i%10)*time.Minute))
			return
		}
		h.report("gateway", id, "2.0.0", "1.0.0", events.StatusFailed, code, start.Add(time.Duration(3+i%10)*time.Minute))
		a := events.AlertData{Key: "device-failed/gateway/" + id, RuleID: "device-failed", Severity: "critical", State: events.AlertRaised,
			TypeID: "gateway", DeviceID: id, JobID: "r1", Wave: wave, StartsAt: start}
		h.pub(events.AlertSubject(events.AlertRaised, "critical", "device-failed"), events.TypeAlertRaised, start.Add(4*time.Minute), a)
	}

	h.rollout("r1", "wave_started", h.at(time.Minute), events.RolloutData{Wave: 1})
	for i := range 10 {
		update(i, 1, 0, h.at(time.Minute), "")
	}
	gated(1, 10, h.at(15*time.Minute))

	h.rollout("r1", "wave_started", h.at(20*time.Minute), events.RolloutData{Wave: 2})
	for i := 10; i < 20; i++ {
		code := ""
		switch i {
		case 17, 18:
			code = checksumCode
		case 19:
			code = hostileCode
		}
		update(i, 2, 0, h.at(20*time.Minute), code)
	}
	h.rollout("r1", "job_paused", h.at(40*time.Minute), events.RolloutData{Wave: 2, By: events.ByFailurePolicy,
		Reason: "3 of 10 online devices failed (30%), more than the 20% allowed"})
	sil := events.SilenceData{ID: "sil-1", Matchers: []string{`rule="device-failed"`}, StartsAt: h.at(41 * time.Minute),
		EndsAt: h.at(101 * time.Minute), CreatedBy: "cli:carol", Comment: "known checksum issue"}
	h.pub(events.SilenceSubject(events.SilenceCreated), events.TypeSilenceCreated, h.at(41*time.Minute), sil)
	h.pub(events.NotifySubject("pagerduty", events.NotifyAttempt), events.TypeNotifyAttempt, h.at(40*time.Minute), events.NotificationData{ID: "n1", Receiver: "pagerduty"})
	h.pub(events.NotifySubject("pagerduty", events.NotifySent), events.TypeNotifySent, h.at(40*time.Minute), events.NotificationData{ID: "n1", Receiver: "pagerduty"})
	h.rollout("r1", "job_resumed", h.at(45*time.Minute), events.RolloutData{Actor: "cli:bob"})
	h.rollout("r1", "job_paused", h.at(46*time.Minute), events.RolloutData{Wave: 2, By: events.ByOperator, Reason: hostileReason, Actor: hostileActor})
	h.rollout("r1", "job_resumed", h.at(50*time.Minute), events.RolloutData{Actor: "cli:bob"})
	retried := []events.DeviceRef{{TypeID: "gateway", DeviceID: "gw-17"}, {TypeID: "gateway", DeviceID: "gw-18"}, {TypeID: "gateway", DeviceID: "gw-19"}}
	h.rollout("r1", "devices_retried", h.at(52*time.Minute), events.RolloutData{Devices: retried, Attempt: 1, Actor: "cli:carol"})
	for i := 17; i < 20; i++ {
		update(i, 2, 1, h.at(52*time.Minute), "")
	}
	gated(2, 10, h.at(58*time.Minute))
	h.pub(events.SilenceSubject(events.SilenceExpired), events.TypeSilenceExpired, h.at(59*time.Minute),
		events.SilenceExpiredData{ID: "sil-1", At: h.at(59 * time.Minute), By: "cli:carol"})

	h.rollout("r1", "wave_started", h.at(60*time.Minute), events.RolloutData{Wave: 3})
	for i := 20; i < 30; i++ {
		update(i, 3, 0, h.at(60*time.Minute), "")
	}
	gated(3, 10, h.at(72*time.Minute))
	h.rollout("r1", "job_completed", h.at(72*time.Minute), events.RolloutData{})
	h.pub(events.RejectedSubject("bridge"), events.TypeRejected, h.at(30*time.Minute), events.NewRejected("bridge", "schema: status is required", []byte(`{"state":{}}`)))
	return from
}

// TestComplianceReport: the report of a recorded rollout counts what the
// history holds (rollouts and waves, actions with their actors, outcomes,
// failures by error code, versions over time), its chain check passes,
// says incomplete for events after the last checkpoint and fails on a
// wrong checkpoint; the page is self-contained and shows hostile input as
// text.
func TestComplianceReport(t *testing.T) {
	j := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	ctx := context.Background()
	from := recordRollout(t, j.JS)
	checkpointAll(t, j.JS)
	to := time.Now().Add(time.Hour)
	var progress []string
	build := func() (*ComplianceReport, string) {
		t.Helper()
		r, err := BuildReport(ctx, j.JS, ReportOptions{From: from, To: to, Generator: "report_test", Source: j.Server.ClientURL(),
			Progress: func(s string) { progress = append(progress, s) }})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := r.WriteHTML(&b); err != nil {
			t.Fatal(err)
		}
		return r, b.String()
	}
	r, page := build()
	if len(progress) == 0 {
		t.Error("no progress line")
	}

	// Rollouts: r1 only (old has no event in the range), its 3 waves.
	if len(r.Rollouts) != 1 || r.Rollouts[0].ID != "r1" {
		t.Fatalf("rollouts %+v, want r1 alone", r.Rollouts)
	}
	job := r.Rollouts[0]
	if job.Status != events.RolloutCompleted || job.CreatedBy != "cli:alice" || job.Devices != 30 || len(job.Waves) != 3 ||
		job.Completed != 30 || job.Failed != 3 || job.Target.Version != "2.0.0" {
		t.Errorf("r1: %+v", job)
	}
	for i, w := range job.Waves {
		if w.Size != 10 || w.StartedAt.IsZero() || w.CompletedAt.IsZero() || w.Gate == nil || !w.Gate.Passed || w.Progress == nil || w.Progress.Completed != 10 {
			t.Errorf("wave %d: %+v", i+1, w)
		}
	}
	if got, want := job.Waves[1].GatedAt, time.Date(2026, 3, 3, 9, 58, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("wave 2 gated at %s, want %s", got, want)
	}

	// Who did what.
	var acts []string
	for _, a := range r.Actions {
		acts = append(acts, a.Actor+" "+a.Action+" "+a.Object)
	}
	wantActs := []string{
		"cli:alice created rollout r1", "cli:alice started rollout r1",
		"otawatch (failure policy) paused rollout r1", "cli:carol created silence sil-1",
		"cli:bob resumed rollout r1", hostileActor + " paused rollout r1", "cli:bob resumed rollout r1",
		"cli:carol retried failed devices rollout r1", "cli:carol expired silence sil-1",
		"otawatch (rollout service) completed rollout r1",
	}
	if !reflect.DeepEqual(acts, wantActs) {
		t.Errorf("actions:\n got %q\nwant %q", acts, wantActs)
	}

	// Outcomes: 30 devices in progress once each and the 3 retried again;
	// 27 + 3 completed, 3 failed.
	if want := (ReportCounts{Total: 66, InProgress: 33, Completed: 30, Failed: 3, Devices: 30}); r.Reports != want {
		t.Errorf("reports %+v, want %+v", r.Reports, want)
	}
	if len(r.Failures) != 2 || r.Failures[0].Code != checksumCode || r.Failures[0].Reports != 2 || r.Failures[0].Devices != 2 ||
		!reflect.DeepEqual(r.Failures[0].Examples, []string{"gateway/gw-17", "gateway/gw-18"}) || !reflect.DeepEqual(r.Failures[0].Jobs, []string{"r1"}) ||
		r.Failures[1].Code != hostileCode || r.Failures[1].Reports != 1 {
		t.Errorf("failures %+v", r.Failures)
	}
	if r.Fleet.Devices != 35 || r.Fleet.Completed != 35 {
		t.Errorf("fleet after the range: %+v", r.Fleet)
	}
	if len(r.Alerts) != 1 || r.Alerts[0] != (AlertCount{RuleID: "device-failed", Severity: "critical", Raised: 3}) {
		t.Errorf("alerts %+v", r.Alerts)
	}
	if len(r.Notifications) != 1 || r.Notifications[0] != (NotifyCount{Receiver: "pagerduty", Attempts: 1, Sent: 1}) {
		t.Errorf("notifications %+v", r.Notifications)
	}
	if len(r.Rejected) != 1 || r.Rejected[0] != (NameCount{"bridge", 1}) {
		t.Errorf("rejected %+v", r.Rejected)
	}

	// Versions: the sensors stay on 0.9.8; the gateways move from 1.0.0
	// to 2.0.0 (a failed device counts under the version it runs).
	vs := r.Versions
	if !reflect.DeepEqual(vs.Versions, []string{"0.9.8", "1.0.0", "2.0.0"}) {
		t.Fatalf("chart versions %q", vs.Versions)
	}
	last := len(vs.Times) - 1
	for i, want := range [][2]int{{5, 5}, {30, 0}, {0, 30}} {
		if got := [2]int{vs.Counts[i][0], vs.Counts[i][last]}; got != want {
			t.Errorf("%s: %v devices at the start and end, want %v", vs.Versions[i], got, want)
		}
	}
	// At 09:45 wave 1 is done and wave 2's 3 failed devices still run 1.0.0.
	mid := -1
	for i, at := range vs.Times {
		if !at.After(time.Date(2026, 3, 3, 9, 45, 0, 0, time.UTC)) {
			mid = i
		}
	}
	if got := [3]int{vs.Counts[0][mid], vs.Counts[1][mid], vs.Counts[2][mid]}; got != [3]int{5, 13, 17} {
		t.Errorf("at %s: %v devices on 0.9.8, 1.0.0, 2.0.0; want [5 13 17]", vs.Times[mid], got)
	}

	// Chain: every stream passes, SHADOW from the checkpoint before the
	// range.
	for _, c := range r.Chains {
		if c.Result != ChainPass || len(c.Problems) > 0 {
			t.Errorf("%s: %s %v", c.Stream, c.Result, c.Problems)
		}
		if c.Stream == events.StreamShadow && (c.FromSeq != 35 || c.FirstSeq != 36 || c.Events != 99 || c.Checked != 1) {
			t.Errorf("SHADOW check: %+v", c)
		}
	}
	if r.ChainResult() != ChainPass {
		t.Errorf("chain result %s", r.ChainResult())
	}
	// An export of the same range has the same events and heads.
	m, err := Export(ctx, j.JS, ExportOptions{From: from, To: to, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for i, sm := range m.Streams {
		c := r.Chains[i]
		if sm.Stream != c.Stream || sm.Count != c.Events || sm.HeadBefore != c.HeadBefore || sm.HeadAfter != c.HeadAfter {
			t.Errorf("export %s: %d events, heads %s %s; report: %d events, heads %s %s",
				sm.Stream, sm.Count, sm.HeadBefore, sm.HeadAfter, c.Events, c.HeadBefore, c.HeadAfter)
		}
	}

	checkPage(t, page)
	text := pageText(t, page)
	for _, want := range []string{"PASS", "cli:alice", "cli:bob", "otawatch (failure policy)", "known checksum issue", checksumCode,
		hostileCode, hostileActor, hostileReason, "90.9%", "https://fw.example/2.0.0.bin", "Rollout r1: completed",
		"otawatch audit export --from " + from.UTC().Format(time.RFC3339Nano)} {
		if !strings.Contains(text, want) {
			t.Errorf("the page's text lacks %q", want)
		}
	}
	for _, bad := range []string{"FAIL", "INCOMPLETE"} {
		if strings.Contains(text, bad) {
			t.Errorf("the page of a passing chain says %q", bad)
		}
	}
	dir := t.TempDir()
	name := filepath.Join(dir, "report.html")
	if err := os.WriteFile(name, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("browser", func(t *testing.T) { lookAtReport(t, name, dir, vs.Versions) })

	// A range after every event: nothing in it, every chain passes, and
	// the fleet is still the one the history left.
	later, err := BuildReport(ctx, j.JS, ReportOptions{From: time.Now().Add(time.Hour), To: time.Now().Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(later.Rollouts) != 0 || later.Reports.Total != 0 || len(later.Actions) != 0 || later.Versions.Times != nil ||
		later.ChainResult() != ChainPass || later.Fleet.Devices != 35 {
		t.Errorf("a range after every event: %d rollouts, %+v, %d actions, chain %s, fleet %+v",
			len(later.Rollouts), later.Reports, len(later.Actions), later.ChainResult(), later.Fleet)
	}
	var lb bytes.Buffer
	if err := later.WriteHTML(&lb); err != nil {
		t.Fatal(err)
	}
	if text := pageText(t, lb.String()); !strings.Contains(text, "No firmware report in the range") || !strings.Contains(text, "No rollout job has an event in the range") {
		t.Errorf("the page of an empty range does not say so")
	}

	// An event after the last checkpoint: REJECTED is incomplete.
	h := &history{t: t, js: j.JS, n: 1000}
	h.pub(events.RejectedSubject("bridge"), events.TypeRejected, time.Now(), events.NewRejected("bridge", "bad", []byte("x")))
	r, page = build()
	if c := r.Chains[4]; c.Stream != events.StreamRejected || c.Result != ChainIncomplete || c.Uncovered != 1 || r.ChainResult() != ChainIncomplete {
		t.Errorf("after an event past the last checkpoint: %s %+v", r.ChainResult(), c)
	}
	if text := pageText(t, page); !strings.Contains(text, "INCOMPLETE") || !strings.Contains(text, "last 1 events are after the latest checkpoint") {
		t.Errorf("the page does not say the check is incomplete")
	}

	// A wrong checkpoint inside the range: ROLLOUT fails, naming it.
	st, err := streamState(ctx, j.JS, events.StreamRollout)
	if err != nil {
		t.Fatal(err)
	}
	writeCheckpoint(t, j.JS, events.StreamRollout, st.LastSeq-3, strings.Repeat("ee", 32))
	r, page = build()
	c := r.Chains[1]
	if c.Stream != events.StreamRollout || c.Result != ChainFail || len(c.Problems) != 1 || r.ChainResult() != ChainFail ||
		!strings.Contains(c.Problems[0], fmt.Sprintf("after sequence %d the live events fold into", st.LastSeq-3)) {
		t.Fatalf("with a wrong checkpoint: %s %+v", r.ChainResult(), c)
	}
	if r.Chains[0].Result != ChainPass {
		t.Errorf("SHADOW: %+v", r.Chains[0])
	}
	text = pageText(t, page)
	if !strings.Contains(text, "FAIL") || !strings.Contains(text, c.Problems[0]) {
		t.Errorf("the page does not show the failed check")
	}
}

// checkPage fails the test if the page could load anything: no script,
// no element that fetches, no attribute with a URL, no CSS url() or
// @import. A URL may appear as text only.
func checkPage(t *testing.T, page string) {
	t.Helper()
	z := html.NewTokenizer(strings.NewReader(page))
	inStyle := false
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			if z.Err() != io.EOF {
				t.Fatal(z.Err())
			}
			return
		case html.StartTagToken, html.SelfClosingTagToken:
			tok := z.Token()
			switch tok.Data {
			case "script", "link", "img", "iframe", "object", "embed", "base", "image", "use", "foreignobject", "audio", "video", "source", "form":
				t.Errorf("the page has a <%s> element", tok.Data)
			}
			for _, a := range tok.Attr {
				v := strings.ToLower(a.Val)
				if strings.Contains(v, "http:") || strings.Contains(v, "https:") || strings.HasPrefix(v, "//") ||
					strings.Contains(v, "url(") || strings.HasPrefix(a.Key, "on") || a.Key == "src" || a.Key == "href" {
					t.Errorf("<%s %s=%q> may load or run something", tok.Data, a.Key, a.Val)
				}
			}
			inStyle = tok.Data == "style"
		case html.TextToken:
			if inStyle {
				css := strings.ToLower(string(z.Text()))
				if strings.Contains(css, "url(") || strings.Contains(css, "@import") {
					t.Errorf("the page's CSS loads something: %s", css)
				}
			}
		case html.EndTagToken:
			inStyle = false
		}
	}
}

// pageText is the page's text, entities decoded, the text of adjacent
// elements run together.
func pageText(t *testing.T, page string) string {
	t.Helper()
	z := html.NewTokenizer(strings.NewReader(page))
	var b strings.Builder
	for {
		switch z.Next() {
		case html.ErrorToken:
			return b.String()
		case html.TextToken:
			b.Write(z.Text())
		}
	}
}

// TestComplianceReportEscapes: hostile input never reaches the page as
// markup.
func TestComplianceReportEscapes(t *testing.T) {
	r := &ComplianceReport{From: t0, To: t0.Add(time.Hour),
		Actions:  []ReportAction{{Time: t0, Actor: hostileActor, Action: "paused", Object: "rollout <i>x</i>", Detail: hostileReason}},
		Failures: []ErrorCodeCount{{Code: hostileCode, Reports: 1, Devices: 1, Examples: []string{"t/<svg onload=alert(1)>"}}},
		Chains:   []ChainCheck{{Stream: "SHADOW", Result: ChainFail, Problems: []string{`<img src=x onerror="alert(1)">`}}},
	}
	var b bytes.Buffer
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, raw := range []string{"<script>", "<b>dave", "<i>x", "<svg onload", "<img"} {
		if strings.Contains(page, raw) {
			t.Errorf("the page holds %q as markup", raw)
		}
	}
	checkPage(t, page)
	text := pageText(t, page)
	for _, want := range []string{hostileActor, hostileReason, hostileCode, "rollout <i>x</i>", `<img src=x onerror="alert(1)">`} {
		if !strings.Contains(text, want) {
			t.Errorf("the page's text lacks %q", want)
		}
	}
}

// TestCompareVersions: the chart stacks versions in reading order.
func TestCompareVersions(t *testing.T) {
	tests := []struct{ a, b string }{
		{"1.0.0", "2.0.0"}, {"4.9.2", "4.10.0"}, {"4.2.0-rc1", "4.2.0-rc2"}, {"1.0", "1.0.1"}, {"a", "b"}, {"0.9.8", "1.0.0"}, {"v2", "v10"},
	}
	for _, tt := range tests {
		if compareVersions(tt.a, tt.b) >= 0 || compareVersions(tt.b, tt.a) <= 0 {
			t.Errorf("compareVersions(%q, %q) = %d, reversed %d", tt.a, tt.b, compareVersions(tt.a, tt.b), compareVersions(tt.b, tt.a))
		}
	}
	if compareVersions("1.2.3", "1.2.3") != 0 {
		t.Error("equal versions differ")
	}
}
