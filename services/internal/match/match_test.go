package match

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		labels map[string]string
		want   bool
		err    string
	}{
		{name: "equal quoted", in: `severity="critical"`, labels: map[string]string{"severity": "critical"}, want: true},
		{name: "equal bare", in: `severity=critical`, labels: map[string]string{"severity": "critical"}, want: true},
		{name: "not equal", in: `job!="j1"`, labels: map[string]string{"job": "j1"}, want: false},
		{name: "not equal absent", in: `job!="j1"`, labels: map[string]string{}, want: true},
		{name: "regex anchored", in: `rule=~"device"`, labels: map[string]string{"rule": "device-failed"}, want: false},
		{name: "regex", in: `rule=~"device-.*"`, labels: map[string]string{"rule": "device-failed"}, want: true},
		{name: "not regex", in: `rule!~"device-.*"`, labels: map[string]string{"rule": "stale-shadow"}, want: true},
		{name: "non-empty", in: `job=~".+"`, labels: map[string]string{}, want: false},
		{name: "spaces", in: ` device_type = "gw" `, labels: map[string]string{"device_type": "gw"}, want: true},
		{name: "no operator", in: `severity`, err: "want name=value"},
		{name: "bad name", in: `1x="a"`, err: "label name"},
		{name: "bad regex", in: `rule=~"(x"`, err: "missing closing )"},
		{name: "bad quote", in: `rule="x`, err: "not a quoted string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse(%q) error %v, want one with %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Matches(tt.labels); got != tt.want {
				t.Fatalf("%s matches %v = %v, want %v", m, tt.labels, got, tt.want)
			}
		})
	}
}

// FuzzParse: any input parses or is refused with an error, and a
// parsed matcher prints as a matcher that parses to the same one.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`severity="critical"`, `rule=~"device-.*"`, `job!=""`, `device!~"a|b"`, `x=y`, `=`, `a=~"("`, `a="\u00e9"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(m.String())
		if err != nil {
			t.Fatalf("%q parsed, but its String %q does not: %v", s, m.String(), err)
		}
		if again.Name != m.Name || again.Type != m.Type || again.Value != m.Value {
			t.Fatalf("%q -> %s -> %s", s, m, again)
		}
	})
}
