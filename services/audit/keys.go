package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// WriteKeyPair writes a new Ed25519 key pair: the private key (PEM, PKCS
// #8, mode 0600) to priv and the public key (PEM, PKIX) to pub. It does
// not overwrite a file.
func WriteKeyPair(priv, pub string) (ed25519.PublicKey, error) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	skb, err := x509.MarshalPKCS8PrivateKey(sk)
	if err != nil {
		return nil, err
	}
	pkb, err := x509.MarshalPKIXPublicKey(pk)
	if err != nil {
		return nil, err
	}
	if err := writeNew(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: skb}), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkb}), 0o644); err != nil {
		return nil, err
	}
	return pk, nil
}

func writeNew(name string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadPrivateKey reads an Ed25519 private key written by WriteKeyPair (or
// openssl genpkey -algorithm ed25519).
func LoadPrivateKey(name string) (ed25519.PrivateKey, error) {
	blk, err := readPEM(name, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(blk)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	sk, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, not an Ed25519 key", name, k)
	}
	return sk, nil
}

// LoadPublicKey reads an Ed25519 public key written by WriteKeyPair.
func LoadPublicKey(name string) (ed25519.PublicKey, error) {
	blk, err := readPEM(name, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(blk)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	pk, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, not an Ed25519 key", name, k)
	}
	return pk, nil
}

func readPEM(name, typ string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		return nil, errors.New(name + ": no PEM " + typ + " block")
	}
	return blk.Bytes, nil
}
