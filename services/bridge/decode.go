package bridge

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/schemas"
)

// RejectError is a report the bridge refuses. Its message is the reason
// recorded on REJECTED, written for a person: it names the topic part or the
// payload field that is wrong and what was wrong with it.
type RejectError struct {
	Reason string
}

func (e *RejectError) Error() string { return e.Reason }

func reject(format string, args ...any) error {
	return &RejectError{Reason: fmt.Sprintf(format, args...)}
}

// Decoder checks and decodes shadow reports against the embedded schema,
// which it compiles once. It is safe for concurrent use.
type Decoder struct {
	schema *jsonschema.Schema
}

// NewDecoder compiles schemas.ShadowReport.
func NewDecoder() (*Decoder, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemas.ShadowReport))
	if err != nil {
		return nil, fmt.Errorf("parse shadow report schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	// format is only an annotation in draft 2020-12 unless asserted; a
	// timestamp that is not a date-time must be refused, not noted.
	c.AssertFormat()
	if err := c.AddResource(schemas.ShadowReportID, doc); err != nil {
		return nil, fmt.Errorf("add shadow report schema: %w", err)
	}
	sch, err := c.Compile(schemas.ShadowReportID)
	if err != nil {
		return nil, fmt.Errorf("compile shadow report schema: %w", err)
	}
	return &Decoder{schema: sch}, nil
}

// defaultDecoder compiles the embedded schema once, on first use, for
// DecodeReport. It holds no state beyond that compiled, read-only schema.
var defaultDecoder = sync.OnceValues(NewDecoder)

// DecodeReport checks one MQTT report and returns the data of its
// TypeShadowReported event: the payload's size (maxPayload bytes at most,
// 0 for no limit), the topic (events.ParseReportTopic, which also checks the
// type and device ids), the payload's JSON and its schema. A refusal is a
// *RejectError whose message is the reason recorded on REJECTED. It is pure:
// no I/O, no clock.
func DecodeReport(topic string, payload []byte, maxPayload int) (events.ShadowReportedData, error) {
	d, err := defaultDecoder()
	if err != nil {
		return events.ShadowReportedData{}, err
	}
	return d.Decode(topic, payload, maxPayload)
}

// Decode is DecodeReport with this decoder's schema.
func (d *Decoder) Decode(topic string, payload []byte, maxPayload int) (events.ShadowReportedData, error) {
	if maxPayload > 0 && len(payload) > maxPayload {
		return events.ShadowReportedData{}, reject("payload is %d bytes, the limit is %d", len(payload), maxPayload)
	}
	typeID, deviceID, err := events.ParseReportTopic(topic)
	if err != nil {
		// ParseReportTopic names the topic or the id that is wrong.
		if msg := err.Error(); strings.HasPrefix(msg, "topic ") {
			return events.ShadowReportedData{}, reject("%s", msg)
		}
		return events.ShadowReportedData{}, reject("topic: %v", err)
	}
	fw, ok := decodeFast(payload)
	if !ok {
		if fw, err = d.decodeSchema(payload); err != nil {
			return events.ShadowReportedData{}, err
		}
	}
	sum := sha256.Sum256(payload)
	return events.ShadowReportedData{TypeID: typeID, DeviceID: deviceID, Topic: topic, Firmware: fw,
		PayloadSHA256: hex.EncodeToString(sum[:])}, nil
}

// decodeSchema reads the firmware of a payload the fast path declined: it
// parses the JSON, validates it against the schema and gives the reason for
// a refusal.
func (d *Decoder) decodeSchema(payload []byte) (events.Firmware, error) {
	if len(bytes.TrimSpace(payload)) == 0 {
		return events.Firmware{}, reject("payload is empty")
	}
	doc, err := parseJSON(payload)
	if err != nil {
		return events.Firmware{}, reject("payload is not JSON: %s", jsonErrorText(err, payload))
	}
	if err := d.schema.Validate(doc); err != nil {
		var verr *jsonschema.ValidationError
		if errors.As(err, &verr) {
			return events.Firmware{}, reject("%s", schemaReason(verr, doc))
		}
		return events.Firmware{}, reject("payload: %v", err)
	}
	return firmwareFrom(doc)
}

// firmwareFrom reads the firmware of a document that passed the schema. It
// takes the values from the document already decoded for validation rather
// than decoding the payload a second time; the checks that remain are the
// ones the schema cannot make (a date-time Go cannot represent or outside
// the window schemas.ReportTimeOK accepts, a number beyond float64).
func firmwareFrom(doc any) (events.Firmware, error) {
	const at = "state.reported.firmware"
	obj, _ := lookup(doc, "state", "reported", "firmware").(map[string]any)
	if obj == nil {
		// The schema requires it; this guards a schema edit.
		return events.Firmware{}, reject("%s is missing", at)
	}
	str := func(k string) string { s, _ := obj[k].(string); return s }
	fw := events.Firmware{
		Version:         str("version"),
		Status:          str("status"),
		Checksum:        str("checksum"),
		PreviousVersion: str("previousVersion"),
	}
	ts, err := time.Parse(time.RFC3339Nano, str("timestamp"))
	if err != nil {
		return events.Firmware{}, reject("%s.timestamp: %q is not an RFC 3339 date-time: %v", at, str("timestamp"), err)
	}
	if !schemas.ReportTimeOK(ts) {
		// A time the read models cannot store (ClickHouse would keep
		// 0000-00-00 00:00:00 with no error) or a clock never set.
		return events.Firmware{}, reject("%s.timestamp: %q is outside the accepted window %s to %s", at, str("timestamp"),
			schemas.ReportTimeFrom, schemas.ReportTimeUntil)
	}
	fw.Timestamp = ts
	if n, ok := obj["updateDuration"].(json.Number); ok {
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil || math.IsInf(f, 0) {
			return events.Firmware{}, reject("%s.updateDuration: %s is out of range", at, n)
		}
		fw.UpdateDuration = f
	}
	if s, ok := obj["errorCode"].(string); ok {
		fw.ErrorCode = &s
	}
	return fw, nil
}

func lookup(doc any, path ...string) any {
	for _, k := range path {
		m, ok := doc.(map[string]any)
		if !ok {
			return nil
		}
		doc = m[k]
	}
	return doc
}

// jsonErrorText says where a JSON syntax error is.
func jsonErrorText(err error, payload []byte) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%v (at byte %d)", se.Error(), se.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Sprintf("it ends unexpectedly after %d bytes", len(payload))
	}
	return err.Error()
}

