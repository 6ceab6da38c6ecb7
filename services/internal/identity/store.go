package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"
)

// PollInterval is how often a Store looks at its file for a change.
const PollInterval = time.Second

// Store is the device registry of a running server: a Registry loaded from
// a file and reloaded when the file changes. A goroutine started by
// OpenStore looks at the file's identity, modification time and size every
// PollInterval (a stat, no read, when nothing changed); Close stops it.
// A file that changes into something invalid is logged once and the
// previous registry stays in force.
type Store struct {
	path string
	log  *slog.Logger

	mu   sync.RWMutex
	reg  *Registry
	seen fs.FileInfo // the file the registry (or a refused version) came from; nil: none

	reloadMu  sync.Mutex // one reload at a time
	cbMu      sync.Mutex
	callbacks []func(removed []string)

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// OpenStore loads the registry at path (a missing file is an empty
// registry) and starts watching it.
func OpenStore(path string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{path: path, log: log.With("component", "identity"), stop: make(chan struct{}), done: make(chan struct{})}
	fi, err := stat(path)
	if err != nil {
		return nil, err
	}
	reg, err := LoadRegistry(path)
	if err != nil {
		return nil, err
	}
	s.reg, s.seen = reg, fi
	s.log.Info("device registry loaded", "path", path, "devices", reg.Len())
	go s.watch()
	return s, nil
}

// stat is os.Stat with a missing file as nil.
func stat(path string) (fs.FileInfo, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("device registry: %w", err)
	}
	return fi, nil
}

// sameFile reports whether a and b are the same version of the file, as
// far as a stat tells: the same inode (an atomic rewrite makes a new one),
// modification time and size.
func sameFile(a, b fs.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

func (s *Store) watch() {
	defer close(s.done)
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			fi, err := stat(s.path)
			if err != nil {
				s.log.Warn("device registry: cannot stat the file; keeping the devices loaded", "path", s.path, "err", err)
				continue
			}
			s.mu.RLock()
			same := sameFile(s.seen, fi)
			s.mu.RUnlock()
			if same {
				continue
			}
			if _, err := s.reload(fi); err != nil {
				s.log.Error("device registry changed but does not load; keeping the devices loaded", "path", s.path, "err", err)
			}
		}
	}
}

// Reload reads the file now and, when it loads, puts it in force. removed
// are the ids whose credentials no longer hold: gone from the file, or
// with a new password; the callbacks of OnChange get them too. On an error
// the previous registry stays in force.
func (s *Store) Reload() (removed []string, err error) {
	fi, err := stat(s.path)
	if err != nil {
		return nil, err
	}
	return s.reload(fi)
}

func (s *Store) reload(fi fs.FileInfo) ([]string, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	next, err := LoadRegistry(s.path)
	if err != nil {
		// Remember the bad version, so the watcher logs it once.
		s.mu.Lock()
		s.seen = fi
		s.mu.Unlock()
		return nil, err
	}
	s.mu.Lock()
	prev := s.reg
	prev.carryCache(next)
	s.reg, s.seen = next, fi
	s.mu.Unlock()
	removed := prev.invalidated(next)
	s.log.Info("device registry reloaded", "path", s.path, "devices", next.Len(), "removed", len(removed))
	if len(removed) > 0 {
		s.cbMu.Lock()
		cbs := append([]func([]string){}, s.callbacks...)
		s.cbMu.Unlock()
		for _, cb := range cbs {
			cb(removed)
		}
	}
	return removed, nil
}

// OnChange registers fn to be called after a reload whose removed ids
// (see Reload) are not empty. fn runs on the goroutine that reloaded and
// should not block.
func (s *Store) OnChange(fn func(removed []string)) {
	s.cbMu.Lock()
	defer s.cbMu.Unlock()
	s.callbacks = append(s.callbacks, fn)
}

// Check reports whether password is the password of device id in the
// registry in force.
func (s *Store) Check(id, password string) bool {
	return s.registry().Check(id, password)
}

// Has reports whether device id is registered.
func (s *Store) Has(id string) bool {
	return s.registry().Has(id)
}

// Len is the number of registered devices.
func (s *Store) Len() int { return s.registry().Len() }

func (s *Store) registry() *Registry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.reg
}

// Close stops watching the file. Check and Has keep answering from the
// registry last loaded.
func (s *Store) Close() {
	s.closeOnce.Do(func() { close(s.stop) })
	<-s.done
}
