package ruleeval

import (
	"testing"

	"github.com/otawatch/otawatch/rules"
)

// TestDefaultRules runs the tests files of the built-in rules, as
// `otawatch rules test` does, so CI runs them.
func TestDefaultRules(t *testing.T) {
	rep, err := RunTestsFS(rules.Defaults(), ".", rules.DefaultsName)
	if err != nil {
		t.Fatalf("load default rules: %v", err)
	}
	if len(rep.Untested) > 0 {
		t.Errorf("rule files without tests: %v", rep.Untested)
	}
	if len(rep.Results) < 5 {
		t.Fatalf("only %d cases ran", len(rep.Results))
	}
	for _, r := range rep.Results {
		t.Run(r.File+"/"+r.Case, func(t *testing.T) {
			if r.Err != nil {
				t.Error(r.String())
			}
		})
	}
}
