package ruleeval

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"testing/fstest"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
)

// A rule set is loaded from its files' text, read once: the alerting
// service records that text (events.RulesLoadedData) and a replay loads the
// record the same way, so the rules that ran and the rules replayed are the
// same bytes under the same names.

// ReadRuleFiles reads the rule files (not their tests files) of dir, or of
// the built-in rules when dir is "", as a rule set's record holds them.
func ReadRuleFiles(dir string) ([]events.RuleFile, error) {
	fsys, name := rules.Defaults(), rules.DefaultsName
	if dir != "" {
		fsys, name = os.DirFS(dir), dir
	}
	names, err := rules.RuleFiles(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read rules directory %s: %w", name, err)
	}
	out := make([]events.RuleFile, 0, len(names))
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("read rule file %s: %w", path.Join(name, n), err)
		}
		out = append(out, events.RuleFile{Name: n, Text: string(b)})
	}
	return out, nil
}

// LoadRuleFiles compiles rule files read by ReadRuleFiles (or taken from a
// record) as the rules of dir ("" or events.RulesBuiltIn: the built-in
// rules): messages and rules name the files as rules.LoadDir(dir) and
// rules.LoadDefaults do. A set that does not load is a *rules.LoadError.
func LoadRuleFiles(dir string, files []events.RuleFile) (*rules.Set, error) {
	prefix := dir
	if dir == "" || dir == events.RulesBuiltIn {
		prefix = rules.DefaultsName
	}
	fsys := fstest.MapFS{}
	for _, f := range files {
		fsys[f.Name] = &fstest.MapFile{Data: []byte(f.Text), Mode: 0o444}
	}
	return rules.LoadFS(fsys, ".", prefix)
}

// RulesRecord is the record of a rule set loaded from dir ("" for the
// built-in rules) out of files: everything of events.RulesLoadedData but
// where in the log it took over.
func RulesRecord(dir string, files []events.RuleFile, set *rules.Set) events.RulesLoadedData {
	if dir == "" {
		dir = events.RulesBuiltIn
	}
	return events.RulesLoadedData{Dir: dir, SHA256: events.RulesHash(files), Rules: set.IDs(), Files: files}
}

// LoadRecordedRules compiles the rule set of a record.
func LoadRecordedRules(d events.RulesLoadedData) (*rules.Set, error) {
	set, err := LoadRuleFiles(d.Dir, d.Files)
	if err != nil {
		return nil, fmt.Errorf("recorded rules %s (sha256 %.12s): %w", d.Dir, d.SHA256, err)
	}
	return set, nil
}
