// Package conf loads otawatch's one YAML configuration: strict decoding
// (unknown keys are errors), every key also settable from the environment, and
// validation that reports every problem at once as file:line: key: reason.
//
// A section is a struct with yaml tags; it may implement Defaulter and
// Validator. Services own their sections; the app assembles them.
package conf

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaulter is a section that fills in its defaults.
type Defaulter interface{ SetDefaults() }

// Validator is a section that checks itself, adding every problem to p with
// keys relative to the section.
type Validator interface{ Validate(p Problems) }

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Key is the dotted key path, e.g. "mqtt.broker".
	Key    string
	Reason string
	// Line is the key's line in the file, 0 when it is not in the file.
	Line int
}

// Problems collects Problem values under a key prefix.
type Problems struct {
	prefix string
	list   *[]Problem
}

// NewProblems returns an empty collection.
func NewProblems() Problems { return Problems{list: &[]Problem{}} }

// Sub returns a view that prefixes keys with key.
func (p Problems) Sub(key string) Problems {
	return Problems{prefix: join(p.prefix, key), list: p.list}
}

// Addf records a problem with key (relative to p's prefix).
func (p Problems) Addf(key, format string, args ...any) {
	*p.list = append(*p.list, Problem{Key: join(p.prefix, key), Reason: fmt.Sprintf(format, args...)})
}

// List returns the problems recorded so far.
func (p Problems) List() []Problem { return *p.list }

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "." + b
}

// Error is every problem of a configuration, one per line.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		file := e.File
		if file == "" {
			file = "(config)"
		}
		b.WriteString(file)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
		}
		if p.Key != "" {
			fmt.Fprintf(&b, ": %s", p.Key)
		}
		fmt.Fprintf(&b, ": %s", p.Reason)
	}
	return b.String()
}

// EnvPrefix starts every environment override: OTAWATCH_NATS_URL sets nats.url.
const EnvPrefix = "OTAWATCH_"

// Load decodes the YAML file at path (none when path is empty) into out, a
// pointer to a struct, strictly; applies environment overrides from env (as
// os.Environ returns it); sets defaults; validates. All problems come back
// together as an *Error.
func Load(path string, env []string, out any) error {
	var data []byte
	if path != "" {
		var err error
		data, err = os.ReadFile(path)
		if err != nil {
			return &Error{File: path, Problems: []Problem{{Reason: err.Error()}}}
		}
	}
	return Decode(path, data, env, out)
}

// Decode is Load on bytes already read; file names them in messages.
func Decode(file string, data []byte, env []string, out any) error {
	var root yaml.Node
	var problems []Problem
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(out); err != nil && !errors.Is(err, io.EOF) {
			problems = append(problems, yamlProblems(err)...)
		}
		if err := yaml.Unmarshal(data, &root); err != nil {
			problems = append(problems, Problem{Reason: err.Error()})
		}
	}
	problems = append(problems, applyEnv(reflect.ValueOf(out).Elem(), "", envMap(env))...)
	walkSections(reflect.ValueOf(out), func(v reflect.Value, _ string) {
		if d, ok := v.Interface().(Defaulter); ok {
			d.SetDefaults()
		}
	})
	p := NewProblems()
	walkSections(reflect.ValueOf(out), func(v reflect.Value, key string) {
		if val, ok := v.Interface().(Validator); ok {
			val.Validate(p.Sub(key))
		}
	})
	for i := range problems {
		if problems[i].Key == "" && problems[i].Line > 0 {
			problems[i].Key = lineKey(&root, problems[i].Line)
		}
	}
	for _, pr := range p.List() {
		pr.Line = keyLine(&root, pr.Key)
		problems = append(problems, pr)
	}
	if len(problems) == 0 {
		return nil
	}
	sort.SliceStable(problems, func(i, j int) bool { return problems[i].Line < problems[j].Line })
	return &Error{File: file, Problems: problems}
}

// yamlProblems splits a yaml.v3 error ("line 3: field x not found in type
// y") into one problem per line.
func yamlProblems(err error) []Problem {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		out := make([]Problem, 0, len(te.Errors))
		for _, msg := range te.Errors {
			out = append(out, lineProblem(msg))
		}
		return out
	}
	return []Problem{lineProblem(err.Error())}
}

