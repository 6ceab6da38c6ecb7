package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/otawatch/otawatch/events"
)

type ed25519PublicKey = ed25519.PublicKey

// WriteKeyPairForTest writes a key pair into a temporary directory with
// WriteKeyPair and loads the private key back.
func WriteKeyPairForTest(t *testing.T) (ed25519.PrivateKey, error) {
	dir := t.TempDir()
	if _, err := WriteKeyPair(filepath.Join(dir, "audit.key"), filepath.Join(dir, "audit.pub")); err != nil {
		return nil, err
	}
	return LoadPrivateKey(filepath.Join(dir, "audit.key"))
}

func newRecordFromBytes(r Record, data []byte, prev events.ChainHead) Record {
	sum := sha256.Sum256(data)
	r.SHA256 = hex.EncodeToString(sum[:])
	r.Chain = hexHead(events.ChainNext(prev, r.Stream, r.Seq, r.Subject, data))
	return r
}
