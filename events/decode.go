package events

import (
	"strconv"
	"time"

	"github.com/otawatch/otawatch/events/jsonscan"
)

// The decoding fast paths read the plain form otawatch writes (its own
// keys, spelled exactly, once each; strings without escapes). Anything
// else (an unknown or differently-cased key, a repeated one, an escape, a
// type mismatch, broken JSON) makes them decline, and encoding/json
// decides what the bytes are.

// decodeEnvelope reads a valid envelope; Data aliases raw.
func decodeEnvelope(raw []byte) (Event, bool) {
	var e Event
	var m seen
	s := jsonscan.New(raw)
	ok := s.Members(func(key []byte) bool {
		switch string(key) {
		case "specversion":
			return m.first(0) && str(&s, &e.SpecVersion)
		case "id":
			return m.first(1) && str(&s, &e.ID)
		case "source":
			return m.first(2) && str(&s, &e.Source)
		case "type":
			return m.first(3) && str(&s, &e.Type)
		case "subject":
			return m.first(4) && str(&s, &e.Subject)
		case "time":
			return m.first(5) && timeValue(&s, &e.Time)
		case "datacontenttype":
			return m.first(6) && str(&s, &e.DataContentType)
		case "data":
			if !m.first(7) {
				return false
			}
			// As json.RawMessage: the value's bytes, "null" included.
			v, ok := s.Value(maxDataDepth)
			e.Data = v
			return ok
		}
		return false
	})
	if !ok || !s.End() || e.check() != nil {
		// An invalid envelope goes to encoding/json for its error.
		return Event{}, false
	}
	return e, true
}

// decodeData is json.Unmarshal(data, v) for the SHADOW data types, when
// v points to a zero value (json.Unmarshal into a filled one merges); false
// leaves v as it was.
func decodeData(data []byte, v any) bool {
	switch v := v.(type) {
	case *ShadowReportedData:
		if v == nil || *v != (ShadowReportedData{}) {
			return false
		}
		d, ok := decodeReported(data)
		if ok {
			*v = d
		}
		return ok
	case *ShadowDesiredData:
		if v == nil || *v != (ShadowDesiredData{}) {
			return false
		}
		d, ok := decodeDesired(data)
		if ok {
			*v = d
		}
		return ok
	case *DevicePresenceData:
		if v == nil || *v != (DevicePresenceData{}) {
			return false
		}
		d, ok := decodePresence(data)
		if ok {
			*v = d
		}
		return ok
	}
	return false
}

func decodeReported(data []byte) (ShadowReportedData, bool) {
	var d ShadowReportedData
	var m seen
	s := jsonscan.New(data)
	if s.Null() {
		return d, s.End()
	}
	ok := s.Members(func(key []byte) bool {
		switch string(key) {
		case "typeId":
			return m.first(0) && str(&s, &d.TypeID)
		case "deviceId":
			return m.first(1) && str(&s, &d.DeviceID)
		case "topic":
			return m.first(2) && str(&s, &d.Topic)
		case "firmware":
			if !m.first(3) {
				return false
			}
			if s.Null() {
				return true
			}
			var fm seen
			fw := &d.Firmware
			return s.Members(func(key []byte) bool {
				switch string(key) {
				case "version":
					return fm.first(0) && str(&s, &fw.Version)
				case "timestamp":
					return fm.first(1) && timeValue(&s, &fw.Timestamp)
				case "status":
					return fm.first(2) && str(&s, &fw.Status)
				case "checksum":
					return fm.first(3) && str(&s, &fw.Checksum)
				case "previousVersion":
					return fm.first(4) && str(&s, &fw.PreviousVersion)
				case "updateDuration":
					return fm.first(5) && float(&s, &fw.UpdateDuration)
				case "errorCode":
					if !fm.first(6) {
						return false
					}
					if s.Null() {
						fw.ErrorCode = nil
						return true
					}
					v, ok := s.Plain()
					if ok {
						code := string(v)
						fw.ErrorCode = &code
					}
					return ok
				}
				return false
			})
		case "payloadSha256":
			return m.first(4) && str(&s, &d.PayloadSHA256)
		}
		return false
	})
	return d, ok && s.End()
}

