package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/silence"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// notified stores a notification decision (events.NotifyAttempt,
// NotifySent or NotifyFailed) on NOTIFY, as the notify service does.
func (h *harness) notified(t *testing.T, outcome string, nd events.NotificationData, at time.Time) uint64 {
	t.Helper()
	typ := map[string]string{events.NotifyAttempt: events.TypeNotifyAttempt, events.NotifySent: events.TypeNotifySent,
		events.NotifyFailed: events.TypeNotifyFailed}[outcome]
	if nd.ID == "" {
		nd.ID = events.NotificationID(nd.Receiver, nd.GroupKey, nd.Status, nd.Count, nd.Firing, nd.Resolved)
	}
	e, err := events.New(events.NotifyEventID(nd.ID, outcome, nd.Attempt), events.SourceNotify, typ, nd.GroupKey, at, nd)
	if err != nil {
		t.Fatal(err)
	}
	return h.publish(t, events.NotifySubject(nd.Receiver, outcome), e)
}

// suppressed stores one alert's suppression on NOTIFY.
func (h *harness) suppressed(t *testing.T, sd events.SuppressedData, at time.Time) uint64 {
	t.Helper()
	e, err := events.New(events.SuppressedEventID(sd.Receiver, sd.AlertID, sd.Reason, sd.SilenceID+sd.InhibitedBy),
		events.SourceNotify, events.TypeNotifySuppressed, sd.AlertID, at, sd)
	if err != nil {
		t.Fatal(err)
	}
	return h.publish(t, events.NotifySubject(sd.Receiver, events.NotifySuppressed), e)
}

// silenced records a silence on NOTIFY, as POST /api/v1/silences does.
func (h *harness) silenced(t *testing.T, sd events.SilenceData, at time.Time) uint64 {
	t.Helper()
	e, err := silence.CreatedEvent(sd, at)
	if err != nil {
		t.Fatal(err)
	}
	return h.publish(t, events.SilenceSubject(events.SilenceCreated), e)
}

// unsilenced records a silence's expiry on NOTIFY.
func (h *harness) unsilenced(t *testing.T, id, by string, at time.Time) uint64 {
	t.Helper()
	e, err := silence.ExpiredEvent(events.SilenceExpiredData{ID: id, By: by, At: at})
	if err != nil {
		t.Fatal(err)
	}
	return h.publish(t, events.SilenceSubject(events.SilenceExpired), e)
}

// notifyPush is what the page reads of a push: the two NOTIFY lists, by
// their JSON names.
type notifyPush struct {
	Ready         bool `json:"ready"`
	Notifications []struct {
		Seq         uint64            `json:"seq"`
		Receiver    string            `json:"receiver"`
		Outcome     string            `json:"outcome"`
		GroupKey    string            `json:"groupKey"`
		GroupLabels map[string]string `json:"groupLabels"`
		Status      string            `json:"status"`
		Alerts      int               `json:"alerts"`
		Code        int               `json:"code"`
		Answer      string            `json:"answer"`
		Error       string            `json:"error"`
		Final       bool              `json:"final"`
		Reason      string            `json:"reason"`
		SilenceID   string            `json:"silenceId"`
		InhibitedBy string            `json:"inhibitedBy"`
	} `json:"notifications"`
	Silences []struct {
		ID        string     `json:"id"`
		Matchers  []string   `json:"matchers"`
		StartsAt  time.Time  `json:"startsAt"`
		EndsAt    time.Time  `json:"endsAt"`
		CreatedBy string     `json:"createdBy"`
		Comment   string     `json:"comment"`
		State     string     `json:"state"`
		ExpiredAt *time.Time `json:"expiredAt"`
	} `json:"silences"`
}

