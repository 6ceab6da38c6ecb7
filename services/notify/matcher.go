package notify

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/otawatch/otawatch/events"
)

// Label names every alert has (Labels), besides its rule's own labels.
const (
	LabelSeverity   = "severity"
	LabelRule       = "rule"
	LabelJob        = "job"
	LabelWave       = "wave"
	LabelDeviceType = "device_type"
	LabelDevice     = "device"
)

// Labels are what routes, silences and inhibitions match an alert on: its
// rule's labels, then severity, rule, job, wave, device_type and device
// (these win over a rule label of the same name; an empty one is absent).
func Labels(a events.AlertData) map[string]string {
	l := make(map[string]string, len(a.Labels)+6)
	for k, v := range a.Labels {
		l[k] = v
	}
	set := func(k, v string) {
		if v != "" {
			l[k] = v
		} else {
			delete(l, k)
		}
	}
	set(LabelSeverity, a.Severity)
	set(LabelRule, a.RuleID)
	set(LabelJob, a.JobID)
	if a.Wave > 0 {
		set(LabelWave, strconv.Itoa(a.Wave))
	} else {
		delete(l, LabelWave)
	}
	set(LabelDeviceType, a.TypeID)
	set(LabelDevice, a.DeviceID)
	return l
}

// MatchType is a matcher's operator.
type MatchType string

// Matcher operators, Alertmanager's.
const (
	MatchEqual     MatchType = "="
	MatchNotEqual  MatchType = "!="
	MatchRegexp    MatchType = "=~"
	MatchNotRegexp MatchType = "!~"
)

// Matcher is one condition on a label, as Alertmanager writes it:
// name="value", name!="value", name=~"regex", name!~"regex". A regular
// expression is anchored (it matches the whole value); an absent label is
// the empty value.
type Matcher struct {
	Name  string
	Type  MatchType
	Value string
	re    *regexp.Regexp
}

// ParseMatcher parses one matcher. The value may be double-quoted (Go
// syntax) or bare.
func ParseMatcher(s string) (*Matcher, error) {
	in := strings.TrimSpace(s)
	i := strings.IndexAny(in, "=!")
	if i <= 0 {
		return nil, fmt.Errorf("matcher %q: want name=value, name!=value, name=~regex or name!~regex", s)
	}
	name := strings.TrimSpace(in[:i])
	rest := in[i:]
	var m Matcher
	switch {
	case strings.HasPrefix(rest, "=~"):
		m.Type = MatchRegexp
	case strings.HasPrefix(rest, "!~"):
		m.Type = MatchNotRegexp
	case strings.HasPrefix(rest, "!="):
		m.Type = MatchNotEqual
	case strings.HasPrefix(rest, "="):
		m.Type = MatchEqual
	default:
		return nil, fmt.Errorf("matcher %q: no operator after %q (=, !=, =~, !~)", s, name)
	}
	if !labelName(name) {
		return nil, fmt.Errorf("matcher %q: label name %q may only have A-Z a-z 0-9 _ and not start with a digit", s, name)
	}
	val := strings.TrimSpace(rest[len(m.Type):])
	if strings.HasPrefix(val, `"`) {
		uq, err := strconv.Unquote(val)
		if err != nil {
			return nil, fmt.Errorf("matcher %q: value %s is not a quoted string: %v", s, val, err)
		}
		val = uq
	}
	m.Name, m.Value = name, val
	if m.Type == MatchRegexp || m.Type == MatchNotRegexp {
		re, err := regexp.Compile("^(?:" + val + ")$")
		if err != nil {
			return nil, fmt.Errorf("matcher %q: %v", s, err)
		}
		m.re = re
	}
	return &m, nil
}

func labelName(s string) bool {
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

// Matches reports whether labels satisfy m.
func (m *Matcher) Matches(labels map[string]string) bool {
	v := labels[m.Name]
	switch m.Type {
	case MatchEqual:
		return v == m.Value
	case MatchNotEqual:
		return v != m.Value
	case MatchRegexp:
		return m.re.MatchString(v)
	case MatchNotRegexp:
		return !m.re.MatchString(v)
	}
	return false
}

// String is the matcher in Alertmanager's syntax, the value quoted.
func (m *Matcher) String() string {
	return m.Name + string(m.Type) + strconv.Quote(m.Value)
}

// Matchers are conditions that must all hold.
type Matchers []*Matcher

// ParseMatchers parses each of ss; the error lists every bad one.
func ParseMatchers(ss []string) (Matchers, error) {
	out := make(Matchers, 0, len(ss))
	var bad []string
	for _, s := range ss {
		m, err := ParseMatcher(s)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		out = append(out, m)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return out, nil
}

// Matches reports whether every matcher holds for labels.
func (ms Matchers) Matches(labels map[string]string) bool {
	for _, m := range ms {
		if !m.Matches(labels) {
			return false
		}
	}
	return true
}

// String lists the matchers, sorted, in braces: {rule="x",severity="critical"}.
func (ms Matchers) String() string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}
