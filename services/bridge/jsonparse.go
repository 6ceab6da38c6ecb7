package bridge

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// parseJSON decodes a payload into the generic form the schema validator
// takes (map[string]any, []any, string, json.Number, bool, nil): the same
// values as jsonschema.UnmarshalJSON (encoding/json with UseNumber), which
// it stands in for because that took half of the decoder's time per report.
// Anything it does not accept, and every string with an escape or a
// non-ASCII byte, is handed to encoding/json, so errors, escapes and
// invalid UTF-8 come out exactly as encoding/json has them.
// FuzzParseJSON checks the two agree.
func parseJSON(b []byte) (any, error) {
	p := jsonParser{b: b}
	v, ok := p.value(0)
	if ok {
		p.space()
		if p.i == len(p.b) {
			return v, nil
		}
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

type jsonParser struct {
	b []byte
	i int
}

func (p *jsonParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// value parses one value; false means "not accepted here" (a syntax error,
// or too deep), never a different value.
func (p *jsonParser) value(depth int) (any, bool) {
	p.space()
	if p.i >= len(p.b) {
		return nil, false
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		return p.str()
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	}
	return nil, false
}

func (p *jsonParser) literal(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *jsonParser) object(depth int) (any, bool) {
	if depth > maxJSONDepth {
		return nil, false
	}
	p.i++ // {
	m := make(map[string]any)
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return m, true
	}
	for {
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, false
		}
		k, ok := p.str()
		if !ok {
			return nil, false
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, false
		}
		p.i++
		v, ok := p.value(depth)
		if !ok {
			return nil, false
		}
		m[k.(string)] = v
		p.space()
		if p.i >= len(p.b) {
			return nil, false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return m, true
		default:
			return nil, false
		}
	}
}

func (p *jsonParser) array(depth int) (any, bool) {
	if depth > maxJSONDepth {
		return nil, false
	}
	p.i++ // [
	a := []any{}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return a, true
	}
	for {
		v, ok := p.value(depth)
		if !ok {
			return nil, false
		}
		a = append(a, v)
		p.space()
		if p.i >= len(p.b) {
			return nil, false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return a, true
		default:
			return nil, false
		}
	}
}

// str parses a string. Plain printable ASCII is copied; a string with an
// escape or any other byte is decoded by encoding/json.
func (p *jsonParser) str() (any, bool) {
	start := p.i
	p.i++ // "
	plain := true
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			if plain {
				return intern(p.b[start+1 : p.i-1]), true
			}
			var s string
			if err := json.Unmarshal(p.b[start:p.i], &s); err != nil {
				return nil, false
			}
			return s, true
		case c == '\\':
			plain = false
			p.i += 2 // the escaped byte cannot end the string
		case c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			plain = false
			p.i++
		default:
			p.i++
		}
	}
	return nil, false
}

// number checks the JSON number grammar and keeps the text.
func (p *jsonParser) number() (any, bool) {
	start := p.i
	if !p.scanNumber() {
		return nil, false
	}
	return json.Number(p.b[start:p.i]), true
}

// scanNumber passes over a number, checking the JSON number grammar.
func (p *jsonParser) scanNumber() bool {
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case p.i < len(p.b) && p.b[p.i] >= '1' && p.b[p.i] <= '9':
		p.digits()
	default:
		return false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return false
		}
	}
	return true
}

func (p *jsonParser) digits() int {
	n := 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

// intern returns the report's keys and status values without allocating
// a new string for each occurrence.
func intern(b []byte) string {
	switch string(b) { // no allocation: the compiler compares in place
	case "state":
		return "state"
	case "reported":
		return "reported"
	case "firmware":
		return "firmware"
	case "version":
		return "version"
	case "timestamp":
		return "timestamp"
	case "status":
		return "status"
	case "checksum":
		return "checksum"
	case "previousVersion":
		return "previousVersion"
	case "updateDuration":
		return "updateDuration"
	case "errorCode":
		return "errorCode"
	case "in_progress":
		return "in_progress"
	case "completed":
		return "completed"
	case "failed":
		return "failed"
	}
	return string(b)
}
