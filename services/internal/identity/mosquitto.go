package identity

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Mosquitto 2.0's password hash, as mosquitto_passwd writes it:
// "$7$ITERATIONS$BASE64(SALT)$BASE64(HASH)", PBKDF2 with HMAC-SHA512, a
// 12-byte salt and a 64-byte hash, standard base64 with padding. Mosquitto
// 2.0.11 (Debian's) accepts only this and "$6$" (one salted SHA-512), not
// bcrypt, so the registry keeps this hash beside the bcrypt one.
// The standard library's crypto/pbkdf2 is used: golang.org/x/crypto/pbkdf2
// is now a frozen wrapper of it.
const (
	// MosquittoIterations is mosquitto_passwd's default iteration count.
	MosquittoIterations = 101
	mosquittoSaltLen    = 12
	mosquittoHashLen    = 64
)

// MosquittoHash returns password's hash in Mosquitto's "$7$" format, with a
// fresh random salt.
func MosquittoHash(password string) (string, error) {
	salt := make([]byte, mosquittoSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("mosquitto hash: salt: %w", err)
	}
	return mosquittoHash(password, salt, MosquittoIterations)
}

func mosquittoHash(password string, salt []byte, iter int) (string, error) {
	key, err := pbkdf2.Key(sha512.New, password, salt, iter, mosquittoHashLen)
	if err != nil {
		return "", fmt.Errorf("mosquitto hash: %w", err)
	}
	return "$7$" + strconv.Itoa(iter) + "$" + base64.StdEncoding.EncodeToString(salt) + "$" +
		base64.StdEncoding.EncodeToString(key), nil
}

// VerifyMosquittoHash reports whether password matches a "$7$" hash (as
// MosquittoHash or mosquitto_passwd write it).
func VerifyMosquittoHash(hash, password string) (bool, error) {
	parts := strings.Split(hash, "$")
	// "", "7", iterations, salt, hash
	if len(parts) != 5 || parts[0] != "" || parts[1] != "7" {
		return false, fmt.Errorf("mosquitto hash %.10q...: not $7$ITERATIONS$SALT$HASH", hash)
	}
	iter, err := strconv.Atoi(parts[2])
	if err != nil || iter < 1 {
		return false, fmt.Errorf("mosquitto hash: iterations %q is not a positive integer", parts[2])
	}
	salt, err := base64.StdEncoding.DecodeString(parts[3])
	if err != nil {
		return false, fmt.Errorf("mosquitto hash: salt: %w", err)
	}
	want, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil {
		return false, fmt.Errorf("mosquitto hash: hash: %w", err)
	}
	got, err := pbkdf2.Key(sha512.New, password, salt, iter, len(want))
	if err != nil {
		return false, fmt.Errorf("mosquitto hash: %w", err)
	}
	return hmac.Equal(got, want), nil
}

// WriteMosquittoPasswordFile writes Mosquitto's password_file at outPath
// from the registry at registryPath: one "id:$7$..." line per device, and
// before them one per service user (the bridge's and the rollout service's
// MQTT users, whose passwords live in otawatch's configuration, not in the
// registry), hashed now. A service user that is also a registered device
// is an error: the ACL would give that device the service's rights.
//
// The file is replaced atomically. An existing file keeps its mode and
// owner (Mosquitto, running as user mosquitto, must be able to read it when
// it reloads on SIGHUP); a new one is made with mode 0600.
func WriteMosquittoPasswordFile(registryPath, outPath string, services ...Credential) error {
	devs, err := readFile(registryPath)
	if err != nil {
		return err
	}
	if _, err := NewRegistry(devs); err != nil {
		return fmt.Errorf("device registry %s: %w", registryPath, err)
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].ID < devs[j].ID })
	ids := make(map[string]bool, len(devs))
	for _, d := range devs {
		ids[d.ID] = true
	}
	var b bytes.Buffer
	seen := map[string]bool{}
	for _, s := range services {
		switch {
		case s.ID == "" || strings.ContainsAny(s.ID, ": \t\r\n"):
			return fmt.Errorf("mosquitto password file: service user %q is empty or has a colon or a space", s.ID)
		case ids[s.ID]:
			return fmt.Errorf("mosquitto password file: service user %q is also a registered device", s.ID)
		case seen[s.ID]:
			continue // the bridge and the rollout service may share a user
		case s.Password == "":
			return fmt.Errorf("mosquitto password file: service user %q has no password", s.ID)
		}
		seen[s.ID] = true
		h, err := MosquittoHash(s.Password)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s:%s\n", s.ID, h)
	}
	for _, d := range devs {
		if !strings.HasPrefix(d.Mosquitto, "$7$") {
			return fmt.Errorf("mosquitto password file: device %q has no Mosquitto hash (add it again)", d.ID)
		}
		fmt.Fprintf(&b, "%s:%s\n", d.ID, d.Mosquitto)
	}
	if err := writeFileAtomic(outPath, b.Bytes(), 0o600, true); err != nil {
		return fmt.Errorf("write mosquitto password file: %w", err)
	}
	return nil
}
