package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// InstanceFile is the file under a data dir that names the process using
// it (Instance). The process holds an exclusive flock on it while it runs.
const InstanceFile = "instance"

// ErrInstanceInUse is ClaimInstance's error when another live process
// holds the data dir.
var ErrInstanceInUse = errors.New("in use by another running otawatch process")

// Instance is a process's lasting identity as a lease holder: an id kept
// in a data dir, which one live process at a time may claim (an exclusive
// flock, released by the kernel when the process dies, SIGKILL included).
//
// A process that crashed leaves its leases behind until their TTL runs
// out. Restarted on the same data dir, it claims the same id, and a lease
// opened under it (WithInstance) takes over a key whose holder is that id
// from an earlier run at once, instead of standing by for up to a TTL.
// That is safe because only a dead process can have written it: the one
// live process with the id is this one, and leases of this run are told
// apart from the earlier run's by a run id.
type Instance struct {
	id   string // lasting, from the data dir
	run  string // this claim's
	file *os.File
}

// ClaimInstance claims dir's instance, creating dir and its id on first
// use. It fails with ErrInstanceInUse while another process holds it.
// Close releases it.
func ClaimInstance(dir string) (*Instance, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("claim data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, InstanceFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("claim data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s: %w (it holds a lock on %s)", dir, ErrInstanceInUse, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	in := &Instance{run: randomHex(4), file: f}
	if in.id, err = readOrWriteID(f); err != nil {
		in.Close()
		return nil, fmt.Errorf("instance id in %s: %w", path, err)
	}
	return in, nil
}

// readOrWriteID returns the id in f, writing a new one into an empty f.
func readOrWriteID(f *os.File) (string, error) {
	b, err := io.ReadAll(f)
	if err != nil {
		return "", err
	}
	if id := strings.TrimSpace(string(b)); id != "" {
		if strings.ContainsAny(id, " \t\n=") {
			return "", fmt.Errorf("%q is not an instance id (delete the file to make a new one)", id)
		}
		return id, nil
	}
	id := randomHex(8)
	if _, err := f.WriteString(id + "\n"); err != nil {
		return "", err
	}
	return id, f.Sync()
}

// ID is the instance's lasting id.
func (in *Instance) ID() string { return in.id }

// Close releases the claim. A nil Instance closes as nothing.
func (in *Instance) Close() error {
	if in == nil || in.file == nil {
		return nil
	}
	err := in.file.Close() // closing the only descriptor drops the flock
	in.file = nil
	return err
}

// value is what a lease of holder stores under this instance: the holder
// first, for operators, then the instance and run ids.
func (in *Instance) value(holder string) string {
	return holder + " instance=" + in.id + " run=" + in.run
}

// leftByEarlierRun reports whether a lease value was written under this
// instance's id by another run: by a process that has since died.
func (in *Instance) leftByEarlierRun(value string) bool {
	var id, run string
	for _, f := range strings.Fields(value) {
		if v, ok := strings.CutPrefix(f, "instance="); ok {
			id = v
		} else if v, ok := strings.CutPrefix(f, "run="); ok {
			run = v
		}
	}
	return id == in.id && run != "" && run != in.run
}

type instanceKey struct{}

// WithInstance returns ctx carrying in: Open, called with it or a context
// derived from it, opens a lease that resumes in's earlier runs' keys.
// The app's Run sets it on the context every service runs under, so each
// lease a service opens takes part without the service knowing; a nil in
// returns ctx unchanged.
func WithInstance(ctx context.Context, in *Instance) context.Context {
	if in == nil {
		return ctx
	}
	return context.WithValue(ctx, instanceKey{}, in)
}

func instanceFrom(ctx context.Context) *Instance {
	in, _ := ctx.Value(instanceKey{}).(*Instance)
	return in
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
