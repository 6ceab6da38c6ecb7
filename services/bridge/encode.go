package bridge

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/otawatch/otawatch/events"
)

// encodeReportEvent returns the JSON of the TypeShadowReported envelope of
// d: the same bytes as events.New(id, events.SourceBridge,
// events.TypeShadowReported, subject, t, d) followed by Marshal, written
// directly. Reflection-based encoding of the data and then of the envelope
// (which re-scans the data) cost as much as a quarter of the bridge's CPU
// per report. TestEncodeReportEventMatchesEvents and FuzzDecodeReport check
// that the bytes are the same.
func encodeReportEvent(id, subject string, t time.Time, d *events.ShadowReportedData) ([]byte, error) {
	fw := &d.Firmware
	// The fixed text, two times and a duration are under 480 bytes; the
	// rest is the strings. One allocation of about the event's size.
	size := 480 + len(id) + len(subject) + len(d.TypeID) + len(d.DeviceID) + len(d.Topic) +
		len(fw.Version) + len(fw.Checksum) + len(fw.PreviousVersion)
	if fw.ErrorCode != nil {
		size += len(*fw.ErrorCode)
	}
	b := make([]byte, 0, size)
	b = append(b, `{"specversion":`...)
	b = appendString(b, events.SpecVersion)
	b = append(b, `,"id":`...)
	b = appendString(b, id)
	b = append(b, `,"source":`...)
	b = appendString(b, events.SourceBridge)
	b = append(b, `,"type":`...)
	b = appendString(b, events.TypeShadowReported)
	if subject != "" {
		b = append(b, `,"subject":`...)
		b = appendString(b, subject)
	}
	b = append(b, `,"time":`...)
	b, err := appendTime(b, t.UTC())
	if err != nil {
		return nil, err
	}
	b = append(b, `,"datacontenttype":"application/json","data":{"typeId":`...)
	b = appendString(b, d.TypeID)
	b = append(b, `,"deviceId":`...)
	b = appendString(b, d.DeviceID)
	b = append(b, `,"topic":`...)
	b = appendString(b, d.Topic)
	b = append(b, `,"firmware":{"version":`...)
	b = appendString(b, fw.Version)
	b = append(b, `,"timestamp":`...)
	if b, err = appendTime(b, fw.Timestamp); err != nil {
		return nil, err
	}
	b = append(b, `,"status":`...)
	b = appendString(b, fw.Status)
	if fw.Checksum != "" {
		b = append(b, `,"checksum":`...)
		b = appendString(b, fw.Checksum)
	}
	if fw.PreviousVersion != "" {
		b = append(b, `,"previousVersion":`...)
		b = appendString(b, fw.PreviousVersion)
	}
	if fw.UpdateDuration != 0 {
		b = append(b, `,"updateDuration":`...)
		if b, err = appendFloat(b, fw.UpdateDuration); err != nil {
			return nil, err
		}
	}
	b = append(b, `,"errorCode":`...)
	if fw.ErrorCode == nil {
		b = append(b, "null"...)
	} else {
		b = appendString(b, *fw.ErrorCode)
	}
	b = append(b, "}}}"...)
	return b, nil
}

// appendString appends s as encoding/json writes it. Strings of printable
// ASCII without the characters it escapes (" \ < > &) are copied; anything
// else goes through encoding/json itself, so escaping is never a second
// implementation.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s) // a string always encodes
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendTime appends t as time.Time.MarshalJSON does.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		enc, err := json.Marshal(t)
		if err != nil {
			return nil, err
		}
		return append(b, enc...), nil
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

// appendFloat appends f as encoding/json writes a float64.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		enc, err := json.Marshal(f)
		return append(b, enc...), err
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		if n := len(b) - start; n >= 4 && b[len(b)-4] == 'e' && b[len(b)-3] == '-' && b[len(b)-2] == '0' {
			b[len(b)-2] = b[len(b)-1]
			b = b[:len(b)-1]
		}
	}
	return b, nil
}
