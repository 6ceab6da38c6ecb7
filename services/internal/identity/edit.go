package identity

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Bcrypt costs an edit accepts. DefaultCost (bcrypt's 10) takes ~50-80 ms
// a hash on this project's 2-core machines: 1500 devices take about a
// minute to import, and the embedded NATS server pays one such check per
// device when the fleet first connects. Test fleets and demos use MinCost.
const (
	DefaultCost = bcrypt.DefaultCost
	MinCost     = 4
	MaxCost     = 14
)

// MaxPasswordLen is the longest password: bcrypt uses only the first 72
// bytes, and refuses longer ones rather than ignore the rest.
const MaxPasswordLen = 72

// Sentinel errors of the edit functions.
var (
	// ErrExists is Add of an id that is already registered.
	ErrExists = errors.New("device already registered")
	// ErrNotFound is Remove of an id that is not registered.
	ErrNotFound = errors.New("device not registered")
)

// Credential is a device id (or a service's MQTT user) and its password.
type Credential struct {
	ID       string
	Password string
}

// CheckPassword reports what is wrong with password, or nil.
func CheckPassword(password string) error {
	switch {
	case password == "":
		return errors.New("password is empty")
	case len(password) > MaxPasswordLen:
		return fmt.Errorf("password is %d bytes long, the limit is %d (bcrypt)", len(password), MaxPasswordLen)
	case strings.ContainsAny(password, "\r\n\x00"):
		return errors.New("password has a line break or a NUL byte")
	}
	return nil
}

// DerivePassword is the password of device id under secret: hex
// HMAC-SHA256(secret, id). Simulated fleets use it so that neither side
// needs a file of a thousand passwords.
func DerivePassword(secret []byte, id string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))
}