// lines renders the lists one line per entry, for comparing with a want.
func (p notifyPush) lines() (notifications, silences []string) {
	for _, n := range p.Notifications {
		labels := make([]string, 0, len(n.GroupLabels))
		for k, v := range n.GroupLabels {
			labels = append(labels, k+"="+v)
		}
		sort.Strings(labels)
		notifications = append(notifications, fmt.Sprintf("%s %s %s %q status=%s alerts=%d code=%d answer=%q error=%q final=%v reason=%s silence=%s inhibitedBy=%s",
			n.Receiver, n.Outcome, n.GroupKey, strings.Join(labels, ","), n.Status, n.Alerts, n.Code, n.Answer, n.Error, n.Final, n.Reason, n.SilenceID, n.InhibitedBy))
	}
	for _, s := range p.Silences {
		silences = append(silences, fmt.Sprintf("%s %s %s by=%s comment=%q ends=%s expired=%v",
			s.ID, s.State, strings.Join(s.Matchers, ","), s.CreatedBy, s.Comment, s.EndsAt.Format(time.RFC3339), s.ExpiredAt != nil))
	}
	return notifications, silences
}

// readPushUntil reads pushes until ok holds for one, and returns it.
func readPushUntil(t *testing.T, ctx context.Context, c *websocket.Conn, ok func(notifyPush) bool) notifyPush {
	t.Helper()
	var last notifyPush
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			n, s := last.lines()
			t.Fatalf("read websocket: %v; the last push had notifications\n%s\nand silences\n%s", err, strings.Join(n, "\n"), strings.Join(s, "\n"))
		}
		last = notifyPush{}
		if err := json.Unmarshal(b, &last); err != nil {
			t.Fatalf("push %s: %v", b, err)
		}
		if ok(last) {
			return last
		}
	}
}

