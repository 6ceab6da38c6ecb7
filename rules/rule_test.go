package rules

import (
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestParseRule(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		wantErr string // substring of the whole message; empty: loads
		check   func(t *testing.T, r *Rule)
	}{
		{
			name: "single level with defaults",
			file: "id: r1\nseverity: critical\ncondition: device.status == \"failed\"\n",
			check: func(t *testing.T, r *Rule) {
				if r.Kind != RuleKindEvent || r.Scope != ScopeDevice || len(r.Levels) != 1 || r.Levels[0].Severity != SeverityCritical {
					t.Errorf("got kind %q scope %q levels %+v", r.Kind, r.Scope, r.Levels)
				}
				if r.Key("t", "d1") != "r1/t/d1" || r.Line != 1 {
					t.Errorf("key %q line %d", r.Key("t", "d1"), r.Line)
				}
			},
		},
		{
			name: "fleet rule with levels is a tick rule",
			file: "id: r1\nscope: fleet\nfor: 2m\nlevels:\n  - severity: critical\n    condition: fleet.successRate < 0.9\n  - severity: warning\n    condition: fleet.successRate < 0.95\nvalue: fleet.successRate\n",
			check: func(t *testing.T, r *Rule) {
				if r.Kind != RuleKindTick || r.Key("t", "d") != "r1/fleet" || r.For != 2*time.Minute || len(r.Levels) != 2 || r.Value == nil {
					t.Errorf("got %+v", r)
				}
			},
		},
		{name: "syntax error at its line and column", file: "id: r1\nseverity: info\ncondition: device.status ==\n", wantErr: "f.yaml:3:28: rule r1: Syntax error"},
		{name: "not bool", file: "id: r1\nseverity: info\ncondition: device.status\n", wantErr: "f.yaml:3:12: rule r1: expression has type dyn, want bool"},
		{name: "unknown field in a block scalar", file: "id: r1\nseverity: info\ncondition: |\n  device.online &&\n    device.verison == \"2\"\n", wantErr: "f.yaml:5:11: rule r1: device has no field \"verison\""},
		{name: "unknown field in a quoted scalar", file: "id: r1\nseverity: info\ncondition: \"fleet.sucess < 1.0\"\n", wantErr: "f.yaml:3:18: rule r1: fleet has no field \"sucess\""},
		{name: "cost", file: "id: r1\nseverity: info\ncondition: '[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].exists(d, a+b+c+d == 100))))'\n", wantErr: "rule r1: estimated cost"},
		{name: "unknown key", file: "id: r1\nseverity: info\nconditon: true\n", wantErr: "f.yaml:3:1: field conditon is not a rule key"},
		{name: "bad severity", file: "id: r1\nseverity: page\ncondition: true\n", wantErr: "f.yaml:2:1: rule r1: severity \"page\""},
		{name: "bad id", file: "id: r 1\nseverity: info\ncondition: true\n", wantErr: "rule id \"r 1\" has a space"},
		{name: "no condition", file: "id: r1\nseverity: info\n", wantErr: "has no condition"},
		{name: "both condition and levels", file: "id: r1\nseverity: info\ncondition: true\nlevels:\n  - {severity: info, condition: true}\n", wantErr: "either severity and condition, or levels"},
		{name: "bad for", file: "id: r1\nseverity: info\ncondition: true\nfor: soon\n", wantErr: "for \"soon\" is not a duration"},
		{name: "bad template", file: "id: r1\nseverity: info\ncondition: true\nmessage: '{{.device.x'\n", wantErr: "message template"},
		{name: "bad kind and scope", file: "id: r1\nseverity: info\ncondition: true\nkind: cron\nscope: job\n", wantErr: "kind \"cron\" is not event or tick"},
		{name: "empty file", file: "", wantErr: "file is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ps := ParseRule("f.yaml", []byte(tt.file))
			if tt.wantErr == "" {
				if len(ps) > 0 {
					t.Fatalf("problems: %v", (&LoadError{ps}).Error())
				}
				tt.check(t, r)
				return
			}
			if len(ps) == 0 {
				t.Fatalf("loaded, want an error containing %q", tt.wantErr)
			}
			if r != nil {
				t.Errorf("got a rule with problems")
			}
			if msg := (&LoadError{ps}).Error(); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("error\n%s\ndoes not contain %q", msg, tt.wantErr)
			}
		})
	}
}