// GeneratePassword returns a random password (32 bytes, base64url).
func GeneratePassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ReadCredentials reads lines "id password" or "id,password": the id, then
// the first space, tab or comma, then the password (surrounding spaces
// trimmed; ids have none of those characters). Empty lines and lines
// starting with # are skipped. Errors name the line.
func ReadCredentials(r io.Reader) ([]Credential, error) {
	var out []Credential
	err := eachLine(r, func(n int, line string) error {
		i := strings.IndexAny(line, " \t,")
		if i < 0 {
			return fmt.Errorf("line %d: %q has no password (want \"id password\" or \"id,password\")", n, line)
		}
		c := Credential{ID: line[:i], Password: strings.TrimSpace(line[i+1:])}
		if err := ValidateDeviceID(c.ID); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		if err := CheckPassword(c.Password); err != nil {
			return fmt.Errorf("line %d: device %q: %w", n, c.ID, err)
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// ReadIDs reads one device id a line (anything after the first space, tab
// or comma is ignored, so a credentials file reads too); empty lines and
// lines starting with # are skipped.
func ReadIDs(r io.Reader) ([]string, error) {
	var out []string
	err := eachLine(r, func(n int, line string) error {
		id := line
		if i := strings.IndexAny(line, " \t,"); i >= 0 {
			id = line[:i]
		}
		if err := ValidateDeviceID(id); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, id)
		return nil
	})
	return out, err
}

func eachLine(r io.Reader, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read credentials: %w", err)
	}
	return nil
}

// checkCost refuses a bcrypt cost outside MinCost..MaxCost.
func checkCost(cost int) error {
	if cost < MinCost || cost > MaxCost {
		return fmt.Errorf("bcrypt cost %d is out of range %d..%d", cost, MinCost, MaxCost)
	}
	return nil
}

// hash makes the registry entry of c.
func hash(c Credential, cost int, now time.Time) (Device, error) {
	if err := ValidateDeviceID(c.ID); err != nil {
		return Device{}, err
	}
	if err := CheckPassword(c.Password); err != nil {
		return Device{}, fmt.Errorf("device %q: %w", c.ID, err)
	}
	b, err := bcrypt.GenerateFromPassword([]byte(c.Password), cost)
	if err != nil {
		return Device{}, fmt.Errorf("device %q: bcrypt: %w", c.ID, err)
	}
	m, err := MosquittoHash(c.Password)
	if err != nil {
		return Device{}, fmt.Errorf("device %q: %w", c.ID, err)
	}
	return Device{ID: c.ID, Bcrypt: string(b), Mosquitto: m, Added: now.UTC().Truncate(time.Second)}, nil
}

// Add registers device id with password, hashed at bcrypt cost; an id
// already registered is ErrExists.
func Add(path, id, password string, cost int) error {
	return put(path, id, password, cost, false)
}

// Replace registers device id with password, replacing the password of an
// id already registered.
func Replace(path, id, password string, cost int) error {
	return put(path, id, password, cost, true)
}

func put(path, id, password string, cost int, replace bool) error {
	if err := checkCost(cost); err != nil {
		return err
	}
	// Hash before taking the lock: bcrypt is the slow part.
	d, err := hash(Credential{ID: id, Password: password}, cost, time.Now())
	if err != nil {
		return err
	}
	return edit(path, func(devs map[string]Device) error {
		if _, ok := devs[id]; ok && !replace {
			return fmt.Errorf("add %q: %w", id, ErrExists)
		}
		devs[id] = d
		return nil
	})
}

// Remove unregisters device id; an id that is not registered is
// ErrNotFound.
func Remove(path, id string) error {
	return edit(path, func(devs map[string]Device) error {
		if _, ok := devs[id]; !ok {
			return fmt.Errorf("remove %q: %w", id, ErrNotFound)
		}
		delete(devs, id)
		return nil
	})
}

// List returns the registered devices, sorted by id.
func List(path string) ([]Device, error) {
	r, err := LoadRegistry(path)
	if err != nil {
		return nil, err
	}
	return r.Devices(), nil
}

// ImportStats is what an import did.
type ImportStats struct {
	// Added are devices that were not registered; Replaced had a password
	// that the import replaced.
	Added, Replaced int
}

// Import reads credentials (ReadCredentials' format) from r and registers
// them all at bcrypt cost, replacing the password of ids already
// registered. Hashing runs on every core; progress, when not nil, is called
// with the number hashed so far (from one goroutine at a time). Nothing is
// written unless every line is valid and hashed.
func Import(path string, r io.Reader, cost int, progress func(done int)) (ImportStats, error) {
	creds, err := ReadCredentials(r)
	if err != nil {
		return ImportStats{}, err
	}
	return ImportCredentials(path, creds, cost, progress)
}

// ImportCredentials is Import of credentials already read.
func ImportCredentials(path string, creds []Credential, cost int, progress func(done int)) (ImportStats, error) {
	if err := checkCost(cost); err != nil {
		return ImportStats{}, err
	}
	seen := make(map[string]bool, len(creds))
	for _, c := range creds {
		if seen[c.ID] {
			return ImportStats{}, fmt.Errorf("import: device %q appears twice", c.ID)
		}
		seen[c.ID] = true
	}
	devs, err := hashAll(creds, cost, progress)
	if err != nil {
		return ImportStats{}, err
	}
	var st ImportStats
	err = edit(path, func(m map[string]Device) error {
		for _, d := range devs {
			if _, ok := m[d.ID]; ok {
				st.Replaced++
			} else {
				st.Added++
			}
			m[d.ID] = d
		}
		return nil
	})
	return st, err
}

// hashAll hashes creds on runtime.NumCPU() goroutines.
func hashAll(creds []Credential, cost int, progress func(done int)) ([]Device, error) {
	out := make([]Device, len(creds))
	next := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		done     int
		firstErr error
	)
	now := time.Now()
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				d, err := hash(creds[i], cost, now)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				out[i] = d
				done++
				if progress != nil {
					progress(done)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range creds {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("import: %w", firstErr)
	}
	return out, nil
}

// edit applies fn to the registry at path under its lock and writes the
// result, unless fn fails.
func edit(path string, fn func(map[string]Device) error) error {
	unlock, err := lock(path)
	if err != nil {
		return err
	}
	defer unlock()
	list, err := readFile(path)
	if err != nil {
		return err
	}
	devs := make(map[string]Device, len(list))
	for _, d := range list {
		devs[d.ID] = d
	}
	if err := fn(devs); err != nil {
		return err
	}
	f := file{Version: fileVersion, Devices: make([]Device, 0, len(devs))}
	for _, d := range devs {
		f.Devices = append(f.Devices, d)
	}
	sort.Slice(f.Devices, func(i, j int) bool { return f.Devices[i].ID < f.Devices[j].ID })
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return fmt.Errorf("encode device registry: %w", err)
	}
	if err := writeFileAtomic(path, append(b, '\n'), 0o600, false); err != nil {
		return fmt.Errorf("write device registry: %w", err)
	}
	return nil
}

// lock takes an exclusive flock on path+".lock", creating the directory
// and the lock file as needed.
func lock(path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("lock device registry: %w", err)
	}
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock device registry: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock device registry %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory, synced, then renamed over path, so a reader sees the old file
// or the new one, never half of one. With keepOwner an existing file's mode
// and owner carry over to the new one; otherwise, and for a new file, the
// mode is perm.
func writeFileAtomic(path string, data []byte, perm fs.FileMode, keepOwner bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	uid, gid := -1, -1
	if keepOwner {
		if fi, err := os.Stat(path); err == nil {
			perm = fi.Mode().Perm()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				uid, gid = int(st.Uid), int(st.Gid)
			}
		}
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // after the rename, a no-op
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if uid >= 0 && (uid != os.Getuid() || gid != os.Getgid()) {
		if err := tmp.Chown(uid, gid); err != nil {
			tmp.Close()
			return fmt.Errorf("keep the owner of %s: %w", path, err)
		}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