// TestDashboardShowsNotificationsAndSilences: the NOTIFY decisions the
// notify service records (sent, failed, suppressed) are in the dashboard's
// push newest first, an alert's suppressions by one cause in a row are
// one line, attempts are not listed, and a NOTIFY event it cannot read
// goes to REJECTED without stopping the fold. The silences are those
// created and neither expired nor past their end at the service's clock,
// and one drops out when the clock passes its end.
func TestDashboardShowsNotificationsAndSilences(t *testing.T) {
	clock := testutil.NewFakeClock(t0.Add(time.Hour))
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}, clock: clock})

	h.silenced(t, events.SilenceData{ID: "s-ends-soon", Matchers: []string{`job="fw-2"`, `severity=~"warning|info"`},
		StartsAt: t0, EndsAt: t0.Add(90 * time.Minute), CreatedBy: "alice", Comment: "planned maintenance"}, t0)
	h.silenced(t, events.SilenceData{ID: "s-ended", Matchers: []string{`rule="offline"`},
		StartsAt: t0, EndsAt: t0.Add(30 * time.Minute), CreatedBy: "alice"}, t0)
	h.silenced(t, events.SilenceData{ID: "s-expired", Matchers: []string{`device="d1"`},
		StartsAt: t0, EndsAt: t0.Add(4 * time.Hour), CreatedBy: "alice"}, t0.Add(time.Minute))
	h.unsilenced(t, "s-expired", "bob", t0.Add(2*time.Minute))
	h.silenced(t, events.SilenceData{ID: "s-pending", Matchers: []string{`device_type="gateway"`},
		StartsAt: t0.Add(2 * time.Hour), EndsAt: t0.Add(3 * time.Hour), CreatedBy: "carol"}, t0.Add(3*time.Minute))

	const group = `{}:{job="fw-2",rule="update_failed"}`
	labels := map[string]string{"job": "fw-2", "rule": "update_failed"}
	page := events.NotificationData{Receiver: "pagerduty", GroupKey: group, GroupLabels: labels, Status: "firing",
		Firing: []string{"a1", "a2", "a3"}, Attempt: 1, DecidedAt: t0.Add(10 * time.Minute)}
	h.notified(t, events.NotifyAttempt, page, t0.Add(10*time.Minute))
	page.Code, page.Answer = 202, `{"status":"success"}`
	h.notified(t, events.NotifySent, page, t0.Add(10*time.Minute))
	h.notified(t, events.NotifyFailed, events.NotificationData{Receiver: "slack", GroupKey: group, GroupLabels: labels, Status: "firing",
		Firing: []string{"a1"}, Attempt: 1, Code: 503, Error: "slack: 503 Service Unavailable", Retry: true}, t0.Add(11*time.Minute))
	h.notified(t, events.NotifyFailed, events.NotificationData{Receiver: "webhook", GroupKey: group, Status: "resolved",
		Resolved: []string{"a1"}, Attempt: 1, Code: 400, Error: "webhook: 400 Bad Request", Final: true}, t0.Add(12*time.Minute))
	for _, a := range []string{"a4", "a5", "a6"} {
		h.suppressed(t, events.SuppressedData{Receiver: "email", GroupKey: group, AlertID: a, Key: a, RuleID: "update_failed",
			Severity: "warning", Reason: events.SuppressedSilence, SilenceID: "s-ends-soon"}, t0.Add(13*time.Minute))
	}
	h.suppressed(t, events.SuppressedData{Receiver: "email", GroupKey: group, AlertID: "a7", Key: "a7", RuleID: "update_failed",
		Severity: "warning", Reason: events.SuppressedInhibited, InhibitedBy: "a1"}, t0.Add(14*time.Minute))
	bad, err := events.New("bad-notify", events.SourceNotify, events.TypeNotifySent, "g", t0.Add(15*time.Minute), "not notification data")
	if err != nil {
		t.Fatal(err)
	}
	h.publish(t, events.NotifySubject("webhook", events.NotifySent), bad)
	last := h.notified(t, events.NotifySent, events.NotificationData{Receiver: "webhook", GroupKey: group, Status: "resolved",
		Resolved: []string{"a1"}, Count: 1, Attempt: 1, Code: 200, Answer: "ok"}, t0.Add(16*time.Minute))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.base, "http")+"/api/v1/ws?access_token="+roToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	p := readPushUntil(t, ctx, c, func(p notifyPush) bool {
		return p.Ready && len(p.Notifications) > 0 && p.Notifications[0].Seq == last
	})
	gotN, gotS := p.lines()
	l := `"job=fw-2,rule=update_failed"`
	wantN := []string{
		`webhook sent ` + group + ` "" status=resolved alerts=1 code=200 answer="ok" error="" final=false reason= silence= inhibitedBy=`,
		`email suppressed ` + group + ` "" status= alerts=1 code=0 answer="" error="" final=false reason=inhibited silence= inhibitedBy=a1`,
		`email suppressed ` + group + ` "" status= alerts=3 code=0 answer="" error="" final=false reason=silence silence=s-ends-soon inhibitedBy=`,
		`webhook failed ` + group + ` "" status=resolved alerts=1 code=400 answer="" error="webhook: 400 Bad Request" final=true reason= silence= inhibitedBy=`,
		`slack failed ` + group + ` ` + l + ` status=firing alerts=1 code=503 answer="" error="slack: 503 Service Unavailable" final=false reason= silence= inhibitedBy=`,
		`pagerduty sent ` + group + ` ` + l + ` status=firing alerts=3 code=202 answer="{\"status\":\"success\"}" error="" final=false reason= silence= inhibitedBy=`,
	}
	wantS := []string{
		`s-ends-soon active job="fw-2",severity=~"warning|info" by=alice comment="planned maintenance" ends=2026-11-25T13:30:00Z expired=false`,
		`s-pending pending device_type="gateway" by=carol comment="" ends=2026-11-25T15:00:00Z expired=false`,
	}
	if strings.Join(gotN, "\n") != strings.Join(wantN, "\n") {
		t.Errorf("notifications:\n%s\nwant:\n%s", strings.Join(gotN, "\n"), strings.Join(wantN, "\n"))
	}
	if strings.Join(gotS, "\n") != strings.Join(wantS, "\n") {
		t.Errorf("silences at %s:\n%s\nwant:\n%s", clock.Now().Format(time.RFC3339), strings.Join(gotS, "\n"), strings.Join(wantS, "\n"))
	}

	// The undecodable sent event is on REJECTED, from the api's fold.
	testutil.Eventually(t, 10*time.Second, func() bool { return h.js.Count(t, events.StreamRejected) == 1 },
		"REJECTED holds %d records, want the bad NOTIFY event", h.js.Count(t, events.StreamRejected))
	for _, m := range h.js.Events(t, events.StreamRejected) {
		ev, err := events.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		var d events.RejectedData
		if err := ev.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		if d.Stream != events.StreamNotify || d.Source != RejectedSource {
			t.Errorf("rejected %+v, want the api's record of a NOTIFY event", d)
		}
	}
	_, body := h.do(t, http.MethodGet, "/metrics", "", nil)
	if line := `otawatch_api_fold_caught_up{stream="NOTIFY"} 1`; !strings.Contains(string(body), line) {
		t.Errorf("/metrics lacks %q", line)
	}

	// Past s-ends-soon's end the next push leaves it out, though no event
	// came (the dashboard rebuilds every streamInfoTTL regardless).
	clock.Advance(40 * time.Minute)
	p = readPushUntil(t, ctx, c, func(p notifyPush) bool { return len(p.Silences) != 2 })
	if _, gotS = p.lines(); len(gotS) != 1 || !strings.HasPrefix(gotS[0], "s-pending pending ") {
		t.Errorf("silences at %s:\n%s\nwant s-pending alone", clock.Now().Format(time.RFC3339), strings.Join(gotS, "\n"))
	}
}

