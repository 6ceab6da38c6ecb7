package rules

import (
	"io/fs"
	"strings"
	"testing"
)

// FuzzParseRule feeds rule files (seeded with the built-in ones) to the
// parser: it must never panic, and what it accepts must be usable.
func FuzzParseRule(f *testing.F) {
	names, err := fs.Glob(Defaults(), "*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, n := range names {
		b, err := fs.ReadFile(Defaults(), n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("id: x\nseverity: info\ncondition: |\n  device.status ==\n"))
	f.Add([]byte("id: x\nlevels:\n  - {severity: info, condition: '[1,2].all(a, a > 0)'}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if strings.HasSuffix(string(data), TestFileSuffix) {
			return
		}
		r, ps := ParseRule("f.yaml", data)
		if r == nil {
			if len(ps) == 0 {
				t.Fatal("no rule and no problem")
			}
			for _, p := range ps {
				if p.File != "f.yaml" || p.Reason == "" {
					t.Fatalf("problem without file or reason: %+v", p)
				}
			}
			return
		}
		if len(ps) > 0 || len(r.Levels) == 0 || r.Message == nil || r.Kind == "" || r.Scope == "" {
			t.Fatalf("accepted an unusable rule: %+v, %v", r, ps)
		}
		for _, l := range r.Levels {
			if l.Condition == nil || !validSeverity(l.Severity) {
				t.Fatalf("level %+v", l)
			}
		}
	})
}

// FuzzParseTestFile: the tests file parser never panics.
func FuzzParseTestFile(f *testing.F) {
	names, err := fs.Glob(Defaults(), "*"+TestFileSuffix)
	if err != nil {
		f.Fatal(err)
	}
	for _, n := range names {
		b, _ := fs.ReadFile(Defaults(), n)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tf, err := ParseTestFile("f.test.yaml", data)
		if err == nil && (tf == nil || len(tf.Cases) == 0 || tf.Start.IsZero()) {
			t.Fatalf("accepted %+v", tf)
		}
	})
}
