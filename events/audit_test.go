package events_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"github.com/otawatch/otawatch/events"
)

// TestChainNext pins the chain to its definition, written out the way an
// auditor would, and to a known value, so a change to either is seen.
// knownHead is ChainNext of the test's first event, pinned.
const knownHead = "904c38bdb5b86c9b7914a369d890197b93df09f187868a0094d3f5717d9e168d"

func TestChainNext(t *testing.T) {
	var h0 events.ChainHead
	data := []byte(`{"specversion":"1.0"}`)
	got := events.ChainNext(h0, "SHADOW", 7, "shadow.reported.gateway.dev-1", data)

	var b []byte
	b = append(b, make([]byte, 32)...)
	b = binary.BigEndian.AppendUint32(b, 6)
	b = append(b, "SHADOW"...)
	b = binary.BigEndian.AppendUint64(b, 7)
	b = binary.BigEndian.AppendUint32(b, uint32(len("shadow.reported.gateway.dev-1")))
	b = append(b, "shadow.reported.gateway.dev-1"...)
	d := sha256.Sum256(data)
	b = append(b, d[:]...)
	if want := sha256.Sum256(b); got != events.ChainHead(want) {
		t.Fatalf("ChainNext = %x, want %x", got, want)
	}
	next := events.ChainNext(got, "SHADOW", 8, "shadow.reported.gateway.dev-1", data)
	if next == got {
		t.Fatal("the chain did not move")
	}
	if got := hex.EncodeToString(got[:]); got != knownHead {
		t.Errorf("ChainNext = %s, want the pinned %s", got, knownHead)
	}
	for _, tc := range []struct {
		name string
		h    events.ChainHead
	}{
		{"other stream", events.ChainNext(h0, "ROLLOUT", 7, "shadow.reported.gateway.dev-1", data)},
		{"other seq", events.ChainNext(h0, "SHADOW", 8, "shadow.reported.gateway.dev-1", data)},
		{"other subject", events.ChainNext(h0, "SHADOW", 7, "shadow.reported.gateway.dev-2", data)},
		{"other data", events.ChainNext(h0, "SHADOW", 7, "shadow.reported.gateway.dev-1", []byte(`{}`))},
		{"shifted boundary", events.ChainNext(h0, "SHADOWs", 7, "hadow.reported.gateway.dev-1", data)},
	} {
		if tc.h == got {
			t.Errorf("%s: same chain value", tc.name)
		}
	}
}
