package events

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// marshalData is json.Marshal(data), written by hand for the data types
// of the SHADOW and REJECTED streams (values or pointers) and left to
// encoding/json for the others.
func marshalData(data any) ([]byte, error) {
	if b, ok := appendData(nil, data); ok {
		return b, nil
	}
	return json.Marshal(data)
}

// appendData appends json.Marshal(data) for the types it writes by hand;
// false for the others, and for a time or a number encoding/json refuses
// (whose error it gives).
func appendData(b []byte, data any) ([]byte, bool) {
	var err error
	switch d := data.(type) {
	case ShadowReportedData:
		b, err = appendReported(b, &d)
	case *ShadowReportedData:
		if d == nil {
			return append(b, "null"...), true
		}
		b, err = appendReported(b, d)
	case ShadowDesiredData:
		b = appendDesired(b, &d)
	case *ShadowDesiredData:
		if d == nil {
			return append(b, "null"...), true
		}
		b = appendDesired(b, d)
	case DevicePresenceData:
		b, err = appendPresence(b, &d)
	case *DevicePresenceData:
		if d == nil {
			return append(b, "null"...), true
		}
		b, err = appendPresence(b, d)
	case RejectedData:
		b = appendRejected(b, &d)
	case *RejectedData:
		if d == nil {
			return append(b, "null"...), true
		}
		b = appendRejected(b, d)
	default:
		return b, false
	}
	return b, err == nil
}

// dataSize is about the size of data's JSON, for a buffer that holds it
// without growing (0 when unknown).
func dataSize(data any) int {
	switch d := data.(type) {
	case *ShadowReportedData:
		return reportedSize(d)
	case ShadowReportedData:
		return reportedSize(&d)
	case *RejectedData:
		return rejectedSize(d)
	case RejectedData:
		return rejectedSize(&d)
	}
	return 256
}

// reportedSize: the fixed text, a time and a duration are under 300
// bytes; the rest is the strings.
func reportedSize(d *ShadowReportedData) int {
	fw := &d.Firmware
	n := 300 + len(d.TypeID) + len(d.DeviceID) + len(d.Topic) +
		len(fw.Version) + len(fw.Status) + len(fw.Checksum) + len(fw.PreviousVersion) + len(d.PayloadSHA256)
	if fw.ErrorCode != nil {
		n += len(*fw.ErrorCode)
	}
	return n
}

func rejectedSize(d *RejectedData) int {
	return 200 + len(d.Source) + len(d.Reason) + len(d.Topic) + len(d.Stream) + len(d.SHA256) +
		base64.StdEncoding.EncodedLen(len(d.Raw))
}

func appendReported(b []byte, d *ShadowReportedData) ([]byte, error) {
	fw := &d.Firmware
	if b == nil {
		b = make([]byte, 0, reportedSize(d))
	}
	b = append(b, `{"typeId":`...)
	b = appendString(b, d.TypeID)
	b = append(b, `,"deviceId":`...)
	b = appendString(b, d.DeviceID)
	b = append(b, `,"topic":`...)
	b = appendString(b, d.Topic)
	b = append(b, `,"firmware":{"version":`...)
	b = appendString(b, fw.Version)
	b = append(b, `,"timestamp":`...)
	b, err := appendTime(b, fw.Timestamp)
	if err != nil {
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
	b = append(b, '}')
	if d.PayloadSHA256 != "" {
		b = append(b, `,"payloadSha256":`...)
		b = appendString(b, d.PayloadSHA256)
	}
	return append(b, '}'), nil
}

func appendDesired(b []byte, d *ShadowDesiredData) []byte {
	b = append(b, `{"typeId":`...)
	b = appendString(b, d.TypeID)
	b = append(b, `,"deviceId":`...)
	b = appendString(b, d.DeviceID)
	b = append(b, `,"jobId":`...)
	b = appendString(b, d.JobID)
	b = append(b, `,"wave":`...)
	b = strconv.AppendInt(b, int64(d.Wave), 10)
	b = append(b, `,"firmware":{"version":`...)
	b = appendString(b, d.Firmware.Version)
	b = append(b, `,"checksum":`...)
	b = appendString(b, d.Firmware.Checksum)
	b = append(b, `,"url":`...)
	b = appendString(b, d.Firmware.URL)
	b = append(b, '}')
	if d.Attempt != 0 {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(d.Attempt), 10)
	}
	return append(b, '}')
}

func appendPresence(b []byte, d *DevicePresenceData) ([]byte, error) {
	b = append(b, `{"typeId":`...)
	b = appendString(b, d.TypeID)
	b = append(b, `,"deviceId":`...)
	b = appendString(b, d.DeviceID)
	b = append(b, `,"state":`...)
	b = appendString(b, d.State)
	b = append(b, `,"lastSeen":`...)
	b, err := appendTime(b, d.LastSeen)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

func appendRejected(b []byte, d *RejectedData) []byte {
	if b == nil {
		b = make([]byte, 0, rejectedSize(d))
	}
	b = append(b, `{"source":`...)
	b = appendString(b, d.Source)
	b = append(b, `,"reason":`...)
	b = appendString(b, d.Reason)
	if d.Topic != "" {
		b = append(b, `,"topic":`...)
		b = appendString(b, d.Topic)
	}
	if d.Stream != "" {
		b = append(b, `,"stream":`...)
		b = appendString(b, d.Stream)
	}
	if d.StreamSeq != 0 {
		b = append(b, `,"streamSeq":`...)
		b = strconv.AppendUint(b, d.StreamSeq, 10)
	}
	b = append(b, `,"raw":`...)
	if d.Raw == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, d.Raw)
		b = append(b, '"')
	}
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, d.Size, 10)
	if d.SHA256 != "" {
		b = append(b, `,"sha256":`...)
		b = appendString(b, d.SHA256)
	}
	if d.Truncated {
		b = append(b, `,"truncated":true`...)
	}
	return append(b, '}')
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

// appendTime appends t as time.Time's MarshalJSON does, and fails where it
// does (a year outside 0-9999, an offset of 24 hours or more).
func appendTime(b []byte, t time.Time) ([]byte, error) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		return nil, err
	}
	return append(b, '"'), nil
}

// appendFloat appends f as encoding/json writes a float64, and fails
// where it does (NaN, infinities).
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, &json.UnsupportedValueError{Str: strconv.FormatFloat(f, 'g', -1, 64)}
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
