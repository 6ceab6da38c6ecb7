// Package match is the label matchers of notification routes, silences
// and inhibition rules, in Prometheus Alertmanager's syntax:
// name="value", name!="value", name=~"regex", name!~"regex". The notify
// service routes with them; the CLI and the API check a silence's
// matchers with the same parser before they record it.
package match

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Type is a matcher's operator.
type Type string

// Matcher operators, Alertmanager's.
const (
	Equal     Type = "="
	NotEqual  Type = "!="
	Regexp    Type = "=~"
	NotRegexp Type = "!~"
)

// Matcher is one condition on a label, as Alertmanager writes it:
// name="value", name!="value", name=~"regex", name!~"regex". A regular
// expression is anchored (it matches the whole value); an absent label is
// the empty value.
type Matcher struct {
	Name  string
	Type  Type
	Value string
	re    *regexp.Regexp
}

// Parse parses one matcher. The value may be double-quoted (Go
// syntax) or bare.
func Parse(s string) (*Matcher, error) {
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
		m.Type = Regexp
	case strings.HasPrefix(rest, "!~"):
		m.Type = NotRegexp
	case strings.HasPrefix(rest, "!="):
		m.Type = NotEqual
	case strings.HasPrefix(rest, "="):
		m.Type = Equal
	default:
		return nil, fmt.Errorf("matcher %q: no operator after %q (=, !=, =~, !~)", s, name)
	}
	if !LabelName(name) {
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
	if m.Type == Regexp || m.Type == NotRegexp {
		re, err := regexp.Compile("^(?:" + val + ")$")
		if err != nil {
			return nil, fmt.Errorf("matcher %q: %v", s, err)
		}
		m.re = re
	}
	return &m, nil
}

// LabelName reports whether s is a label name: A-Z a-z 0-9 _, not
// starting with a digit.
func LabelName(s string) bool {
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
	case Equal:
		return v == m.Value
	case NotEqual:
		return v != m.Value
	case Regexp:
		return m.re.MatchString(v)
	case NotRegexp:
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

// ParseAll parses each of ss; the error lists every bad one.
func ParseAll(ss []string) (Matchers, error) {
	out := make(Matchers, 0, len(ss))
	var bad []string
	for _, s := range ss {
		m, err := Parse(s)
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