func TestLoadFS(t *testing.T) {
	fsys := fstest.MapFS{
		"a.yaml":      {Data: []byte("id: a\nseverity: info\ncondition: true\n")},
		"a.test.yaml": {Data: []byte("cases: []\n")},
		"b.yml":       {Data: []byte("id: a\nseverity: info\ncondition: true\n")},
		"c.yaml":      {Data: []byte("id: c\nseverity: info\ncondition: device.nope\n")},
		"notes.txt":   {Data: []byte("not a rule")},
	}
	_, err := LoadFS(fsys, ".", "dir")
	var le *LoadError
	if !errors.As(err, &le) || len(le.Problems) != 2 {
		t.Fatalf("err = %v, want 2 problems (duplicate id, unknown field)", err)
	}
	for _, want := range []string{"dir/b.yml:1:1: rule a: id \"a\" is also the id of the rule in dir/a.yaml", "dir/c.yaml:3:18: rule c: device has no field \"nope\""} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error\n%s\ndoes not contain %q", err, want)
		}
	}
	delete(fsys, "b.yml")
	delete(fsys, "c.yaml")
	set, err := LoadFS(fsys, ".", "dir")
	if err != nil || len(set.Rules) != 1 || set.Rule("a") == nil {
		t.Fatalf("set = %+v, err = %v", set, err)
	}
}

func TestDefaults(t *testing.T) {
	set, err := LoadDefaults()
	if err != nil {
		t.Fatalf("default rules do not load:\n%v", err)
	}
	want := map[string]string{
		"device-failed":    SeverityCritical,
		"stale-shadow":     SeverityWarning,
		"success-rate-low": SeverityCritical + "," + SeverityWarning,
		"duration-anomaly": SeverityWarning,
		"version-mismatch": SeverityInfo,
	}
	if got := strings.Join(set.IDs(), ","); got != "device-failed,duration-anomaly,stale-shadow,success-rate-low,version-mismatch" {
		t.Errorf("ids = %s", got)
	}
	for id, sev := range want {
		r := set.Rule(id)
		if r == nil {
			t.Errorf("rule %s missing", id)
			continue
		}
		var got []string
		for _, l := range r.Levels {
			got = append(got, l.Severity)
		}
		if strings.Join(got, ",") != sev {
			t.Errorf("%s severities = %v, want %s", id, got, sev)
		}
	}
	if r := set.Rule("stale-shadow"); r == nil || !r.OnTick() {
		t.Error("stale-shadow is not a tick rule")
	}
	if r := set.Rule("success-rate-low"); r == nil || r.Scope != ScopeFleet {
		t.Error("success-rate-low is not a fleet rule")
	}
}

func TestParseTestFile(t *testing.T) {
	_, err := ParseTestFile("x.test.yaml", []byte("cases:\n  - name: a\n    steps:\n      - {at: 1m, tick: true, reported: {device: d}}\n      - {at: 0s, tick: true}\n"))
	if err == nil || !strings.Contains(err.Error(), "step 1 has 2 of") || !strings.Contains(err.Error(), "step 2 is at 0s, before step 1") {
		t.Errorf("err = %v", err)
	}
	_, err = ParseTestFile("x.test.yaml", []byte("cases:\n  - name: a\n    stepz: []\n"))
	if err == nil || !strings.Contains(err.Error(), "stepz") {
		t.Errorf("unknown key: err = %v", err)
	}
	_, err = ParseTestFile("x.test.yaml", []byte("cases:\n  - name: a\n    steps: [{at: soon, tick: true}]\n"))
	if err == nil || !strings.Contains(err.Error(), "not a duration") {
		t.Errorf("bad duration: err = %v", err)
	}
}
