package bridge

import (
	"strconv"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/schemas"
)

// decodeFast reads the firmware of a shadow report in one pass over the
// payload, without building a generic document or running the schema
// validator. It is the bridge's path for the reports devices actually send
// and it is deliberately narrow: it returns ok only for a payload it has
// checked completely against everything the schema (and firmwareFrom)
// requires, and declines (ok false, never an error) anything unusual:
//
//   - a string of a firmware field, or an object key, that is not plain
//     printable ASCII (an escape, a control byte, any byte >= 0x80), so
//     lengths in bytes are lengths in characters and no key can be a
//     known key in disguise ("st\u0061te");
//   - a known key twice in one object (encoding/json keeps the last one);
//   - a timestamp not of the form 2006-01-02T15:04:05[.fraction](Z|±hh:mm)
//     with an upper-case T and Z, or with a leap second, or outside the
//     window schemas.ReportTimeOK accepts;
//   - an updateDuration with a minus sign, or one not below
//     schemas.MaxUpdateDuration (at the bound, the float64 and the
//     schema's exact decimal can disagree: "604800.00000000000001" is
//     604800 as a float64 but more than the maximum to the schema);
//   - nesting deeper than fastMaxDepth.
//
// A declined report goes through the schema path (decodeSchema), which
// accepts it or gives the reason. So the schema stays the one definition of
// a valid report; FuzzDecodeFast checks that whatever this path accepts,
// the schema path accepts with the same firmware.
func decodeFast(payload []byte) (events.Firmware, bool) {
	p := fastParser{jsonParser{b: payload}}
	p.space()
	fw, ok := p.report()
	if !ok {
		return events.Firmware{}, false
	}
	p.space()
	return fw, p.i == len(p.b)
}

// fastMaxDepth bounds nesting in the parts of a report the fast path
// skips. encoding/json allows 10000; deeper documents are declined and
// judged by the schema path.
const fastMaxDepth = 64

// fastParser is jsonParser's scanner (space, literal, scanNumber) with the
// report's one-pass reading on top.
type fastParser struct {
	jsonParser
}

// next skips space and reports whether the next byte is c, consuming it
// if so.
func (p *fastParser) next(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// members parses the members of an object, its opening brace included,
// calling member for each key (plain ASCII, as a slice of the payload, not
// copied). member parses the value, or returns false to decline.
func (p *fastParser) members(member func(key []byte) bool) bool {
	if !p.next('{') {
		return false
	}
	if p.next('}') {
		return true
	}
	for {
		p.space()
		key, ok := p.plain()
		if !ok || !p.next(':') {
			return false
		}
		if !member(key) {
			return false
		}
		if p.next(',') {
			continue
		}
		return p.next('}')
	}
}

// report parses {"state":{"reported":{"firmware":{...}}}} with any other
// members skipped.
func (p *fastParser) report() (events.Firmware, bool) {
	var fw events.Firmware
	var seen bool
	ok := p.members(func(key []byte) bool {
		if string(key) != "state" {
			return p.skip(1)
		}
		if seen {
			return false
		}
		seen = true
		return p.members(func(key []byte) bool {
			if string(key) != "reported" {
				return p.skip(2)
			}
			if fw.Version != "" {
				return false // a second "reported" after a complete one
			}
			var seenFW bool
			return p.members(func(key []byte) bool {
				if string(key) != "firmware" {
					return p.skip(3)
				}
				if seenFW {
					return false
				}
				seenFW = true
				var okFW bool
				fw, okFW = p.firmware()
				return okFW
			}) && seenFW
		}) && fw.Version != ""
	})
	return fw, ok && seen
}

// The firmware members, as bits of the set seen so far.
const (
	fwVersion = 1 << iota
	fwTimestamp
	fwStatus
	fwChecksum
	fwPrevious
	fwDuration
	fwErrorCode
)

// firmware parses the firmware object: the schema's types, lengths, enum,
// date-time and minimum, and its required members.
func (p *fastParser) firmware() (events.Firmware, bool) {
	var fw events.Firmware
	var seen int
	ok := p.members(func(key []byte) bool {
		var bit int
		switch string(key) {
		case "version":
			bit = fwVersion
		case "timestamp":
			bit = fwTimestamp
		case "status":
			bit = fwStatus
		case "checksum":
			bit = fwChecksum
		case "previousVersion":
			bit = fwPrevious
		case "updateDuration":
			bit = fwDuration
		case "errorCode":
			bit = fwErrorCode
		default:
			return p.skip(4)
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		p.space()
		switch bit {
		case fwVersion:
			s, ok := p.plain()
			if !ok || len(s) < 1 || len(s) > 64 {
				return false
			}
			fw.Version = string(s)
		case fwTimestamp:
			s, ok := p.plain()
			if !ok {
				return false
			}
			t, ok := parseTimestamp(s)
			if !ok || !schemas.ReportTimeOK(t) {
				return false
			}
			fw.Timestamp = t
		case fwStatus:
			s, ok := p.plain()
			if !ok {
				return false
			}
			switch string(s) {
			case events.StatusInProgress:
				fw.Status = events.StatusInProgress
			case events.StatusCompleted:
				fw.Status = events.StatusCompleted
			case events.StatusFailed:
				fw.Status = events.StatusFailed
			default:
				return false
			}
		case fwChecksum:
			s, ok := p.plain()
			if !ok || len(s) > 256 {
				return false
			}
			fw.Checksum = string(s)
		case fwPrevious:
			s, ok := p.plain()
			if !ok || len(s) > 64 {
				return false
			}
			fw.PreviousVersion = string(s)
		case fwDuration:
			f, ok := p.duration()
			if !ok {
				return false
			}
			fw.UpdateDuration = f
		case fwErrorCode:
			if p.literal("null") {
				return true
			}
			s, ok := p.plain()
			if !ok || len(s) > 128 {
				return false
			}
			code := string(s)
			fw.ErrorCode = &code
		}
		return true
	})
	const required = fwVersion | fwTimestamp | fwStatus
	return fw, ok && seen&required == required
}

// plain parses a string of printable ASCII without escapes and returns its
// contents (a slice of the payload).
func (p *fastParser) plain() ([]byte, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false
	}
	start := p.i + 1
	for j := start; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			p.i = j + 1
			return p.b[start:j], true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return nil, false
		}
	}
	return nil, false
}

