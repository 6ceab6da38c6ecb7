package events

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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

// identityOf is IdentityID(prefix, parts...) for parts already joined,
// each followed by a zero byte.
func identityOf(prefix string, joined []byte) string {
	sum := sha256.Sum256(joined)
	var buf [64]byte
	b := append(append(buf[:0], prefix...), '-')
	return string(hex.AppendEncode(b, sum[:16]))
}
