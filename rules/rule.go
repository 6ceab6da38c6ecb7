package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/otawatch/otawatch/events"
)

// Severities, most severe first.
const (
	SeverityCritical = "critical"
	SeverityWarning  = "warning"
	SeverityInfo     = "info"
)

// Rule kinds: when a rule is evaluated.
const (
	// RuleKindEvent rules are evaluated on every event (device scope: the
	// events of the device; fleet scope: every event).
	RuleKindEvent = "event"
	// RuleKindTick rules are evaluated on every event too, and also on
	// every tick (device scope: for each known device), with `now` the
	// tick time: for conditions on silence, which no event announces.
	RuleKindTick = "tick"
)

// Rule scopes: what one alert of the rule is about, and so its key.
const (
	// ScopeDevice alerts are per device: key "rule/typeId/deviceId".
	ScopeDevice = "device"
	// ScopeFleet alerts are one per rule: key "rule/fleet".
	ScopeFleet = "fleet"
)

// TestFileSuffix ends a rule file's tests file: device-failed.yaml is
// tested by device-failed.test.yaml.
const TestFileSuffix = ".test.yaml"

// Rule is a compiled rule.
type Rule struct {
	ID          string
	Description string
	// Levels are tried in order; the first whose condition holds is the
	// alert's severity. A rule with one severity has one level.
	Levels []Level
	Kind   string
	Scope  string
	// For is how long a level must hold before its alert is raised.
	For    time.Duration
	Labels map[string]string
	// Value, if set, is the number reported with the alert.
	Value *Expr
	// Message renders the alert's message (text/template).
	Message *template.Template
	// MessageText is the template's source.
	MessageText string
	// File and Line locate the rule's id.
	File string
	Line int
}

// Level is one severity of a rule and the condition for it.
type Level struct {
	Severity  string
	Condition *Condition
}

// Key is the alert key of the rule's alert about a device (device scope)
// or the fleet (fleet scope; typeID and deviceID are ignored).
func (r *Rule) Key(typeID, deviceID string) string {
	if r.Scope == ScopeFleet {
		return r.ID + "/fleet"
	}
	return r.ID + "/" + typeID + "/" + deviceID
}

// ReadsEventData reports whether a condition or the value may read an
// event key outside EnvelopeFields. (The message template is rendered
// from fully decoded variables whatever this says.)
func (r *Rule) ReadsEventData() bool {
	for _, l := range r.Levels {
		if l.Condition.ReadsEventData() {
			return true
		}
	}
	return r.Value != nil && r.Value.ReadsEventData()
}

// OnTick reports whether the rule is evaluated on ticks.
func (r *Rule) OnTick() bool { return r.Kind == RuleKindTick }

// Set is a loaded set of rules, sorted by id.
type Set struct {
	Rules []*Rule
	// Files are the rule files read (not their tests), in the FS's order.
	Files []string
}

