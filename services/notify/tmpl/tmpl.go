package tmpl

import (
	"fmt"
	htmltemplate "html/template"
	"sort"
	"strconv"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/notify"
)

// Data is what a notification template sees: the notification, and what
// its alerts add up to.
type Data struct {
	Receiver string
	// Status is notify.StatusFiring or notify.StatusResolved.
	Status   string
	GroupKey string
	// GroupLabels and CommonLabels are the notification's (never nil).
	GroupLabels, CommonLabels map[string]string
	// Alerts are all the group's alerts; Firing and Resolved split them by
	// state.
	Alerts, Firing, Resolved []events.AlertData
	// Severity is the highest severity of the firing alerts (of all the
	// alerts once the group is resolved).
	Severity string
	// Rules and Jobs are the distinct rule and job ids, sorted; Waves the
	// distinct waves (0, no wave, left out), ascending.
	Rules, Jobs []string
	Waves       []int
	// Devices are the distinct devices the alerts are about, in alert
	// order, each as its id (typeId/deviceId when two types share an id).
	Devices     []string
	ExternalURL string
	Time        time.Time
}

// severityRank orders the seed's severities; an unknown one ranks lowest.
var severityRank = map[string]int{"info": 1, "warning": 2, "critical": 3}

// NewData is n's template view.
func NewData(n *notify.Notification) *Data {
	d := &Data{
		Receiver: n.Receiver, Status: n.Status, GroupKey: n.GroupKey,
		GroupLabels: n.GroupLabels, CommonLabels: n.CommonLabels,
		Alerts: n.Alerts, ExternalURL: n.ExternalURL, Time: n.Time,
	}
	if d.GroupLabels == nil {
		d.GroupLabels = map[string]string{}
	}
	if d.CommonLabels == nil {
		d.CommonLabels = map[string]string{}
	}
	rules, jobs, waves := map[string]bool{}, map[string]bool{}, map[int]bool{}
	ids := map[string]string{} // deviceId -> typeId seen first
	clash := false
	for _, a := range n.Alerts {
		if a.State == events.AlertResolved {
			d.Resolved = append(d.Resolved, a)
		} else {
			d.Firing = append(d.Firing, a)
		}
		rules[a.RuleID] = a.RuleID != ""
		jobs[a.JobID] = a.JobID != ""
		waves[a.Wave] = a.Wave != 0
		if a.DeviceID != "" {
			if t, ok := ids[a.DeviceID]; ok && t != a.TypeID {
				clash = true
			} else if !ok {
				ids[a.DeviceID] = a.TypeID
			}
		}
	}
	d.Severity = highest(d.Firing)
	if d.Severity == "" {
		d.Severity = highest(d.Alerts)
	}
	d.Rules, d.Jobs = keys(rules), keys(jobs)
	for w, ok := range waves {
		if ok {
			d.Waves = append(d.Waves, w)
		}
	}
	sort.Ints(d.Waves)
	seen := map[string]bool{}
	for _, a := range n.Alerts {
		if a.DeviceID == "" {
			continue
		}
		id := a.DeviceID
		if clash {
			id = a.TypeID + "/" + a.DeviceID
		}
		if !seen[id] {
			seen[id] = true
			d.Devices = append(d.Devices, id)
		}
	}
	return d
}

func highest(alerts []events.AlertData) string {
	best := ""
	for _, a := range alerts {
		if best == "" || severityRank[a.Severity] > severityRank[best] {
			best = a.Severity
		}
	}
	return best
}

func keys(m map[string]bool) []string {
	var out []string
	for k, ok := range m {
		if ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// IsResolved reports whether the group has resolved.
func (d *Data) IsResolved() bool { return d.Status == notify.StatusResolved }

// DeviceList is the first n devices, comma separated, with how many more
// there are: "d1, d2, d3 and 197 more".
func (d *Data) DeviceList(n int) string { return List(d.Devices, n) }

// WaveList is the waves, comma separated ("" when none).
func (d *Data) WaveList() string {
	s := make([]string, len(d.Waves))
	for i, w := range d.Waves {
		s[i] = strconv.Itoa(w)
	}
	return strings.Join(s, ", ")
}

// List is the first n items of s, comma separated, and how many more.
func List(s []string, n int) string {
	if n < 0 || len(s) <= n {
		return strings.Join(s, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(s[:n], ", "), len(s)-n)
}

// Funcs are the functions every template may use, besides Go's builtins:
// upper, lower, join SEP LIST, list N LIST (List), first N ALERTS, more N
// ALERTS (how many past the first N), plural N WORD ("1 device", "2
// devices"), time TIME (RFC 3339, UTC).
var Funcs = map[string]any{
	"upper": strings.ToUpper,
	"lower": strings.ToLower,
	"join":  func(sep string, s []string) string { return strings.Join(s, sep) },
	"list":  func(n int, s []string) string { return List(s, n) },
	"first": func(n int, s []events.AlertData) []events.AlertData {
		if len(s) > n {
			return s[:n]
		}
		return s
	},
	"plural": func(n int, word string) string {
		if n == 1 {
			return "1 " + word
		}
		return strconv.Itoa(n) + " " + word + "s"
	},
	"more": func(n int, s []events.AlertData) int { return max(len(s)-n, 0) },
	"time": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}

// Text is a parsed text template.
type Text struct{ t *texttemplate.Template }

// ParseText parses text, or def when text is empty (no override), as the
// template name. The error names it and where it is wrong.
func ParseText(name, text, def string) (*Text, error) {
	if text == "" {
		text = def
	}
	t, err := texttemplate.New(name).Funcs(Funcs).Option("missingkey=zero").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	return &Text{t: t}, nil
}

// Execute renders t with data.
func (t *Text) Execute(data any) (string, error) {
	var b strings.Builder
	if err := t.t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("render template %s: %w", t.t.Name(), err)
	}
	return b.String(), nil
}

// HTML is a parsed HTML template.
type HTML struct{ t *htmltemplate.Template }

// ParseHTML parses text, or def when text is empty, as an HTML template.
func ParseHTML(name, text, def string) (*HTML, error) {
	if text == "" {
		text = def
	}
	t, err := htmltemplate.New(name).Funcs(Funcs).Option("missingkey=zero").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	return &HTML{t: t}, nil
}

// Execute renders t with data.
func (t *HTML) Execute(data any) (string, error) {
	var b strings.Builder
	if err := t.t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("render template %s: %w", t.t.Name(), err)
	}
	return b.String(), nil
}
