package email

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin wherever the test runs

	"github.com/emersion/go-smtp"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/notify"
)

var t0 = time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)

func passwordFile(t *testing.T, pw string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "smtp_password")
	if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func config(t *testing.T, ms *mailServer) Config {
	host, port, _ := net.SplitHostPort(ms.addr)
	p, _ := strconv.Atoi(port)
	return Config{
		Host: host, Port: p, From: "otawatch <alerts@otawatch.example.com>",
		To:       []string{"Fleet Ops <fleet-ops@example.com>", "oncall@example.com"},
		Username: smtpUser, PasswordFile: passwordFile(t, smtpPassword), CAFile: ms.caFile, Timeout: 10 * time.Second,
	}
}

func newNotifier(t *testing.T, cfg Config) *Notifier {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func alert(rule, sev, state, dev, job string, wave int, at time.Time) events.AlertData {
	return events.AlertData{
		Key: rule + "/gw/" + dev, RuleID: rule, Severity: sev, State: state, TypeID: "gw", DeviceID: dev,
		JobID: job, Wave: wave, Message: fmt.Sprintf("%s: %s reports 4.1.5, the job wants 4.2.1", rule, dev), StartsAt: at,
	}
}

// part is one MIME part of a received mail, decoded.
type part struct {
	header map[string][]string
	body   string
}

// parse reads a received mail: its headers, and each part of its
// multipart/alternative body, raw headers kept and quoted-printable
// decoded by hand (multipart's NextPart would hide the encoding).
func parse(t *testing.T, data []byte) (mail.Header, []part) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("received mail does not parse: %v\n%s", err, data)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var parts []part
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if cte := p.Header.Get("Content-Transfer-Encoding"); cte != "quoted-printable" {
			t.Errorf("part %s: Content-Transfer-Encoding %q", p.Header.Get("Content-Type"), cte)
		}
		b, err := io.ReadAll(quotedprintable.NewReader(p))
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, part{header: p.Header, body: string(b)})
	}
	return msg.Header, parts
}

func hasAll(t *testing.T, what, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, s)
		}
	}
}