// Rule returns the rule with id, or nil.
func (s *Set) Rule(id string) *Rule {
	if s == nil {
		return nil
	}
	for _, r := range s.Rules {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// IDs returns the rule ids.
func (s *Set) IDs() []string {
	out := make([]string, len(s.Rules))
	for i, r := range s.Rules {
		out[i] = r.ID
	}
	return out
}

// Problem is one reason a rule file was refused, located in the file.
type Problem struct {
	File   string
	Rule   string // empty when the file has no readable id
	Pos    Position
	Reason string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Pos.Line > 0 {
		b.WriteString(":" + p.Pos.String())
	}
	if p.Rule != "" {
		fmt.Fprintf(&b, ": rule %s", p.Rule)
	}
	b.WriteString(": " + p.Reason)
	return b.String()
}

// LoadError lists every problem of a set of rule files.
type LoadError struct{ Problems []Problem }

func (e *LoadError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// LoadDir loads every rule file (*.yaml and *.yml, not *.test.yaml) of a
// directory. All problems of all files come back together as *LoadError.
func LoadDir(dir string) (*Set, error) {
	return LoadFS(os.DirFS(dir), ".", dir)
}

// LoadFS loads the rule files of dir in fsys; prefix is put before file
// names in messages (the directory the user named).
func LoadFS(fsys fs.FS, dir, prefix string) (*Set, error) {
	names, err := RuleFiles(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read rules directory %s: %w", prefix, err)
	}
	set := &Set{}
	var problems []Problem
	seen := map[string]string{}
	for _, name := range names {
		data, err := fs.ReadFile(fsys, path.Join(dir, name))
		display := displayName(prefix, name)
		if err != nil {
			problems = append(problems, Problem{File: display, Reason: err.Error()})
			continue
		}
		r, ps := ParseRule(display, data)
		problems = append(problems, ps...)
		set.Files = append(set.Files, display)
		if r == nil {
			continue
		}
		if other, dup := seen[r.ID]; dup {
			problems = append(problems, Problem{File: display, Rule: r.ID, Pos: Position{r.Line, 1},
				Reason: fmt.Sprintf("id %q is also the id of the rule in %s", r.ID, other)})
			continue
		}
		seen[r.ID] = display
		set.Rules = append(set.Rules, r)
	}
	if len(problems) > 0 {
		return nil, &LoadError{Problems: problems}
	}
	sort.Slice(set.Rules, func(i, j int) bool { return set.Rules[i].ID < set.Rules[j].ID })
	return set, nil
}

func displayName(prefix, name string) string {
	if prefix == "" || prefix == "." {
		return name
	}
	return strings.TrimSuffix(prefix, "/") + "/" + name
}

// RuleFiles lists the rule files of dir in fsys, sorted: *.yaml and *.yml
// that are not tests files.
func RuleFiles(fsys fs.FS, dir string) ([]string, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") || strings.HasSuffix(n, TestFileSuffix) {
			continue
		}
		if strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// rawRule is a rule file as written. Expressions are kept as nodes for
// their positions.
type rawRule struct {
	ID          string            `yaml:"id"`
	Description string            `yaml:"description"`
	Severity    string            `yaml:"severity"`
	Condition   yaml.Node         `yaml:"condition"`
	Levels      []rawLevel        `yaml:"levels"`
	Kind        string            `yaml:"kind"`
	Scope       string            `yaml:"scope"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Value       yaml.Node         `yaml:"value"`
	Message     yaml.Node         `yaml:"message"`
}

type rawLevel struct {
	Severity  string    `yaml:"severity"`
	Condition yaml.Node `yaml:"condition"`
}

// ParseRule parses and compiles one rule file. It returns the rule, or nil
// and every problem found.
func ParseRule(file string, data []byte) (*Rule, []Problem) {
	var raw rawRule
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, []Problem{{File: file, Reason: "file is empty"}}
		}
		return nil, yamlProblems(file, err)
	}
	p := &ruleParser{file: file, raw: &raw, lines: strings.Split(string(data), "\n")}
	_ = yaml.Unmarshal(data, &p.root)
	r := &Rule{ID: raw.ID, Description: raw.Description, Labels: raw.Labels, File: file, Kind: raw.Kind, Scope: raw.Scope}
	p.header(r)
	p.levels(r)
	p.output(r)
	if len(p.ps) > 0 {
		return nil, p.ps
	}
	return r, nil
}

// ruleParser collects the problems of one rule file while its parts are
// checked and compiled.
type ruleParser struct {
	file  string
	raw   *rawRule
	root  yaml.Node // the file's node tree, for positions
	lines []string  // the file's lines, for expression problems
	ps    []Problem
}

// add records a problem at key's position in the file (else node's).
func (p *ruleParser) add(node *yaml.Node, key, format string, args ...any) {
	pos := Position{}
	if n := keyNode(&p.root, key); n != nil {
		pos = Position{n.Line, n.Column}
	} else if node != nil {
		pos = Position{node.Line, node.Column}
	}
	p.ps = append(p.ps, Problem{File: p.file, Rule: p.raw.ID, Pos: pos, Reason: fmt.Sprintf(format, args...)})
}

// header checks the id, kind, scope and for, and applies their defaults.
func (p *ruleParser) header(r *Rule) {
	if n := keyNode(&p.root, "id"); n != nil {
		r.Line = n.Line
	}
	if err := events.ValidateID("rule id", p.raw.ID); err != nil {
		p.add(nil, "id", "%v", err)
	}
	switch r.Kind {
	case "":
		r.Kind = RuleKindEvent
		if r.Scope == ScopeFleet {
			// A fleet condition can change with any event or with time
			// passing (a device going offline): evaluate it on ticks too.
			r.Kind = RuleKindTick
		}
	case RuleKindEvent, RuleKindTick:
	default:
		p.add(nil, "kind", "kind %q is not event or tick", r.Kind)
	}
	switch r.Scope {
	case "":
		r.Scope = ScopeDevice
	case ScopeDevice, ScopeFleet:
	default:
		p.add(nil, "scope", "scope %q is not device or fleet", r.Scope)
	}
	if p.raw.For != "" {
		d, err := time.ParseDuration(p.raw.For)
		if err != nil || d < 0 {
			p.add(nil, "for", "for %q is not a duration like 5m", p.raw.For)
		}
		r.For = d
	}
}

// levels compiles the rule's condition with its severity, or its levels.
func (p *ruleParser) levels(r *Rule) {
	raw := p.raw
	hasCond := !isEmpty(&raw.Condition)
	switch {
	case hasCond && len(raw.Levels) > 0:
		p.add(nil, "levels", "a rule has either severity and condition, or levels")
	case hasCond:
		if !validSeverity(raw.Severity) {
			p.add(nil, "severity", "severity %q is not critical, warning or info", raw.Severity)
		}
		if c := p.condition(&raw.Condition, raw.ID); c != nil {
			r.Levels = []Level{{Severity: raw.Severity, Condition: c}}
		}
	case len(raw.Levels) > 0:
		if raw.Severity != "" {
			p.add(nil, "severity", "a rule with levels gives each level its severity")
		}
		seen := map[string]bool{}
		for i := range raw.Levels {
			l := &raw.Levels[i]
			if !validSeverity(l.Severity) || seen[l.Severity] {
				p.ps = append(p.ps, Problem{File: p.file, Rule: raw.ID, Pos: Position{l.Condition.Line, 1},
					Reason: fmt.Sprintf("level %d: severity %q is not critical, warning or info, or is repeated", i+1, l.Severity)})
			}
			seen[l.Severity] = true
			if isEmpty(&l.Condition) {
				p.ps = append(p.ps, Problem{File: p.file, Rule: raw.ID, Reason: fmt.Sprintf("level %d has no condition", i+1)})
				continue
			}
			if c := p.condition(&l.Condition, fmt.Sprintf("%s[%s]", raw.ID, l.Severity)); c != nil {
				r.Levels = append(r.Levels, Level{Severity: l.Severity, Condition: c})
			}
		}
	default:
		p.add(nil, "condition", "the rule has no condition (and no levels)")
	}
}

// condition compiles one condition; nil after recording its problems.
func (p *ruleParser) condition(node *yaml.Node, name string) *Condition {
	c, err := CompileCondition(name, node.Value)
	if err != nil {
		p.ps = append(p.ps, exprProblems(p.file, p.raw.ID, node, p.lines, err)...)
		return nil
	}
	return c
}

// output compiles the value expression and the message template.
func (p *ruleParser) output(r *Rule) {
	raw := p.raw
	if !isEmpty(&raw.Value) {
		x, err := CompileValue(raw.ID+".value", raw.Value.Value, CompileOptions{})
		if err != nil {
			p.ps = append(p.ps, exprProblems(p.file, raw.ID, &raw.Value, p.lines, err)...)
		}
		r.Value = x
	}
	r.MessageText = raw.Message.Value
	if r.MessageText == "" {
		r.MessageText = defaultMessage
	}
	tmpl, err := template.New(raw.ID).Option("missingkey=zero").Funcs(templateFuncs).Parse(r.MessageText)
	if err != nil {
		pos := Position{raw.Message.Line, raw.Message.Column}
		p.ps = append(p.ps, Problem{File: p.file, Rule: raw.ID, Pos: pos, Reason: fmt.Sprintf("message template: %v", err)})
	}
	r.Message = tmpl
}

// templateFuncs are the functions a message template may call besides
// text/template's own.
var templateFuncs = template.FuncMap{
	// percent formats a rate: 0.934 -> "93.4%".
	"percent": func(v any) string {
		f, _ := v.(float64)
		return strconv.FormatFloat(f*100, 'f', 1, 64) + "%"
	},
	// ts formats a timestamp as RFC 3339.
	"ts": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}

// defaultMessage is the message of a rule that has none.
const defaultMessage = `{{.rule}}{{if .device.deviceId}} on {{.device.typeId}}/{{.device.deviceId}}{{end}}`

func validSeverity(s string) bool {
	return s == SeverityCritical || s == SeverityWarning || s == SeverityInfo
}

func isEmpty(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// exprProblems translates an expression's errors to file positions: a
// plain or quoted scalar starts at its node; a block scalar (| or >) on
// the lines after its indicator, at their indentation.
func exprProblems(file, rule string, node *yaml.Node, lines []string, err error) []Problem {
	var es ExprErrors
	if !errors.As(err, &es) {
		return []Problem{{File: file, Rule: rule, Pos: Position{node.Line, node.Column}, Reason: err.Error()}}
	}
	out := make([]Problem, 0, len(es))
	for _, e := range es {
		pos := Position{node.Line, node.Column}
		if e.Pos.Line > 0 {
			switch node.Style {
			case yaml.LiteralStyle, yaml.FoldedStyle:
				line := node.Line + e.Pos.Line
				if node.Style == yaml.FoldedStyle {
					line = node.Line + 1 // folded text is one line to CEL
				}
				// The block's indentation is its first content line's;
				// CEL columns count from there.
				indent := 0
				if first := node.Line; first < len(lines) {
					l := lines[first]
					indent = len(l) - len(strings.TrimLeft(l, " "))
				}
				pos = Position{line, indent + e.Pos.Column}
			case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
				pos = Position{node.Line + e.Pos.Line - 1, node.Column + e.Pos.Column}
				if e.Pos.Line > 1 {
					pos.Column = e.Pos.Column
				}
			default:
				pos = Position{node.Line + e.Pos.Line - 1, node.Column + e.Pos.Column - 1}
				if e.Pos.Line > 1 {
					pos.Column = e.Pos.Column
				}
			}
		}
		out = append(out, Problem{File: file, Rule: rule, Pos: pos, Reason: e.Message})
	}
	return out
}

// keyNode returns the key node of a top-level key, or nil.
func keyNode(root *yaml.Node, key string) *yaml.Node {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i]
		}
	}
	return nil
}

// yamlProblems turns a yaml.v3 error ("line 3: field x not found in type
// y") into located problems.
func yamlProblems(file string, err error) []Problem {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]Problem, 0, len(msgs))
	for _, m := range msgs {
		m = strings.TrimPrefix(m, "yaml: ")
		p := Problem{File: file, Reason: m}
		if rest, ok := strings.CutPrefix(m, "line "); ok {
			var line int
			if n, tail, ok := strings.Cut(rest, ": "); ok {
				if _, err := fmt.Sscanf(n, "%d", &line); err == nil {
					p.Pos, p.Reason = Position{line, 1}, tail
				}
			}
		}
		p.Reason = strings.Replace(p.Reason, "not found in type rules.rawRule", "is not a rule key", 1)
		p.Reason = strings.Replace(p.Reason, "not found in type rules.rawLevel", "is not a level key", 1)
		out = append(out, p)
	}
	return out
}