func lineProblem(msg string) Problem {
	msg = strings.TrimPrefix(msg, "yaml: ")
	var line int
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, tail
			}
		}
	}
	msg = strings.Replace(msg, "not found in type", "is not a known key of", 1)
	return Problem{Reason: msg, Line: line}
}

// walkSections calls fn on v and on every struct field (depth first, parent
// after children, so a parent's defaults may depend on its children's), with
// the dotted yaml key path.
func walkSections(v reflect.Value, fn func(reflect.Value, string)) {
	var walk func(v reflect.Value, key string)
	walk = func(v reflect.Value, key string) {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return
		}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := yamlName(f)
			if name == "" || !f.IsExported() {
				continue
			}
			if fv := v.Field(i); fv.Kind() == reflect.Struct {
				walk(fv, join(key, name))
			}
		}
		if v.CanAddr() {
			fn(v.Addr(), key)
		}
	}
	walk(v, "")
}

func yamlName(f reflect.StructField) string {
	tag := f.Tag.Get("yaml")
	if tag == "-" {
		return ""
	}
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name
}

func envMap(env []string) map[string]string {
	m := make(map[string]string)
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			m[k] = v
		}
	}
	return m
}

// EnvName is the environment variable that sets key ("nats.url" ->
// OTAWATCH_NATS_URL).
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.NewReplacer(".", "_").Replace(key))
}

var durationType = reflect.TypeOf(time.Duration(0))

func applyEnv(v reflect.Value, key string, env map[string]string) []Problem {
	var problems []Problem
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" || !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		k := join(key, name)
		if fv.Kind() == reflect.Struct {
			problems = append(problems, applyEnv(fv, k, env)...)
			continue
		}
		s, ok := env[EnvName(k)]
		if !ok {
			continue
		}
		if err := setFromString(fv, s); err != nil {
			problems = append(problems, Problem{Key: k, Reason: fmt.Sprintf("from %s: %v", EnvName(k), err)})
		}
	}
	return problems
}

func setFromString(v reflect.Value, s string) error {
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(s))
	}
	if v.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a non-negative integer", s)
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		v.SetFloat(n)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot be set from the environment")
		}
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

// keyLine finds the line of a dotted key in a YAML document, or 0.
func keyLine(root *yaml.Node, key string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, part := range strings.Split(key, ".") {
		if n == nil || n.Kind != yaml.MappingNode {
			return line
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				line = n.Content[i].Line
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

// lineKey finds the dotted path of the key on line, or "".
func lineKey(root *yaml.Node, line int) string {
	var find func(n *yaml.Node, path string) string
	find = func(n *yaml.Node, path string) string {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				if k := find(c, path); k != "" {
					return k
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := join(path, n.Content[i].Value)
				if n.Content[i].Line == line {
					return k
				}
				if found := find(n.Content[i+1], k); found != "" {
					return found
				}
			}
		}
		return ""
	}
	return find(root, "")
}

// ReadSecret reads a secret from a *_file key's file, trimming one trailing
// newline. An empty path is an empty secret.
func ReadSecret(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// Check applies the defaults of cfg (a pointer to a section struct) and of
// every section nested in it, validates them all the way a loaded file is
// validated (children first, keys under section, e.g. "mqtt.tls.ca_file"),
// and returns every problem as one *Error, or nil. A service's New ends
// in it, so a caller that builds a config in Go gets what a file would.
func Check(section string, cfg any) error {
	v := reflect.ValueOf(cfg)
	walkSections(v, func(v reflect.Value, _ string) {
		if d, ok := v.Interface().(Defaulter); ok {
			d.SetDefaults()
		}
	})
	p := NewProblems()
	walkSections(v, func(v reflect.Value, key string) {
		if val, ok := v.Interface().(Validator); ok {
			val.Validate(p.Sub(join(section, key)))
		}
	})
	if list := p.List(); len(list) > 0 {
		return &Error{Problems: list}
	}
	return nil
}
