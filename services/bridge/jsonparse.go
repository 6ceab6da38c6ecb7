package bridge

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/otawatch/otawatch/events/jsonscan"
)

// parseJSON decodes a payload into the generic form the schema validator
// takes (map[string]any, []any, string, json.Number, bool, nil): the same
// values as jsonschema.UnmarshalJSON (encoding/json with UseNumber), which
// it stands in for because that took half of the decoder's time per report.
// Anything it does not accept, and every string with an escape or a
// non-ASCII byte, is handed to encoding/json, so errors, escapes and
// invalid UTF-8 come out exactly as encoding/json has them. It reads
// with events' scanner (events/jsonscan), as the fast path does.
// FuzzParseJSON checks the two agree.
func parseJSON(b []byte) (any, error) {
	s := jsonscan.New(b)
	if v, ok := value(&s, 0); ok && s.End() {
		return v, nil
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

// maxJSONDepth is encoding/json's nesting limit.
const maxJSONDepth = 10000

// value parses one value; false means "not accepted here" (a syntax error,
// or too deep), never a different value.
func value(s *jsonscan.Scanner, depth int) (any, bool) {
	switch c := s.Peek(); {
	case c == '{':
		return object(s, depth+1)
	case c == '[':
		return array(s, depth+1)
	case c == '"':
		return str(s)
	case c == '-' || c >= '0' && c <= '9':
		n, ok := s.Number()
		return json.Number(n), ok
	case c == 't':
		return true, s.Literal("true")
	case c == 'f':
		return false, s.Literal("false")
	case c == 'n':
		return nil, s.Literal("null")
	}
	return nil, false
}

func object(s *jsonscan.Scanner, depth int) (any, bool) {
	if depth > maxJSONDepth {
		return nil, false
	}
	s.Next('{')
	m := make(map[string]any)
	if s.Next('}') {
		return m, true
	}
	for {
		if s.Peek() != '"' {
			return nil, false
		}
		k, ok := str(s)
		if !ok || !s.Next(':') {
			return nil, false
		}
		v, ok := value(s, depth)
		if !ok {
			return nil, false
		}
		m[k.(string)] = v
		if s.Next(',') {
			continue
		}
		return m, s.Next('}')
	}
}

func array(s *jsonscan.Scanner, depth int) (any, bool) {
	if depth > maxJSONDepth {
		return nil, false
	}
	s.Next('[')
	a := []any{}
	if s.Next(']') {
		return a, true
	}
	for {
		v, ok := value(s, depth)
		if !ok {
			return nil, false
		}
		a = append(a, v)
		if s.Next(',') {
			continue
		}
		return a, s.Next(']')
	}
}

// str parses a string. Plain ASCII is copied; a string with an escape or
// any other byte is decoded by encoding/json.
func str(s *jsonscan.Scanner) (any, bool) {
	start := s.Pos()
	raw, escaped, ok := s.String()
	if !ok {
		return nil, false
	}
	if !escaped && ascii(raw) {
		return intern(raw), true
	}
	var v string
	if err := json.Unmarshal(s.Input()[start:s.Pos()], &v); err != nil {
		return nil, false
	}
	return v, true
}

func ascii(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
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
