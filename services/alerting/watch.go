package alerting

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"time"

	"github.com/otawatch/otawatch/rules"
)

// loaded is the outcome of (re)loading the rules.
type loaded struct {
	set    *rules.Set
	err    error
	forced bool // a Reload() call, not a change on disk
}

// loadRules loads the configured rules: the directory, or the built-in
// defaults.
func (s *Service) loadRules() (*rules.Set, error) {
	if s.cfg.RulesDir == "" {
		return rules.LoadDefaults()
	}
	return rules.LoadDir(s.cfg.RulesDir)
}

// fingerprint hashes the names and contents of the rule files, so any
// edit, rename or removal changes it (mtimes can be too coarse to see two
// edits in one second). Reading a few small files a second costs nothing.
func fingerprint(dir string) [32]byte {
	h := sha256.New()
	names, err := rules.RuleFiles(os.DirFS(dir), ".")
	if err != nil {
		h.Write([]byte("error: " + err.Error()))
	}
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			h.Write([]byte("error: " + err.Error()))
		}
		h.Write(b)
		h.Write([]byte{0})
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// watch reloads the rules when the directory changes (polled every
// ReloadInterval; the module set has no fsnotify) or Reload is called, and
// hands the outcome to the loop. Loading happens here, off the loop.
func (s *Service) watch(ctx context.Context, out chan<- loaded) {
	// last is the loaded fingerprint; seen the one of the previous poll.
	// A change is loaded once it is the same on two polls in a row, so a
	// file caught half written (truncated, not yet filled) is not refused.
	var last, seen [32]byte
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
		set, err := s.loadRules()
		select {
		case out <- loaded{set: set, err: err, forced: forced}:
		case <-ctx.Done():
			return
		}
	}
}