func decodeDesired(data []byte) (ShadowDesiredData, bool) {
	var d ShadowDesiredData
	var m seen
	s := jsonscan.New(data)
	if s.Null() {
		return d, s.End()
	}
	ok := s.Members(func(key []byte) bool {
		switch string(key) {
		case "typeId":
			return m.first(0) && str(&s, &d.TypeID)
		case "deviceId":
			return m.first(1) && str(&s, &d.DeviceID)
		case "jobId":
			return m.first(2) && str(&s, &d.JobID)
		case "wave":
			return m.first(3) && integer(&s, &d.Wave)
		case "attempt":
			return m.first(4) && integer(&s, &d.Attempt)
		case "firmware":
			if !m.first(5) {
				return false
			}
			if s.Null() {
				return true
			}
			var fm seen
			fw := &d.Firmware
			return s.Members(func(key []byte) bool {
				switch string(key) {
				case "version":
					return fm.first(0) && str(&s, &fw.Version)
				case "checksum":
					return fm.first(1) && str(&s, &fw.Checksum)
				case "url":
					return fm.first(2) && str(&s, &fw.URL)
				}
				return false
			})
		}
		return false
	})
	return d, ok && s.End()
}

func decodePresence(data []byte) (DevicePresenceData, bool) {
	var d DevicePresenceData
	var m seen
	s := jsonscan.New(data)
	if s.Null() {
		return d, s.End()
	}
	ok := s.Members(func(key []byte) bool {
		switch string(key) {
		case "typeId":
			return m.first(0) && str(&s, &d.TypeID)
		case "deviceId":
			return m.first(1) && str(&s, &d.DeviceID)
		case "state":
			return m.first(2) && str(&s, &d.State)
		case "lastSeen":
			return m.first(3) && timeValue(&s, &d.LastSeen)
		}
		return false
	})
	return d, ok && s.End()
}

// seen tracks the keys of an object already read, to decline a repeated
// one (encoding/json keeps the last).
type seen uint32

func (m *seen) first(bit int) bool {
	if *m&(1<<bit) != 0 {
		return false
	}
	*m |= 1 << bit
	return true
}

// str reads a plain string into dst; null leaves dst as it is, as
// encoding/json does.
func str(s *jsonscan.Scanner, dst *string) bool {
	if s.Null() {
		return true
	}
	v, ok := s.Plain()
	if ok {
		*dst = intern(v)
	}
	return ok
}

// intern returns the values every event repeats (spec version, content
// type, sources, types, statuses) without allocating a string for each.
func intern(b []byte) string {
	switch string(b) { // no allocation: the compiler compares in place
	case SpecVersion:
		return SpecVersion
	case "application/json":
		return "application/json"
	case SourceBridge:
		return SourceBridge
	case SourceRollout:
		return SourceRollout
	case SourceAlerting:
		return SourceAlerting
	case TypeShadowReported:
		return TypeShadowReported
	case TypeShadowDesired:
		return TypeShadowDesired
	case TypeDevicePresence:
		return TypeDevicePresence
	case StatusInProgress:
		return StatusInProgress
	case StatusCompleted:
		return StatusCompleted
	case StatusFailed:
		return StatusFailed
	case PresenceOnline:
		return PresenceOnline
	case PresenceOffline:
		return PresenceOffline
	case PresencePotentiallyOffline:
		return PresencePotentiallyOffline
	}
	return string(b)
}

// timeValue reads a time as time.Time's UnmarshalJSON does (strict RFC
// 3339); null leaves dst as it is.
func timeValue(s *jsonscan.Scanner, dst *time.Time) bool {
	if s.Null() {
		return true
	}
	v, ok := s.Plain()
	return ok && dst.UnmarshalText(v) == nil
}

// float reads a number into a float64 as encoding/json does; null leaves
// dst as it is.
func float(s *jsonscan.Scanner, dst *float64) bool {
	if s.Null() {
		return true
	}
	lit, ok := s.Number()
	if !ok {
		return false
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	*dst = f
	return err == nil
}

// integer reads a number into an int as encoding/json does; null leaves
// dst as it is.
func integer(s *jsonscan.Scanner, dst *int) bool {
	if s.Null() {
		return true
	}
	lit, ok := s.Number()
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(string(lit), 10, strconv.IntSize)
	*dst = int(n)
	return err == nil
}
