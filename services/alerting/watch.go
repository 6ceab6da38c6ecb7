package alerting

import (
	"context"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
)

// loaded is the outcome of (re)loading the rules.
type loaded struct {
	set *rules.Set
	// files are the rule files' text the set was compiled from: what
	// the rules_loaded record holds.
	files  []events.RuleFile
	err    error
	forced bool // a Reload() call, not a change on disk
}

// loadRules loads the configured rules, the directory or the built-in
// defaults, from their files' text read once, so the record of the set
// (recordRules) is exactly what runs.
func (s *Service) loadRules() loaded {
	files, err := ruleeval.ReadRuleFiles(s.cfg.RulesDir)
	if err != nil {
		return loaded{err: err}
	}
	set, err := ruleeval.LoadRuleFiles(s.cfg.RulesDir, files)
	return loaded{set: set, files: files, err: err}
}

// fingerprint is the hash of the rule files' names and contents
// (events.RulesHash), so any edit, rename or removal changes it (mtimes
// can be too coarse to see two edits in one second). Reading a few small
// files a second costs nothing.
func fingerprint(dir string) string {
	files, err := ruleeval.ReadRuleFiles(dir)
	if err != nil {
		return "error: " + err.Error()
	}
	return events.RulesHash(files)
}

// watch reloads the rules when the directory changes (polled every
// ReloadInterval; the module set has no fsnotify) or Reload is called, and
// hands the outcome to the loop. Loading happens here, off the loop.
func (s *Service) watch(ctx context.Context, out chan<- loaded) {
	// last is the loaded fingerprint; seen the one of the previous poll.
	// A change is loaded once it is the same on two polls in a row, so a
	// file caught half written (truncated, not yet filled) is not refused.
	var last, seen string
	if s.cfg.RulesDir != "" {
		last = fingerprint(s.cfg.RulesDir)
		seen = last
	}
	t := time.NewTicker(s.cfg.ReloadInterval)
	defer t.Stop()
	for {
		forced := false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.cfg.RulesDir == "" {
				continue
			}
			fp := fingerprint(s.cfg.RulesDir)
			stable := fp == seen
			seen = fp
			if fp == last || !stable {
				continue
			}
			last = fp
		case <-s.reloadReq:
			forced = true
			if s.cfg.RulesDir != "" {
				last = fingerprint(s.cfg.RulesDir)
				seen = last
			}
		}
		l := s.loadRules()
		l.forced = forced
		select {
		case out <- l:
		case <-ctx.Done():
			return
		}
	}
}