func TestImmediateMail(t *testing.T) {
	ms := startMailServer(t, true)
	r := newNotifier(t, config(t, ms))
	n := &notify.Notification{
		Receiver: "ops-mail", GroupKey: "g-critical", Status: notify.StatusFiring, Time: t0,
		ExternalURL: "https://otawatch.example.com",
		Alerts: []events.AlertData{
			alert("device-failed", "critical", events.AlertRaised, "dev-001", "fw-4.2.1", 3, t0.Add(-time.Minute)),
			alert("device-failed", "critical", events.AlertRaised, "dev-002", "fw-4.2.1", 3, t0.Add(-time.Minute)),
		},
	}
	n.Alerts[1].Message = "dev-002 failed: <E42> & rolled back"
	res, err := r.Notify(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 250 || !strings.Contains(res.Answer, "queued") || res.Retry {
		t.Errorf("result %+v, want the server's 250 queued reply", res)
	}
	mails := ms.received()
	if len(mails) != 1 {
		t.Fatalf("server received %d mails, want 1", len(mails))
	}
	m := mails[0]
	if !m.tls || m.user != smtpUser || m.from != "alerts@otawatch.example.com" ||
		!reflect.DeepEqual(m.to, []string{"fleet-ops@example.com", "oncall@example.com"}) {
		t.Errorf("envelope: tls %v user %q from %q to %v", m.tls, m.user, m.from, m.to)
	}
	t.Logf("immediate mail as received:\n%s", m.data)
	h, parts := parse(t, m.data)
	headers := map[string]string{
		"From":           "otawatch <alerts@otawatch.example.com>",
		"To":             "Fleet Ops <fleet-ops@example.com>, oncall@example.com",
		"Subject":        "[CRITICAL] device-failed in job fw-4.2.1 wave 3: 2 devices",
		"Date":           "Mon, 30 Nov 2026 06:00:00 +0000",
		"MIME-Version":   "1.0",
		"Auto-Submitted": "auto-generated",
	}
	for k, want := range headers {
		if got := h.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if id := h.Get("Message-ID"); !strings.HasSuffix(id, "@otawatch.example.com>") {
		t.Errorf("Message-ID %q", id)
	}
	if len(parts) != 2 {
		t.Fatalf("%d parts, want text and HTML", len(parts))
	}
	if ct := parts[0].header["Content-Type"]; !reflect.DeepEqual(ct, []string{"text/plain; charset=utf-8"}) {
		t.Errorf("first part %v, want text/plain", ct)
	}
	if ct := parts[1].header["Content-Type"]; !reflect.DeepEqual(ct, []string{"text/html; charset=utf-8"}) {
		t.Errorf("second part %v, want text/html", ct)
	}
	hasAll(t, "text part", parts[0].body,
		"Firing: device-failed (critical)\r\nJob: fw-4.2.1, wave 3\r\nDevices (2): dev-001, dev-002\r\n",
		"- [raised] dev-002 failed: <E42> & rolled back (dev-002), since 2026-11-30T05:59:00Z\r\n",
		"Dashboard: https://otawatch.example.com")
	hasAll(t, "HTML part", parts[1].body,
		"<title>[CRITICAL] device-failed in job fw-4.2.1 wave 3: 2 devices</title>",
		"<strong>Firing: device-failed</strong> (critical)",
		"<td>dev-002 failed: &lt;E42&gt; &amp; rolled back</td>",
		`<a href="https://otawatch.example.com">Dashboard</a>`)

	// The same notification again (a retry whose reply was lost) has the
	// same Message-ID.
	if _, err := r.Notify(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	h2, _ := parse(t, ms.received()[1].data)
	if h2.Get("Message-ID") != h.Get("Message-ID") {
		t.Errorf("Message-ID %q then %q, want equal", h.Get("Message-ID"), h2.Get("Message-ID"))
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name   string
		tls    bool
		edit   func(*Config)
		rcpt   error
		status int
		retry  bool
		err    string
	}{
		{name: "no STARTTLS while required", tls: false, err: "does not offer STARTTLS"},
		{name: "wrong password", tls: true, edit: func(c *Config) { c.PasswordFile = passwordFile(t, "wrong") }, status: 535, err: "AUTH PLAIN"},
		{name: "untrusted certificate", tls: true, edit: func(c *Config) { c.CAFile = "" }, err: "certificate"},
		{name: "recipient refused", tls: true, rcpt: &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"},
			status: 550, err: "RCPT TO"},
		{name: "mailbox busy is retried", tls: true, rcpt: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"},
			status: 451, retry: true, err: "451"},
		{name: "connection refused is retried", tls: true, edit: func(c *Config) {
			l, _ := net.Listen("tcp", "127.0.0.1:0")
			c.Port = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}, retry: true, err: "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms := startMailServer(t, tt.tls)
			ms.rcptErr = tt.rcpt
			cfg := config(t, ms)
			if tt.edit != nil {
				tt.edit(&cfg)
			}
			r := newNotifier(t, cfg)
			n := &notify.Notification{Receiver: "ops-mail", GroupKey: "g", Status: notify.StatusFiring, Time: t0,
				Alerts: []events.AlertData{alert("device-failed", "critical", "raised", "d1", "j", 1, t0)}}
			res, err := r.Notify(context.Background(), n)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.err)
			}
			if res.Status != tt.status || res.Retry != tt.retry {
				t.Errorf("result %+v, want status %d retry %v", res, tt.status, tt.retry)
			}
			if strings.Contains(err.Error(), smtpPassword) || strings.Contains(res.Answer, smtpPassword) {
				t.Errorf("the password shows: %v / %q", err, res.Answer)
			}
			if got := ms.received(); len(got) != 0 {
				t.Errorf("server received %d mails", len(got))
			}
		})
	}
}

