package testutil

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otawatch/otawatch/rules"
)

// WriteRules writes the built-in rule files (not their tests) into dir,
// with old replaced by new in the file named file (which must hold old;
// "" changes nothing): a rules directory a test can run, reload or
// change.
func WriteRules(tb testing.TB, dir, file, old, new string) {
	tb.Helper()
	names, err := rules.RuleFiles(rules.Defaults(), ".")
	if err != nil {
		tb.Fatal(err)
	}
	changed := file == ""
	for _, n := range names {
		b, err := fs.ReadFile(rules.Defaults(), n)
		if err != nil {
			tb.Fatal(err)
		}
		text := string(b)
		if n == file {
			if !strings.Contains(text, old) {
				tb.Fatalf("rule file %s lacks %q", n, old)
			}
			text, changed = strings.ReplaceAll(text, old, new), true
		}
		if err := os.WriteFile(filepath.Join(dir, n), []byte(text), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if !changed {
		tb.Fatalf("no built-in rule file %s", file)
	}
}