var printer = message.NewPrinter(language.English)

// schemaReason turns a schema validation error into one line per problem,
// each naming the field by its dotted path and what is wrong with its
// value, e.g. `state.reported.firmware.status: "done" is not one of
// in_progress, completed, failed`.
func schemaReason(verr *jsonschema.ValidationError, doc any) string {
	var lines []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		lines = append(lines, leafReason(e, doc))
	}
	walk(verr)
	sort.Strings(lines)
	lines = dedup(lines)
	if len(lines) == 0 {
		return "payload does not match the shadow report schema"
	}
	return strings.Join(lines, "; ")
}

func dedup(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func leafReason(e *jsonschema.ValidationError, doc any) string {
	path := dotted(e.InstanceLocation)
	val := lookup(doc, e.InstanceLocation...)
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		missing := make([]string, len(k.Missing))
		for i, m := range k.Missing {
			missing[i] = join(path, m)
		}
		if len(missing) == 1 {
			return missing[0] + " is missing"
		}
		return strings.Join(missing, ", ") + " are missing"
	case *kind.Type:
		want := strings.Join(k.Want, " or ")
		if shown := show(val); shown == "null" || strings.HasPrefix(shown, "an ") {
			return fmt.Sprintf("%s: is %s, want %s", orPayload(path), shown, want)
		}
		return fmt.Sprintf("%s: %s is %s, want %s", orPayload(path), show(val), article(k.Got), want)
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = fmt.Sprint(w)
		}
		return fmt.Sprintf("%s: %s is not one of %s", orPayload(path), show(val), strings.Join(want, ", "))
	case *kind.Format:
		return fmt.Sprintf("%s: %s is not a valid %s", orPayload(path), show(val), k.Want)
	case *kind.Minimum:
		return fmt.Sprintf("%s: %s is less than %s", orPayload(path), show(val), k.Want.FloatString(0))
	case *kind.Maximum:
		return fmt.Sprintf("%s: %s is more than %s", orPayload(path), show(val), k.Want.FloatString(0))
	case *kind.MinLength:
		if k.Want == 1 {
			return fmt.Sprintf("%s: is empty", orPayload(path))
		}
		return fmt.Sprintf("%s: %s is shorter than %d characters", orPayload(path), show(val), k.Want)
	case *kind.MaxLength:
		return fmt.Sprintf("%s: is %d characters long, the limit is %d", orPayload(path), k.Got, k.Want)
	default:
		return fmt.Sprintf("%s: %s", orPayload(path), e.ErrorKind.LocalizedString(printer))
	}
}

func dotted(loc []string) string { return strings.Join(loc, ".") }

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func orPayload(path string) string {
	if path == "" {
		return "payload"
	}
	return path
}

// show renders a JSON value for a reason, shortened so a reason stays one
// readable line whatever the device sent.
func show(v any) string {
	const max = 80
	switch v := v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case nil:
		return "null"
	case string:
		if len(v) > max {
			cut := max
			for cut > 0 && !utf8.RuneStart(v[cut]) {
				cut--
			}
			return strconv.Quote(v[:cut]) + "..."
		}
		return strconv.Quote(v)
	default:
		// json.Number (digits only) or bool.
		s := fmt.Sprint(v)
		if len(s) > max {
			s = s[:max] + "..."
		}
		return s
	}
}

// article puts "a" or "an" before a JSON type name ("an object"); null
// stays null.
func article(typ string) string {
	switch typ {
	case "null":
		return "null"
	case "object", "array", "integer":
		return "an " + typ
	}
	return "a " + typ
}
