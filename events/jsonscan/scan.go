// Package jsonscan is the JSON scanner behind otawatch's wire format: the
// events package's decoder reads envelopes and event data with it, and the
// bridge reads device reports with it. It reads in one pass without
// reflection and without building a document, and it is strict the other
// way round from a parser: it never guesses. Anything it does not take as
// it is (an escape in a string it must return, a byte it does not expect,
// broken syntax, nesting beyond the caller's bound) makes it return false,
// and the caller hands the input to encoding/json, which decides. So a
// fast path built on it can only agree with encoding/json or decline; each
// caller's fuzz test holds it to that.
package jsonscan

// Scanner walks a JSON document held in memory. The zero value is not
// useful; make one with New. Strings and numbers it returns alias the
// input.
type Scanner struct {
	b []byte
	i int
}

// New returns a scanner at the start of b.
func New(b []byte) Scanner { return Scanner{b: b} }

// Pos is the offset of the next byte to read.
func (s *Scanner) Pos() int { return s.i }

// Input is the document being read.
func (s *Scanner) Input() []byte { return s.b }

// Space passes over JSON white space.
func (s *Scanner) Space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// Peek returns the next byte after white space, or 0 at the end.
func (s *Scanner) Peek() byte {
	s.Space()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// Next reports whether the next byte after white space is c, and passes
// over it if so.
func (s *Scanner) Next(c byte) bool {
	s.Space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// End reports whether only white space is left.
func (s *Scanner) End() bool {
	s.Space()
	return s.i == len(s.b)
}

// Literal passes over word (true, false, null) at the current position, if
// it is there.
func (s *Scanner) Literal(word string) bool {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

// Null passes over a null after white space, if one is there.
func (s *Scanner) Null() bool {
	return s.Peek() == 'n' && s.Literal("null")
}

// Plain reads a string of printable ASCII without escapes, after white
// space, and returns its contents. Such a string is the same bytes in JSON
// and in Go, its length in bytes is its length in characters, and no key
// read this way can be a known key in disguise ("st\u0061te").
func (s *Scanner) Plain() ([]byte, bool) {
	s.Space()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return nil, false
		}
	}
	return nil, false
}

// String passes over a string at the current position, checking escapes
// and refusing control bytes, and returns its bytes between the quotes,
// still escaped, and whether it has an escape. Other bytes are taken as
// they are, as encoding/json takes them.
func (s *Scanner) String() (raw []byte, escaped, ok bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false, false
	}
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			raw = s.b[s.i+1 : j]
			s.i = j + 1
			return raw, escaped, true
		case c < 0x20:
			return nil, false, false
		case c == '\\':
			escaped = true
			j++
			if j >= len(s.b) {
				return nil, false, false
			}
			switch s.b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(s.b) {
					return nil, false, false
				}
				for _, h := range s.b[j+1 : j+5] {
					if !isHex(h) {
						return nil, false, false
					}
				}
				j += 4
			default:
				return nil, false, false
			}
		}
	}
	return nil, false, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// Number reads a number after white space, checking the JSON number
// grammar, and returns its text.
func (s *Scanner) Number() ([]byte, bool) {
	s.Space()
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.i < len(s.b) && s.b[s.i] >= '1' && s.b[s.i] <= '9':
		s.digits()
	default:
		return nil, false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return nil, false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return nil, false
		}
	}
	return s.b[start:s.i], true
}

func (s *Scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

// Members reads an object after white space, its braces included, calling
// member with each key (plain ASCII, see Plain); member reads the value, or
// returns false to decline the document.
func (s *Scanner) Members(member func(key []byte) bool) bool {
	if !s.Next('{') {
		return false
	}
	if s.Next('}') {
		return true
	}
	for {
		key, ok := s.Plain()
		if !ok || !s.Next(':') || !member(key) {
			return false
		}
		if s.Next(',') {
			continue
		}
		return s.Next('}')
	}
}

// Skip passes over one value after white space, checking its syntax;
// depth is the nesting it is at, and a value that would nest beyond
// maxDepth is declined.
func (s *Scanner) Skip(depth, maxDepth int) bool {
	switch s.Peek() {
	case '{':
		if depth >= maxDepth {
			return false
		}
		s.i++
		if s.Next('}') {
			return true
		}
		for {
			s.Space()
			if _, _, ok := s.String(); !ok || !s.Next(':') || !s.Skip(depth+1, maxDepth) {
				return false
			}
			if s.Next(',') {
				continue
			}
			return s.Next('}')
		}
	case '[':
		if depth >= maxDepth {
			return false
		}
		s.i++
		if s.Next(']') {
			return true
		}
		for {
			if !s.Skip(depth+1, maxDepth) {
				return false
			}
			if s.Next(',') {
				continue
			}
			return s.Next(']')
		}
	case '"':
		_, _, ok := s.String()
		return ok
	case 't':
		return s.Literal("true")
	case 'f':
		return s.Literal("false")
	case 'n':
		return s.Literal("null")
	case 0:
		return false
	}
	_, ok := s.Number()
	return ok
}

// Value passes over one value after white space, as Skip does, and returns
// its bytes.
func (s *Scanner) Value(maxDepth int) ([]byte, bool) {
	s.Space()
	start := s.i
	if !s.Skip(0, maxDepth) {
		return nil, false
	}
	return s.b[start:s.i], true
}

// Compact reports whether b is one JSON value exactly as encoding/json
// writes a json.RawMessage: valid (within maxDepth), with no white space
// outside strings and nothing encoding/json would escape when it
// re-encodes it (<, >, & and U+2028, U+2029). For such a value
// json.Marshal(json.RawMessage(b)) is b itself.
func Compact(b []byte, maxDepth int) bool {
	s := New(b)
	if !s.Skip(0, maxDepth) || s.i != len(b) {
		return false
	}
	inString := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			inString = !inString
		case '\\':
			i++ // an escape's second byte is never a quote that ends it
		case ' ', '\t', '\n', '\r':
			if !inString {
				return false
			}
		case '<', '>', '&':
			return false
		case 0xe2:
			if i+2 < len(b) && b[i+1] == 0x80 && (b[i+2] == 0xa8 || b[i+2] == 0xa9) {
				return false
			}
		}
	}
	return true
}
