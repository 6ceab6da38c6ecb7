package identity

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/otawatch/otawatch/events"
)

// Device is one registered device as the registry file holds it.
type Device struct {
	// ID is the device id, which is also its MQTT username.
	ID string `json:"id"`
	// Bcrypt is the bcrypt hash of the password, for the embedded NATS
	// server.
	Bcrypt string `json:"bcrypt"`
	// Mosquitto is the Mosquitto 2.0 "$7$" (PBKDF2-SHA512) hash of the same
	// password, for Mosquitto's password_file.
	Mosquitto string `json:"mosquitto"`
	// Added is when the device was added or last given a password.
	Added time.Time `json:"added"`
}

// fileVersion is the registry file's format version.
const fileVersion = 1

// file is the registry file's JSON.
type file struct {
	Version int      `json:"version"`
	Devices []Device `json:"devices"`
}

// Reserved are the MQTT users of otawatch's own services in the shipped
// Mosquitto ACL (deploy/mosquitto/acl). No device may take one of these
// ids: it would get that service's rights.
var Reserved = []string{"otawatch-bridge", "otawatch-rollout"}

// ValidateDeviceID checks id is a valid device id (events.ValidateID) and
// not one of the Reserved service users.
func ValidateDeviceID(id string) error {
	if err := events.ValidateID("device id", id); err != nil {
		return err
	}
	for _, r := range Reserved {
		if id == r {
			return fmt.Errorf("device id %q is reserved for an otawatch service's MQTT user", id)
		}
	}
	return nil
}

// Registry is a loaded set of device credentials. It is safe for
// concurrent use; its devices do not change after loading (a Store swaps
// whole registries), only its cache of successful checks does.
type Registry struct {
	devices map[string]*Device

	mu    sync.Mutex
	cache map[string]verified
}

// verified is a successful Check: a keyed digest of the password and the
// hash it was verified against. It counts only while the device's hash is
// still that one.
type verified struct {
	hash   string
	digest [sha256.Size]byte
}

// cacheKey keys the digests of the verified-password cache, so a memory
// dump does not hold plain SHA-256 sums of passwords that could be looked
// up in a table. It is random per process.
var cacheKey = func() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic(fmt.Sprintf("identity: random cache key: %v", err))
	}
	return k
}()

func digest(id, password string) [sha256.Size]byte {
	m := hmac.New(sha256.New, cacheKey)
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var d [sha256.Size]byte
	m.Sum(d[:0])
	return d
}

// NewRegistry returns a registry of devs, which must have valid, distinct
// ids and bcrypt hashes.
func NewRegistry(devs []Device) (*Registry, error) {
	r := &Registry{devices: make(map[string]*Device, len(devs)), cache: map[string]verified{}}
	for i := range devs {
		d := devs[i]
		if err := events.ValidateID("device id", d.ID); err != nil {
			return nil, fmt.Errorf("device %d: %w", i+1, err)
		}
		if _, dup := r.devices[d.ID]; dup {
			return nil, fmt.Errorf("device %d: id %q appears twice", i+1, d.ID)
		}
		if _, err := bcrypt.Cost([]byte(d.Bcrypt)); err != nil {
			return nil, fmt.Errorf("device %q: bcrypt hash: %w", d.ID, err)
		}
		r.devices[d.ID] = &d
	}
	return r, nil
}

// LoadRegistry reads the registry file at path. A missing file is an empty
// registry.
func LoadRegistry(path string) (*Registry, error) {
	devs, err := readFile(path)
	if err != nil {
		return nil, err
	}
	r, err := NewRegistry(devs)
	if err != nil {
		return nil, fmt.Errorf("device registry %s: %w", path, err)
	}
	return r, nil
}

// readFile reads the registry file's devices; a missing file has none.
func readFile(path string) ([]Device, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read device registry: %w", err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("device registry %s: %w", path, err)
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("device registry %s: version %d, this otawatch reads version %d", path, f.Version, fileVersion)
	}
	return f.Devices, nil
}

// Check reports whether password is the password of device id. A success
// is remembered (see the package doc), so the next Check of the same
// password costs no bcrypt.
func (r *Registry) Check(id, password string) bool {
	d := r.devices[id]
	if d == nil || password == "" {
		return false
	}
	sum := digest(id, password)
	r.mu.Lock()
	v, ok := r.cache[id]
	r.mu.Unlock()
	if ok && v.hash == d.Bcrypt && hmac.Equal(v.digest[:], sum[:]) {
		return true
	}
	if bcrypt.CompareHashAndPassword([]byte(d.Bcrypt), []byte(password)) != nil {
		return false
	}
	r.mu.Lock()
	r.cache[id] = verified{hash: d.Bcrypt, digest: sum}
	r.mu.Unlock()
	return true
}

// Has reports whether device id is registered.
func (r *Registry) Has(id string) bool {
	_, ok := r.devices[id]
	return ok
}

// Len is the number of registered devices.
func (r *Registry) Len() int { return len(r.devices) }

// Devices returns the registered devices, sorted by id.
func (r *Registry) Devices() []Device {
	out := make([]Device, 0, len(r.devices))
	for _, d := range r.devices {
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// invalidated returns the ids of r whose credentials next does not hold:
// removed, or with another hash.
func (r *Registry) invalidated(next *Registry) []string {
	var out []string
	for id, d := range r.devices {
		if n := next.devices[id]; n == nil || n.Bcrypt != d.Bcrypt {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// carryCache copies into next the remembered checks of r whose device
// still has the hash they were verified against.
func (r *Registry) carryCache(next *Registry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next.mu.Lock()
	defer next.mu.Unlock()
	for id, v := range r.cache {
		if n := next.devices[id]; n != nil && n.Bcrypt == v.hash {
			next.cache[id] = v
		}
	}
}

// cached is the number of remembered checks (for tests).
func (r *Registry) cached() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}
