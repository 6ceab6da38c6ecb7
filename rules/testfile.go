package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestFile is a rule file's tests: named cases, each a sequence of steps
// (events and ticks, at offsets from Start) run through a fresh engine
// with only that rule file's rule, and what must have happened.
//
//	start: 2026-01-01T00:00:00Z      # optional; this is the default
//	offline_after: 10m                # optional; the default
//	cases:
//	  - name: a failed report raises one critical alert
//	    steps:
//	      - at: 1m
//	        reported: {device: d1, version: 4.2.1, status: failed, errorCode: E_FLASH}
//	      - at: 2m
//	        reported: {device: ok, count: 19, status: completed, duration: 60}
//	      - at: 12m
//	        tick: true
//	    expect:
//	      fires: true
//	      raised: [{device: d1, severity: critical, at: 1m}]
//	      resolved: []
//	      active: [{device: d1}]
//
// A step has exactly one of reported, desired, presence, rollout or tick.
// count: N makes devices {device}-1 .. {device}-N. A tick runs as in the
// service: devices silent past offline_after go potentially offline, then
// tick rules run. Every expectation is optional; lists must match exactly,
// in order (active sorted by key), each field of a match only if given.
// An evaluation error fails the case.
type TestFile struct {
	Start        time.Time  `yaml:"start"`
	OfflineAfter Duration   `yaml:"offline_after"`
	Cases        []TestCase `yaml:"cases"`
}

// DefaultTestStart is a tests file's start when it names none.
var DefaultTestStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// TestCase is one named case.
type TestCase struct {
	Name   string     `yaml:"name"`
	Steps  []TestStep `yaml:"steps"`
	Expect TestExpect `yaml:"expect"`
	// Line is the case's line in the file.
	Line int `yaml:"-"`
}

// TestStep is one input at an offset from the file's start.
type TestStep struct {
	At       Duration      `yaml:"at"`
	Reported *TestReport   `yaml:"reported"`
	Desired  *TestDesired  `yaml:"desired"`
	Presence *TestPresence `yaml:"presence"`
	Rollout  *TestRollout  `yaml:"rollout"`
	Tick     bool          `yaml:"tick"`
}

// TestReport is a shadow report (events.ShadowReportedData).
type TestReport struct {
	Type            string  `yaml:"type"` // default "t"
	Device          string  `yaml:"device"`
	Count           int     `yaml:"count"`
	Version         string  `yaml:"version"`
	Status          string  `yaml:"status"`
	PreviousVersion string  `yaml:"previousVersion"`
	Duration        float64 `yaml:"duration"`
	ErrorCode       string  `yaml:"errorCode"`
}

// TestDesired is a desired state a rollout sent (events.ShadowDesiredData).
type TestDesired struct {
	Type    string `yaml:"type"`
	Device  string `yaml:"device"`
	Count   int    `yaml:"count"`
	Job     string `yaml:"job"`
	Wave    int    `yaml:"wave"`
	Version string `yaml:"version"`
}

// TestPresence is a presence transition (events.DevicePresenceData); its
// lastSeen is the device's.
type TestPresence struct {
	Type   string `yaml:"type"`
	Device string `yaml:"device"`
	State  string `yaml:"state"`
}

// TestRollout is a rollout event: event is the name in the type
// ("job_created", "job_started", "wave_started", "job_paused", ...).
type TestRollout struct {
	Job    string `yaml:"job"`
	Event  string `yaml:"event"`
	Wave   int    `yaml:"wave"`
	Target string `yaml:"target"`
	Reason string `yaml:"reason"`
}

// TestExpect is what must have happened by the end of a case.
type TestExpect struct {
	// Fires: true means at least one alert was raised, false none.
	Fires    *bool        `yaml:"fires"`
	Raised   *[]TestMatch `yaml:"raised"`
	Resolved *[]TestMatch `yaml:"resolved"`
	Active   *[]TestMatch `yaml:"active"`
}

// TestMatch matches an alert; empty fields match anything.
type TestMatch struct {
	Rule     string    `yaml:"rule"`
	Key      string    `yaml:"key"`
	Device   string    `yaml:"device"`
	Severity string    `yaml:"severity"`
	Reason   string    `yaml:"reason"`
	At       *Duration `yaml:"at"`
	// Message matches if the alert's message contains it.
	Message string `yaml:"message"`
}

// Duration is a time.Duration written as "90s" or "10m" in YAML.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 90s or 10m", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// ParseTestFile decodes a tests file strictly and checks every step.
func ParseTestFile(file string, data []byte) (*TestFile, error) {
	var tf TestFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&tf); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: file is empty", file)
		}
		return nil, fmt.Errorf("%s: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	if cases := valueNode(&root, "cases"); cases != nil && cases.Kind == yaml.SequenceNode {
		for i, c := range cases.Content {
			if i < len(tf.Cases) {
				tf.Cases[i].Line = c.Line
			}
		}
	}
	if tf.Start.IsZero() {
		tf.Start = DefaultTestStart
	}
	var problems []string
	if len(tf.Cases) == 0 {
		problems = append(problems, fmt.Sprintf("%s: no cases", file))
	}
	names := map[string]bool{}
	for _, c := range tf.Cases {
		where := fmt.Sprintf("%s:%d: case %q", file, c.Line, c.Name)
		if c.Name == "" {
			problems = append(problems, where+": has no name")
		}
		if names[c.Name] {
			problems = append(problems, where+": name is used twice")
		}
		names[c.Name] = true
		for j, s := range c.Steps {
			n := 0
			for _, set := range []bool{s.Reported != nil, s.Desired != nil, s.Presence != nil, s.Rollout != nil, s.Tick} {
				if set {
					n++
				}
			}
			if n != 1 {
				problems = append(problems, fmt.Sprintf("%s: step %d has %d of reported, desired, presence, rollout, tick; want one", where, j+1, n))
			}
			if j > 0 && s.At < c.Steps[j-1].At {
				problems = append(problems, fmt.Sprintf("%s: step %d is at %s, before step %d", where, j+1, time.Duration(s.At), j))
			}
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return &tf, nil
}

func valueNode(root *yaml.Node, key string) *yaml.Node {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// TestFileFor is the tests file name of a rule file.
func TestFileFor(ruleFile string) string {
	base := strings.TrimSuffix(strings.TrimSuffix(ruleFile, ".yaml"), ".yml")
	return base + TestFileSuffix
}
