package tmpl

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/notify"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func alert(rule, sev, state, typ, dev, job string, wave int) events.AlertData {
	return events.AlertData{
		Key: rule + "/" + typ + "/" + dev, RuleID: rule, Severity: sev, State: state,
		TypeID: typ, DeviceID: dev, JobID: job, Wave: wave,
		Message: fmt.Sprintf("device %s failed", dev), StartsAt: t0,
	}
}

func TestNewData(t *testing.T) {
	tests := []struct {
		name     string
		n        notify.Notification
		severity string
		rules    []string
		jobs     []string
		waves    []int
		devices  []string
		firing   int
	}{
		{
			name: "highest firing severity, distinct devices in order",
			n: notify.Notification{Status: notify.StatusFiring, Alerts: []events.AlertData{
				alert("stale-shadow", "warning", "raised", "gw", "d2", "j1", 2),
				alert("device-failed", "critical", "resolved", "gw", "d1", "j1", 3),
				alert("device-failed", "info", "raised", "gw", "d2", "j1", 3),
			}},
			severity: "warning", rules: []string{"device-failed", "stale-shadow"},
			jobs: []string{"j1"}, waves: []int{2, 3}, devices: []string{"d2", "d1"}, firing: 2,
		},
		{
			name: "resolved group takes the highest of all",
			n: notify.Notification{Status: notify.StatusResolved, Alerts: []events.AlertData{
				alert("device-failed", "critical", "resolved", "gw", "d1", "", 0),
			}},
			severity: "critical", rules: []string{"device-failed"}, devices: []string{"d1"},
		},
		{
			name: "same id on two types is told apart",
			n: notify.Notification{Alerts: []events.AlertData{
				alert("device-failed", "critical", "raised", "gw", "d1", "", 0),
				alert("device-failed", "critical", "raised", "cam", "d1", "", 0),
			}},
			severity: "critical", rules: []string{"device-failed"}, devices: []string{"gw/d1", "cam/d1"}, firing: 2,
		},
		{
			name: "fleet alert has no device",
			n: notify.Notification{Alerts: []events.AlertData{
				{Key: "success-rate-low/fleet", RuleID: "success-rate-low", Severity: "critical", State: "raised", JobID: "j9"},
			}},
			severity: "critical", rules: []string{"success-rate-low"}, jobs: []string{"j9"}, firing: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewData(&tt.n)
			if d.Severity != tt.severity || !reflect.DeepEqual(d.Rules, tt.rules) || !reflect.DeepEqual(d.Jobs, tt.jobs) ||
				!reflect.DeepEqual(d.Waves, tt.waves) || !reflect.DeepEqual(d.Devices, tt.devices) || len(d.Firing) != tt.firing {
				t.Errorf("got severity %q rules %v jobs %v waves %v devices %v firing %d\nwant severity %q rules %v jobs %v waves %v devices %v firing %d",
					d.Severity, d.Rules, d.Jobs, d.Waves, d.Devices, len(d.Firing),
					tt.severity, tt.rules, tt.jobs, tt.waves, tt.devices, tt.firing)
			}
		})
	}
}

func storm(n int) *notify.Notification {
	var alerts []events.AlertData
	for i := range n {
		alerts = append(alerts, alert("device-failed", "critical", "raised", "gw", fmt.Sprintf("dev-%03d", i), "fw-4.2.1", 3))
	}
	return &notify.Notification{Receiver: "pd", Status: notify.StatusFiring, GroupKey: "g", Alerts: alerts,
		ExternalURL: "https://otawatch.example", Time: t0}
}

func TestDefaults(t *testing.T) {
	d := NewData(storm(200))
	tests := []struct {
		name, tmpl string
		html       bool
		want       []string
		not        []string
	}{
		{name: "title", tmpl: DefaultTitle, want: []string{"[CRITICAL] device-failed in job fw-4.2.1 wave 3: 200 devices"}},
		{name: "text", tmpl: DefaultText, want: []string{
			"Firing: device-failed (critical)\nJob: fw-4.2.1, wave 3\nDevices (200): dev-000,",
			"dev-019 and 180 more\n", "- [raised] device dev-000 failed (dev-000), since 2026-11-30T12:00:00Z\n",
			"... and 180 more alerts\n", "Dashboard: https://otawatch.example\n",
		}, not: []string{"dev-020 failed"}},
		{name: "html", tmpl: DefaultHTML, html: true, want: []string{
			"<strong>Firing: device-failed</strong> (critical)", "<li>Devices (200): dev-000, ",
			"<td>device dev-019 failed</td>", "<p>... and 180 more alerts</p>", `<a href="https://otawatch.example">`,
		}, not: []string{"dev-020 failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			var err error
			if tt.html {
				var h *HTML
				if h, err = ParseHTML(tt.name, "", tt.tmpl); err == nil {
					got, err = h.Execute(d)
				}
			} else {
				var x *Text
				if x, err = ParseText(tt.name, "", tt.tmpl); err == nil {
					got, err = x.Execute(d)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in\n%s", w, got)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(got, w) {
					t.Errorf("unexpected %q in\n%s", w, got)
				}
			}
		})
	}
}

func TestResolvedTitle(t *testing.T) {
	n := storm(1)
	n.Status = notify.StatusResolved
	n.Alerts[0].State = events.AlertResolved
	x, err := ParseText("title", "", DefaultTitle)
	if err != nil {
		t.Fatal(err)
	}
	got, err := x.Execute(NewData(n))
	if want := "[RESOLVED] device-failed in job fw-4.2.1 wave 3: 1 device"; err != nil || got != want {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
}

func TestOverride(t *testing.T) {
	tests := []struct {
		name, text, want, err string
	}{
		{name: "override wins", text: `{{.Receiver}}: {{list 2 .Devices}}`, want: "pd: dev-000, dev-001 and 1 more"},
		{name: "empty is the default", text: "", want: "[CRITICAL] device-failed in job fw-4.2.1 wave 3: 3 devices"},
		{name: "bad syntax names the template", text: `{{.Receiver`, err: `template: summary:1: unclosed action`},
		{name: "unknown function", text: `{{nope .Receiver}}`, err: `function "nope" not defined`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := ParseText("summary", tt.text, DefaultTitle)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := x.Execute(NewData(storm(3)))
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestHTMLEscapes(t *testing.T) {
	n := storm(1)
	n.Alerts[0].Message = `<script>alert(1)</script>`
	h, err := ParseHTML("html", "", DefaultHTML)
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.Execute(NewData(n))
	if err != nil || strings.Contains(got, "<script>") || !strings.Contains(got, "&lt;script&gt;") {
		t.Errorf("message not escaped: %v\n%s", err, got)
	}
}
