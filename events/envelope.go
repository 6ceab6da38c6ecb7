package events

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// SpecVersion is the CloudEvents version of every envelope.
const SpecVersion = "1.0"

// Event is a CloudEvents 1.0 envelope in its JSON form. Data holds the
// type-specific payload (see the *Data types of this package).
type Event struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
}

// ErrInvalidEvent is wrapped by Decode when bytes are not a valid envelope.
var ErrInvalidEvent = errors.New("invalid event")

// New builds an envelope around data, marshalled as JSON. id must be unique per
// event; IdentityID derives a deterministic one.
func New(id, source, typ, subject string, t time.Time, data any) (Event, error) {
	raw, err := json.Marshal(data)
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

// Marshal returns the envelope's JSON encoding.
func (e Event) Marshal() ([]byte, error) { return json.Marshal(e) }

// DecodeData unmarshals the event's data into v.
func (e Event) DecodeData(v any) error {
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("decode %s data of event %s: %w", e.Type, e.ID, err)
	}
	return nil
}

// Decode parses and checks an envelope: spec version, id, source, type and
// time must be present.
func Decode(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	var missing []string
	if e.SpecVersion != SpecVersion {
		return Event{}, fmt.Errorf("%w: specversion %q, want %q", ErrInvalidEvent, e.SpecVersion, SpecVersion)
	}
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
		return Event{}, fmt.Errorf("%w: missing %s", ErrInvalidEvent, strings.Join(missing, ", "))
	}
	return e, nil
}

// IdentityID derives a deterministic event id from the parts that identify an
// occurrence, so that the same occurrence published twice has the same id and
// is stored once (the id doubles as the Nats-Msg-Id).
func IdentityID(prefix string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return prefix + "-" + hex.EncodeToString(h.Sum(nil)[:16])
}