func TestDigest(t *testing.T) {
	ms := startMailServer(t, true)
	r := newNotifier(t, config(t, ms))
	clock := testutil.NewFakeClock(t0) // 07:00 in Berlin
	var attempts []DigestAttempt
	d, err := NewDigest(r, DigestConfig{Receiver: "daily", At: "08:00", TimeZone: "Europe/Berlin",
		ExternalURL: "https://otawatch.example.com", OnSend: func(a DigestAttempt) { attempts = append(attempts, a) }}, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for d.Next().IsZero() { // Run has armed its timer
		time.Sleep(time.Millisecond)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	if want := time.Date(2026, 11, 30, 8, 0, 0, 0, berlin); !d.Next().Equal(want) {
		t.Fatalf("next digest %s, want %s", d.Next(), want)
	}

	// The period: two jobs' version mismatches, one of them resolved in a
	// later notification, one repeated; a duration anomaly without a job.
	a1 := alert("version-mismatch", "info", events.AlertRaised, "dev-001", "fw-A", 1, t0.Add(-5*time.Hour))
	a2 := alert("version-mismatch", "info", events.AlertRaised, "dev-002", "fw-A", 1, t0.Add(-4*time.Hour))
	a3 := alert("version-mismatch", "info", events.AlertRaised, "dev-100", "fw-B", 2, t0.Add(-3*time.Hour))
	a4 := alert("duration-anomaly", "info", events.AlertRaised, "dev-007", "", 0, t0.Add(-2*time.Hour))
	a2r := a2
	a2r.State = events.AlertResolved
	for _, alerts := range [][]events.AlertData{{a1, a2}, {a3}, {a2r, a1}, {a4}, {a2}} {
		res, err := d.Notify(ctx, &notify.Notification{Receiver: "daily", Status: notify.StatusFiring, Alerts: alerts, Time: t0})
		if err != nil || !strings.HasPrefix(res.Answer, "queued for the digest of 2026-11-30T08:00:00+01:00") {
			t.Fatalf("queue: %+v, %v", res, err)
		}
	}
	if got := ms.received(); len(got) != 0 {
		t.Fatalf("%d mails before the digest time", len(got))
	}
	clock.Advance(59 * time.Minute)
	if got := ms.received(); len(got) != 0 {
		t.Fatalf("%d mails a minute before the digest time", len(got))
	}
	clock.Advance(time.Minute)
	mails := ms.received()
	if len(mails) != 1 || len(attempts) != 1 || attempts[0].Err != nil || attempts[0].Alerts != 4 {
		t.Fatalf("at 08:00: %d mails, attempts %+v; want one digest of 4 alerts", len(mails), attempts)
	}
	t.Logf("digest as received:\n%s", mails[0].data)
	h, parts := parse(t, mails[0].data)
	if got, want := h.Get("Subject"), "otawatch digest 2026-11-30: 4 alerts in 3 groups"; got != want {
		t.Errorf("Subject %q, want %q", got, want)
	}
	if got, want := h.Get("Date"), "Mon, 30 Nov 2026 08:00:00 +0100"; got != want {
		t.Errorf("Date %q, want %q", got, want)
	}
	if len(parts) != 2 || parts[0].header["Content-Type"][0] != "text/plain; charset=utf-8" || parts[1].header["Content-Type"][0] != "text/html; charset=utf-8" {
		t.Fatalf("parts %v", parts)
	}
	text := parts[0].body
	hasAll(t, "digest text", text,
		"otawatch daily digest, 2026-11-30 07:00 to 2026-11-30 08:00 CET\r\n4 alerts (3 firing, 1 resolved) on 4 devices.\r\n",
		"\r\nduration-anomaly (info): 1 alert, 1 firing\r\n  devices: dev-007\r\n",
		"\r\nversion-mismatch, job fw-A (info): 2 alerts, 1 firing\r\n  devices: dev-001, dev-002\r\n"+
			"  - [raised] version-mismatch: dev-001 reports 4.1.5, the job wants 4.2.1, since 2026-11-30T01:00:00Z\r\n"+
			"  - [resolved] version-mismatch: dev-002 reports 4.1.5, the job wants 4.2.1, since 2026-11-30T02:00:00Z\r\n",
		"\r\nversion-mismatch, job fw-B (info): 1 alert, 1 firing\r\n  devices: dev-100\r\n",
		"Dashboard: https://otawatch.example.com")
	// Grouped by rule, then job.
	if i, j, k := strings.Index(text, "duration-anomaly ("), strings.Index(text, "job fw-A"), strings.Index(text, "job fw-B"); !(i < j && j < k) {
		t.Errorf("groups out of order (%d, %d, %d)", i, j, k)
	}
	hasAll(t, "digest HTML", parts[1].body,
		"<h3>version-mismatch, job fw-A (info)</h3>", "<h3>duration-anomaly (info)</h3>",
		"<tr><td>resolved</td><td>version-mismatch: dev-002 reports 4.1.5, the job wants 4.2.1</td><td>2026-11-30T02:00:00Z</td></tr>")

	// Nothing new: no mail the next day.
	clock.Advance(24 * time.Hour)
	if got := ms.received(); len(got) != 1 {
		t.Errorf("%d mails after an empty day, want still 1", len(got))
	}
	// Something new: the day after, a digest of it alone, for the period
	// since the last digest sent.
	if _, err := d.Notify(ctx, &notify.Notification{Alerts: []events.AlertData{a3}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(24 * time.Hour)
	mails = ms.received()
	if len(mails) != 2 {
		t.Fatalf("%d mails, want 2", len(mails))
	}
	_, parts = parse(t, mails[1].data)
	hasAll(t, "second digest", parts[0].body, "otawatch daily digest, 2026-11-30 08:00 to 2026-12-02 08:00 CET\r\n1 alert (1 firing, 0 resolved) on 1 device.")
}

func TestDigestRetry(t *testing.T) {
	ms := startMailServer(t, true)
	ms.rcptErr = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
	r := newNotifier(t, config(t, ms))
	clock := testutil.NewFakeClock(time.Date(2026, 11, 30, 7, 59, 0, 0, time.UTC))
	d, err := NewDigest(r, DigestConfig{Receiver: "daily", At: "08:00", RetryInterval: 10 * time.Minute}, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = d.Run(ctx) }()
	for d.Next().IsZero() {
		time.Sleep(time.Millisecond)
	}
	if _, err := d.Notify(ctx, &notify.Notification{Alerts: []events.AlertData{alert("version-mismatch", "info", "raised", "d1", "j", 1, t0)}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute) // 08:00: the server refuses for now
	if got, want := d.Next(), time.Date(2026, 11, 30, 8, 10, 0, 0, time.UTC); !got.Equal(want) || d.Pending() != 1 {
		t.Fatalf("after a 452: next %s (want %s), pending %d (want 1)", got, want, d.Pending())
	}
	ms.mu.Lock()
	ms.rcptErr = nil
	ms.mu.Unlock()
	clock.Advance(10 * time.Minute)
	if got := ms.received(); len(got) != 1 || d.Pending() != 0 {
		t.Fatalf("after the retry: %d mails, %d pending; want 1 and 0", len(got), d.Pending())
	}
	if got, want := d.Next(), time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("next %s, want %s", got, want)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	off := false
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "good", cfg: Config{Host: "smtp.example.com", From: "a@example.com", To: []string{"b@example.com"},
			Username: "a", PasswordFile: passwordFile(t, "x")}},
		{name: "nothing set", cfg: Config{}, want: []string{"host: is required", "from: is required", "to: needs at least one recipient"}},
		{name: "everything wrong", cfg: Config{Host: "smtp.example.com", Port: 70000, From: "not an address", To: []string{"ok@example.com", "bad"},
			Username: "a", PasswordFile: filepath.Join(dir, "nope"), RequireTLS: &off, CAFile: filepath.Join(dir, "ca.pem"),
			Timeout: -1, Subject: "{{", DigestHTML: "{{end}}"}, want: []string{
			"port: 70000 is not a port",
			`from: "not an address" is not an address: mail: no angle-addr`,
			`to.1: "bad" is not an address: mail: missing '@' or angle-addr`,
			"password_file: read secret: open " + dir + "/nope: no such file or directory",
			"require_tls: is false but a password is sent: it would cross the network in the clear (net/smtp refuses to)",
			"ca_file: read CA file: open " + dir + "/ca.pem: no such file or directory",
			"timeout: must be positive",
			"subject: parse template: template: subject:1: unclosed action",
			"digest_html: parse template: template: digest_html:1: unexpected {{end}}",
		}},
		{name: "password without user", cfg: Config{Host: "h", From: "a@b.c", To: []string{"d@e.f"}, PasswordFile: "x"},
			want: []string{"username: is required with a password_file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.SetDefaults()
			p := conf.NewProblems()
			cfg.Validate(p)
			var got []string
			for _, pr := range p.List() {
				got = append(got, pr.Key+": "+pr.Reason)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestNotifyDigest(t *testing.T) {
	ms := startMailServer(t, true)
	r := newNotifier(t, config(t, ms))
	n := &notify.Notification{Receiver: "daily", GroupKey: "{}/{severity=\"info\"}:{}", Status: notify.StatusFiring, Time: t0,
		Alerts: []events.AlertData{
			alert("version-mismatch", "info", events.AlertRaised, "d1", "fw-A", 1, t0.Add(-time.Hour)),
			alert("version-mismatch", "info", events.AlertRaised, "d2", "fw-B", 1, t0.Add(-time.Hour)),
		}}
	if _, err := r.NotifyDigest(context.Background(), n, time.Time{}); err != nil {
		t.Fatal(err)
	}
	mails := ms.received()
	if len(mails) != 1 {
		t.Fatalf("%d mails", len(mails))
	}
	h, parts := parse(t, mails[0].data)
	if got, want := h.Get("Subject"), "otawatch digest 2026-11-30: 2 alerts in 2 groups"; got != want {
		t.Errorf("Subject %q, want %q", got, want)
	}
	hasAll(t, "digest text", parts[0].body, "otawatch daily digest, 2026-11-29 06:00 to 2026-11-30 06:00 UTC\r\n",
		"version-mismatch, job fw-A (info): 1 alert", "version-mismatch, job fw-B (info): 1 alert")
}
