package bridge

import (
	"strconv"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/events/jsonscan"
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
// It reads with the scanner of events' own decoder (events/jsonscan).
// A declined report goes through the schema path (decodeSchema), which
// accepts it or gives the reason. So the schema stays the one definition of
// a valid report; FuzzDecodeFast checks that whatever this path accepts,
// the schema path accepts with the same firmware.
func decodeFast(payload []byte) (events.Firmware, bool) {
	s := jsonscan.New(payload)
	fw, ok := readReport(&s)
	return fw, ok && s.End()
}

// fastMaxDepth bounds nesting in the parts of a report the fast path
// skips. encoding/json allows 10000; deeper documents are declined and
// judged by the schema path.
const fastMaxDepth = 64

// readReport parses {"state":{"reported":{"firmware":{...}}}} with any other
// members skipped.
func readReport(s *jsonscan.Scanner) (events.Firmware, bool) {
	var fw events.Firmware
	var seen bool
	ok := s.Members(func(key []byte) bool {
		if string(key) != "state" {
			return s.Skip(1, fastMaxDepth)
		}
		if seen {
			return false
		}
		seen = true
		return s.Members(func(key []byte) bool {
			if string(key) != "reported" {
				return s.Skip(2, fastMaxDepth)
			}
			if fw.Version != "" {
				return false // a second "reported" after a complete one
			}
			var seenFW bool
			return s.Members(func(key []byte) bool {
				if string(key) != "firmware" {
					return s.Skip(3, fastMaxDepth)
				}
				if seenFW {
					return false
				}
				seenFW = true
				var okFW bool
				fw, okFW = readFirmware(s)
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

// readFirmware parses the firmware object: the schema's types, lengths, enum,
// date-time and minimum, and its required members.
func readFirmware(s *jsonscan.Scanner) (events.Firmware, bool) {
	var fw events.Firmware
	var seen int
	ok := s.Members(func(key []byte) bool {
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
			return s.Skip(4, fastMaxDepth)
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		switch bit {
		case fwVersion:
			v, ok := s.Plain()
			if !ok || len(v) < 1 || len(v) > 64 {
				return false
			}
			fw.Version = string(v)
		case fwTimestamp:
			v, ok := s.Plain()
			if !ok {
				return false
			}
			t, ok := parseTimestamp(v)
			if !ok || !schemas.ReportTimeOK(t) {
				return false
			}
			fw.Timestamp = t
		case fwStatus:
			v, ok := s.Plain()
			if !ok {
				return false
			}
			switch string(v) {
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
			v, ok := s.Plain()
			if !ok || len(v) > 256 {
				return false
			}
			fw.Checksum = string(v)
		case fwPrevious:
			v, ok := s.Plain()
			if !ok || len(v) > 64 {
				return false
			}
			fw.PreviousVersion = string(v)
		case fwDuration:
			f, ok := duration(s)
			if !ok {
				return false
			}
			fw.UpdateDuration = f
		case fwErrorCode:
			if s.Null() {
				return true
			}
			v, ok := s.Plain()
			if !ok || len(v) > 128 {
				return false
			}
			code := string(v)
			fw.ErrorCode = &code
		}
		return true
	})
	const required = fwVersion | fwTimestamp | fwStatus
	return fw, ok && seen&required == required
}

// duration parses a non-negative JSON number below
// schemas.MaxUpdateDuration.
func duration(s *jsonscan.Scanner) (float64, bool) {
	lit, ok := s.Number()
	if !ok || lit[0] == '-' {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err != nil || !(f < schemas.MaxUpdateDuration) {
		return 0, false
	}
	return f, true
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
	nsec := 0
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			nsec = nsec*10 + int(rest[n]-'0')
			n++
		}
		if n == 1 || n > 10 {
			return time.Time{}, false
		}
		for range 10 - n {
			nsec *= 10
		}
		rest = rest[n:]
	}
	switch {
	case len(rest) == 1 && rest[0] == 'Z':
		// The form devices send: the checked digits make the time
		// directly (a time.Parse was a tenth of the fast path). A date
		// the calendar does not have (February 30th) is normalised by
		// time.Date, and so told apart.
		num := func(i, n int) int {
			v := 0
			for _, c := range s[i : i+n] {
				v = v*10 + int(c-'0')
			}
			return v
		}
		year, month, day := num(0, 4), time.Month(num(5, 2)), num(8, 2)
		t := time.Date(year, month, day, num(11, 2), num(14, 2), num(17, 2), nsec, time.UTC)
		if t.Day() != day || t.Month() != month || t.Year() != year {
			return time.Time{}, false
		}
		return t, true
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
