package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events/jsonscan"
)

// The wire format is written once, here: New and Marshal encode, Decode
// and DecodeData decode. Each has a fast path for what the log carries
// most (the envelope, reports, desired states, presence and REJECTED
// records), written by hand because reflection-based encoding/json cost
// about a quarter of the bridge's CPU per report and most of the
// projector's decoding. encoding/json stays the definition: a fast path
// produces the same bytes (encoding) or the same value (decoding) as
// encoding/json on the same structs, or declines and lets encoding/json
// do it, errors included. FuzzMarshal, FuzzNew, FuzzDecode and
// FuzzDecodeData hold the two to that.

// maxDataDepth bounds the nesting the fast paths look into; deeper
// documents go to encoding/json (whose limit is 10000).
const maxDataDepth = 64

// New builds an envelope around data, marshalled as JSON. id must be unique per
// event; IdentityID derives a deterministic one.
func New(id, source, typ, subject string, t time.Time, data any) (Event, error) {
	raw, err := marshalData(data)
	if err != nil {
		return Event{}, fmt.Errorf("marshal %s data: %w", typ, err)
	}
	return Event{
		SpecVersion:     SpecVersion,
		ID:              id,
		Source:          source,
		Type:            typ,
		Subject:         subject,
		Time:            t.UTC(),
		DataContentType: "application/json",
		Data:            raw,
	}, nil
}

// Encode returns the JSON of the event New(id, source, typ, subject, t,
// data) builds, the bytes its Marshal returns, in one pass: Marshal checks
// that data it did not write is in encoding/json's compact form, and
// Encode knows, having just written it. It is the publishers' hot path
// (the bridge encodes every report with it).
func Encode(id, source, typ, subject string, t time.Time, data any) ([]byte, error) {
	e := Event{SpecVersion: SpecVersion, ID: id, Source: source, Type: typ, Subject: subject,
		Time: t.UTC(), DataContentType: "application/json"}
	b, err := e.appendHead(make([]byte, 0, e.headSize()+dataSize(data)))
	if err == nil {
		if b, ok := appendData(append(b, `,"data":`...), data); ok {
			return append(b, '}'), nil
		}
	}
	// Data of a type written by encoding/json, or values it refuses (for
	// its error).
	if e, err = New(id, source, typ, subject, t, data); err != nil {
		return nil, err
	}
	return e.marshal()
}

// Marshal returns the envelope's JSON encoding: the bytes json.Marshal
// writes for e.
func (e Event) Marshal() ([]byte, error) {
	if len(e.Data) > 0 && !jsonscan.Compact(e.Data, maxDataDepth) {
		return json.Marshal(e)
	}
	return e.marshal()
}

// marshal is Marshal for an event whose data is compact (see
// jsonscan.Compact).
func (e Event) marshal() ([]byte, error) {
	b, err := e.appendHead(make([]byte, 0, e.headSize()+len(e.Data)))
	if err != nil {
		return json.Marshal(e) // for encoding/json's error
	}
	if len(e.Data) > 0 {
		b = append(b, `,"data":`...)
		b = append(b, e.Data...)
	}
	return append(b, '}'), nil
}

// headSize is about the size of the envelope without its data.
func (e *Event) headSize() int {
	return 128 + len(e.SpecVersion) + len(e.ID) + len(e.Source) + len(e.Type) + len(e.Subject) + len(e.DataContentType)
}

// appendHead appends the envelope up to its data: its opening brace and
// every member before "data"; an error for a time encoding/json refuses.
func (e *Event) appendHead(b []byte) ([]byte, error) {
	b = append(b, `{"specversion":`...)
	b = appendString(b, e.SpecVersion)
	b = append(b, `,"id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"source":`...)
	b = appendString(b, e.Source)
	b = append(b, `,"type":`...)
	b = appendString(b, e.Type)
	if e.Subject != "" {
		b = append(b, `,"subject":`...)
		b = appendString(b, e.Subject)
	}
	b = append(b, `,"time":`...)
	b, err := appendTime(b, e.Time)
	if err != nil {
		return nil, err
	}
	if e.DataContentType != "" {
		b = append(b, `,"datacontenttype":`...)
		b = appendString(b, e.DataContentType)
	}
	return b, nil
}

// Decode parses and checks an envelope: spec version, id, source, type and
// time must be present. The event's Data shares b's memory.
func Decode(b []byte) (Event, error) {
	if e, ok := decodeEnvelope(b); ok {
		return e, nil
	}
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	if err := e.check(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// check is what Decode requires of an envelope.
func (e *Event) check() error {
	if e.SpecVersion != SpecVersion {
		return fmt.Errorf("%w: specversion %q, want %q", ErrInvalidEvent, e.SpecVersion, SpecVersion)
	}
	var missing []string
	if e.ID == "" {
		missing = append(missing, "id")
	}
	if e.Source == "" {
		missing = append(missing, "source")
	}
	if e.Type == "" {
		missing = append(missing, "type")
	}
	if e.Time.IsZero() {
		missing = append(missing, "time")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s", ErrInvalidEvent, strings.Join(missing, ", "))
	}
	return nil
}

// DecodeData unmarshals the event's data into v, as json.Unmarshal does.
func (e Event) DecodeData(v any) error {
	if decodeData(e.Data, v) {
		return nil
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("decode %s data of event %s: %w", e.Type, e.ID, err)
	}
	return nil
}
