package projector

import (
	"bytes"
	"strconv"
	"time"

	"github.com/otawatch/otawatch/events"
)

// A fast path for the events the projector sees most: the envelope and a
// report's data, read in one pass with no reflection. It handles the plain
// form the otawatch services write (known keys, strings without escapes);
// anything else (an unknown or differently-cased key, an escape, a type
// mismatch, broken JSON) makes it give up, and the event goes through
// events.Decode and encoding/json, which decide what the event is. So it
// never accepts what the slow path refuses, nor reads a value differently:
// FuzzFastDecode checks that.

// scanner walks a JSON document.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

// str reads a string without escapes or control characters and returns
// its bytes (aliasing the input).
func (s *scanner) str() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			// Escapes and non-ASCII (which encoding/json checks for
			// valid UTF-8) take the slow path.
			return nil, false
		}
		s.i++
	}
	return nil, false
}

func (s *scanner) lit(word string) bool {
	s.ws()
	if bytes.HasPrefix(s.b[s.i:], []byte(word)) {
		s.i += len(word)
		return true
	}
	return false
}

// number reads a JSON number literal.
func (s *scanner) number() ([]byte, bool) {
	s.ws()
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	digits := func() int {
		n := 0
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	intStart := s.i
	n := digits()
	if n == 0 || (n > 1 && s.b[intStart] == '0') {
		return nil, false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if digits() == 0 {
			return nil, false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if digits() == 0 {
			return nil, false
		}
	}
	return s.b[start:s.i], true
}

// skip steps over any value, checking its syntax.
func (s *scanner) skip(depth int) bool {
	if depth > 64 {
		return false
	}
	switch s.peek() {
	case '"':
		_, ok := s.str()
		return ok
	case '{':
		return s.object(func(key []byte) bool { return s.skip(depth + 1) })
	case '[':
		s.i++
		if s.eat(']') {
			return true
		}
		for {
			if !s.skip(depth + 1) {
				return false
			}
			if s.eat(']') {
				return true
			}
			if !s.eat(',') {
				return false
			}
		}
	case 't':
		return s.lit("true")
	case 'f':
		return s.lit("false")
	case 'n':
		return s.lit("null")
	default:
		_, ok := s.number()
		return ok
	}
}

// object reads an object, calling field with each key; field reads the
// value. It fails on a repeated key (encoding/json keeps the last one; the
// slow path can have that case).
func (s *scanner) object(field func(key []byte) bool) bool {
	if !s.eat('{') {
		return false
	}
	if s.eat('}') {
		return true
	}
	for {
		key, ok := s.str()
		if !ok || !s.eat(':') || !field(key) {
			return false
		}
		if s.eat('}') {
			return true
		}
		if !s.eat(',') {
			return false
		}
	}
}

// strField reads a string value into dst; null leaves it as it is, as
// encoding/json does.
func (s *scanner) strField(dst *string) bool {
	if s.peek() == 'n' {
		return s.lit("null")
	}
	v, ok := s.str()
	if ok {
		*dst = string(v)
	}
	return ok
}

func (s *scanner) timeField(dst *time.Time) bool {
	if s.peek() == 'n' {
		return s.lit("null")
	}
	v, ok := s.str()
	if !ok {
		return false
	}
	// time.Time's own JSON decoding: strict RFC 3339.
	return dst.UnmarshalText(v) == nil
}

func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// seen tracks keys already read, to give up on a repeated one.
type seen uint32

func (m *seen) first(bit int) bool {
	if *m&(1<<bit) != 0 {
		return false
	}
	*m |= 1 << bit
	return true
}

// fastEnvelope reads an envelope; data aliases raw. It returns false when
// the slow path must decide (including every invalid envelope).
func fastEnvelope(raw []byte) (events.Event, bool) {
	var e events.Event
	var m seen
	s := &scanner{b: raw}
	ok := s.object(func(key []byte) bool {
		switch string(key) {
		case "specversion":
			return m.first(0) && s.strField(&e.SpecVersion)
		case "id":
			return m.first(1) && s.strField(&e.ID)
		case "source":
			return m.first(2) && s.strField(&e.Source)
		case "type":
			return m.first(3) && s.strField(&e.Type)
		case "subject":
			return m.first(4) && s.strField(&e.Subject)
		case "time":
			return m.first(5) && s.timeField(&e.Time)
		case "datacontenttype":
			return m.first(6) && s.strField(&e.DataContentType)
		case "data":
			if !m.first(7) {
				return false
			}
			s.ws()
			start := s.i
			if !s.skip(0) {
				return false
			}
			// As json.RawMessage: the value's bytes, "null" included.
			e.Data = raw[start:s.i]
			return true
		}
		return false
	})
	if !ok || !s.end() {
		return events.Event{}, false
	}
	// What events.Decode requires; a failing envelope takes the slow path
	// for its error message.
	if e.SpecVersion != events.SpecVersion || e.ID == "" || e.Source == "" || e.Type == "" || e.Time.IsZero() {
		return events.Event{}, false
	}
	return e, true
}

// fastReport reads a report's data.
func fastReport(data []byte) (events.ShadowReportedData, bool) {
	var d events.ShadowReportedData
	var m seen
	s := &scanner{b: data}
	ok := s.object(func(key []byte) bool {
		switch string(key) {
		case "typeId":
			return m.first(0) && s.strField(&d.TypeID)
		case "deviceId":
			return m.first(1) && s.strField(&d.DeviceID)
		case "topic":
			return m.first(2) && s.strField(&d.Topic)
		case "firmware":
			if !m.first(3) {
				return false
			}
			if s.peek() == 'n' {
				return s.lit("null")
			}
			var fm seen
			return s.object(func(key []byte) bool {
				fw := &d.Firmware
				switch string(key) {
				case "version":
					return fm.first(0) && s.strField(&fw.Version)
				case "timestamp":
					return fm.first(1) && s.timeField(&fw.Timestamp)
				case "status":
					return fm.first(2) && s.strField(&fw.Status)
				case "checksum":
					return fm.first(3) && s.strField(&fw.Checksum)
				case "previousVersion":
					return fm.first(4) && s.strField(&fw.PreviousVersion)
				case "updateDuration":
					if !fm.first(5) {
						return false
					}
					if s.peek() == 'n' {
						return s.lit("null")
					}
					lit, ok := s.number()
					if !ok {
						return false
					}
					f, err := strconv.ParseFloat(string(lit), 64)
					fw.UpdateDuration = f
					return err == nil
				case "errorCode":
					if !fm.first(6) {
						return false
					}
					if s.peek() == 'n' {
						fw.ErrorCode = nil
						return s.lit("null")
					}
					v, ok := s.str()
					if ok {
						code := string(v)
						fw.ErrorCode = &code
					}
					return ok
				}
				return false
			})
		}
		return false
	})
	if !ok || !s.end() {
		return events.ShadowReportedData{}, false
	}
	return d, true
}