// duration parses a non-negative JSON number below
// schemas.MaxUpdateDuration.
func (p *fastParser) duration() (float64, bool) {
	start := p.i
	if !p.scanNumber() || p.b[start] == '-' {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(p.b[start:p.i]), 64)
	if err != nil || !(f < schemas.MaxUpdateDuration) {
		return 0, false
	}
	return f, true
}

// skip checks and passes over one JSON value a report may carry besides its
// firmware, depth being the nesting of the object it is in.
func (p *fastParser) skip(depth int) bool {
	p.space()
	if p.i >= len(p.b) {
		return false
	}
	switch c := p.b[p.i]; {
	case c == '{':
		if depth >= fastMaxDepth {
			return false
		}
		return p.members(func([]byte) bool { return p.skip(depth + 1) })
	case c == '[':
		if depth >= fastMaxDepth {
			return false
		}
		p.i++
		if p.next(']') {
			return true
		}
		for {
			if !p.skip(depth + 1) {
				return false
			}
			if p.next(',') {
				continue
			}
			return p.next(']')
		}
	case c == '"':
		return p.skipString()
	case c == '-' || c >= '0' && c <= '9':
		return p.scanNumber()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	}
	return false
}

// skipString passes over a string the report carries besides its firmware:
// valid escapes, no control bytes; other bytes are taken as they are, as
// encoding/json takes them.
func (p *fastParser) skipString() bool {
	for j := p.i + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			p.i = j + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			j++
			if j >= len(p.b) {
				return false
			}
			switch p.b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(p.b) {
					return false
				}
				for _, h := range p.b[j+1 : j+5] {
					if !isHex(h) {
						return false
					}
				}
				j += 4
			default:
				return false
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// parseTimestamp parses the one RFC 3339 form the fast path takes:
// 2006-01-02T15:04:05, an optional fraction of 1 to 9 digits, then Z or
// ±hh:mm; upper-case T and Z; no leap second. Within that form the
// schema's date-time format and time.Parse agree, and time.Parse checks the
// calendar (February 30th is refused).
func parseTimestamp(s []byte) (time.Time, bool) {
	const date = len("2006-01-02T15:04:05")
	if len(s) < date+1 {
		return time.Time{}, false
	}
	for i, c := range s[:date] {
		switch i {
		case 4, 7:
			if c != '-' {
				return time.Time{}, false
			}
		case 10:
			if c != 'T' {
				return time.Time{}, false
			}
		case 13, 16:
			if c != ':' {
				return time.Time{}, false
			}
		default:
			if c < '0' || c > '9' {
				return time.Time{}, false
			}
		}
	}
	if s[11] > '2' || s[11] == '2' && s[12] > '3' || s[14] > '5' || s[17] > '5' {
		return time.Time{}, false
	}
	rest := s[date:]
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 1 || n > 10 {
			return time.Time{}, false
		}
		rest = rest[n:]
	}
	switch {
	case len(rest) == 1 && rest[0] == 'Z':
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':' &&
		rest[1] >= '0' && rest[1] <= '2' && rest[2] >= '0' && rest[2] <= '9' &&
		(rest[1] < '2' || rest[2] <= '3') &&
		rest[4] >= '0' && rest[4] <= '5' && rest[5] >= '0' && rest[5] <= '9':
	default:
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(s))
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}
