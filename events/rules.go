package events

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"
)

// The rule set the alerting service runs is recorded on ALERTS whenever it
// takes over (at start, and on every reload that changes it), so "which
// rules were in force at T" has an answer in the log and `otawatch replay
// alerting` can run the history through them.
//
// Its subject, alert.rules.loaded, is under the ALERTS stream's alert.>
// but has one token fewer than an alert's
// (alert.{raised,resolved}.{severity}.{ruleId}): ParseAlertSubject does not
// take it, and a consumer that filters alert.*.*.* never sees it. A reader
// of the whole stream tells it apart by its type.
const (
	TypeRulesLoaded    = "io.otawatch.alerting.rules_loaded.v1"
	SubjectRulesLoaded = SubjectAlert + ".rules.loaded"
)

// RulesBuiltIn is RulesLoadedData.Dir when the service runs the built-in
// default rules (no rules_dir).
const RulesBuiltIn = "(built in)"

// Why a rule set was recorded (RulesLoadedData.Reason).
const (
	RulesLoadedStart  = "start"
	RulesLoadedReload = "reload"
)

// RuleFile is one rule file of a recorded rule set: its name in the rules
// directory and its text exactly as it was loaded.
type RuleFile struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

// RulesLoadedData is the data of TypeRulesLoaded: a rule set the alerting
// service started to run, with its text, and where in the log it took
// over.
type RulesLoadedData struct {
	// Dir is the rules directory as configured (messages name rule files
	// under it), or RulesBuiltIn.
	Dir string `json:"dir"`
	// SHA256 is RulesHash(Files): equal sets have equal hashes.
	SHA256 string `json:"sha256"`
	// Rules are the ids of the set's rules, sorted.
	Rules []string `json:"rules"`
	// Files are the rule files (not their tests files), sorted by name.
	Files []RuleFile `json:"files"`
	// ShadowSeq and RolloutSeq are the last SHADOW and ROLLOUT sequences
	// the service had applied when the set took over: every event after
	// them was evaluated with this set (until the next one).
	ShadowSeq  uint64 `json:"shadowSeq"`
	RolloutSeq uint64 `json:"rolloutSeq"`
	// EngineTime is the latest event or tick time the service had seen
	// then: ticks after it ran this set. Zero before any.
	EngineTime time.Time `json:"engineTime,omitzero"`
	// Reason is RulesLoadedStart or RulesLoadedReload.
	Reason string `json:"reason"`
}

// RulesHash is the SHA-256 (lower-case hex) of rule files: of each file's
// name and text, each followed by a zero byte, in name order. It does not
// depend on the order of files.
func RulesHash(files []RuleFile) string {
	sorted := append([]RuleFile(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	h := sha256.New()
	for _, f := range sorted {
		h.Write([]byte(f.Name))
		h.Write([]byte{0})
		h.Write([]byte(f.Text))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// RulesLoadedEventID is the deterministic id (and Nats-Msg-Id) of the
// record of rule set hash taking over at positions shadowSeq and
// rolloutSeq at time at: a record written twice (a publish retried) is
// stored once, and a set that comes back later is a new record.
func RulesLoadedEventID(hash string, shadowSeq, rolloutSeq uint64, at time.Time) string {
	return IdentityID("rl", hash, strconv.FormatUint(shadowSeq, 10), strconv.FormatUint(rolloutSeq, 10),
		at.UTC().Format(time.RFC3339Nano))
}

// ErrNotRulesLoaded is returned by DecodeRulesLoaded for an event of
// another type.
var ErrNotRulesLoaded = errors.New("not a rules_loaded event")

// DecodeRulesLoaded reads the data of a TypeRulesLoaded event and checks
// it: the files have names, no name twice, and SHA256 is their hash (so a
// record whose text was changed, or cut, is refused rather than replayed
// as if it were the rules that ran).
func DecodeRulesLoaded(ev Event) (RulesLoadedData, error) {
	if ev.Type != TypeRulesLoaded {
		return RulesLoadedData{}, fmt.Errorf("event %s has type %q: %w", ev.ID, ev.Type, ErrNotRulesLoaded)
	}
	var d RulesLoadedData
	if err := ev.DecodeData(&d); err != nil {
		return RulesLoadedData{}, err
	}
	seen := make(map[string]bool, len(d.Files))
	for i, f := range d.Files {
		if f.Name == "" {
			return RulesLoadedData{}, fmt.Errorf("rules_loaded event %s: file %d has no name", ev.ID, i+1)
		}
		if seen[f.Name] {
			return RulesLoadedData{}, fmt.Errorf("rules_loaded event %s: file %q appears twice", ev.ID, f.Name)
		}
		seen[f.Name] = true
	}
	if got := RulesHash(d.Files); got != d.SHA256 {
		return RulesLoadedData{}, fmt.Errorf("rules_loaded event %s: its files hash to %s, the record says %s", ev.ID, got, d.SHA256)
	}
	return d, nil
}