// TestNotifyModel: the notification list keeps the newest notifyCap
// decisions, and a silence that ended before a later silence event is
// forgotten; a late copy of its created event does not bring it back,
// nor does one of a silence expired early.
func TestNotifyModel(t *testing.T) {
	m := newModel()
	for i := 1; i <= notifyCap+10; i++ {
		nd := events.NotificationData{ID: fmt.Sprint("n", i), Receiver: "webhook", GroupKey: "g", Status: "firing", Firing: []string{"a"}, Attempt: 1}
		e, err := events.New(fmt.Sprint("e", i), events.SourceNotify, events.TypeNotifySent, "g", t0, nd)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.applyNotify(uint64(i), events.NotifySubject("webhook", events.NotifySent), e); err != nil {
			t.Fatal(err)
		}
	}
	got := m.recentNotifications()
	if len(got) != notifyCap || got[0].Seq != notifyCap+10 || got[notifyCap-1].Seq != 11 {
		t.Errorf("%d notifications, %d..%d; want %d, newest first, %d..11", len(got), got[0].Seq, got[len(got)-1].Seq, notifyCap, notifyCap+10)
	}

	apply := func(e events.Event, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.applyNotify(1, "", e); err != nil {
			t.Fatal(err)
		}
	}
	short := events.SilenceData{ID: "short", Matchers: []string{`job="j"`}, StartsAt: t0, EndsAt: t0.Add(time.Hour), CreatedBy: "alice"}
	early := events.SilenceData{ID: "early", Matchers: []string{`job="j"`}, StartsAt: t0, EndsAt: t0.Add(10 * time.Hour), CreatedBy: "alice"}
	apply(silence.CreatedEvent(short, t0))
	apply(silence.CreatedEvent(early, t0))
	apply(silence.ExpiredEvent(events.SilenceExpiredData{ID: "early", By: "bob", At: t0.Add(time.Minute)}))
	later := events.SilenceData{ID: "later", Matchers: []string{`job="k"`}, StartsAt: t0, EndsAt: t0.Add(10 * time.Hour), CreatedBy: "alice"}
	apply(silence.CreatedEvent(later, t0.Add(2*time.Hour)))
	if _, ok := m.silences["short"]; ok {
		t.Error("short is kept after an event past its end")
	}
	// Late copies (the duplicate window long past).
	apply(silence.CreatedEvent(short, t0.Add(3*time.Hour)))
	apply(silence.CreatedEvent(early, t0.Add(3*time.Hour)))
	var ids []string
	for _, s := range m.activeSilences(t0.Add(3 * time.Hour)) {
		ids = append(ids, s.ID)
	}
	if strings.Join(ids, ",") != "later" {
		t.Errorf("active silences %v, want [later]", ids)
	}
}
