package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Views of the past over HTTP: ?at= on /api/v1/fleet, /api/v1/fleet/state,
// /api/v1/devices, /api/v1/devices/{typeId}/{deviceId} and
// /api/v1/alerts answers what the live endpoint answered at that instant,
// in the same shape, from the log (past.go).

const (
	// pastCacheSize is how many folded instants are kept, so paging
	// through /api/v1/devices?at=T folds T once.
	pastCacheSize = 4
	// pastCacheAge: an instant this close to now is not cached. A
	// JetStream server whose clock is behind the api's could still store
	// messages stamped at or before it.
	pastCacheAge = time.Minute
)

// pastCache keeps recent folds and lets one fold run at a time (a fold
// reads the log as fast as one core folds it; a second would halve both).
type pastCache struct {
	slot    chan struct{}
	mu      sync.Mutex
	entries []*Past // least recently used first
}

func newPastCache() *pastCache { return &pastCache{slot: make(chan struct{}, 1)} }

func (c *pastCache) get(at time.Time) *Past {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.entries {
		if p.at.Equal(at) {
			c.entries = append(append(c.entries[:i:i], c.entries[i+1:]...), p)
			return p
		}
	}
	return nil
}

func (c *pastCache) put(p *Past) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = append(c.entries, p)
	if len(c.entries) > pastCacheSize {
		c.entries = c.entries[1:]
	}
}

// parseAt reads ?at=: an RFC 3339 time, not after now.
func parseAt(v string, now time.Time) (time.Time, error) {
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("at %q is not an RFC 3339 time (like 2025-07-22T11:30:00Z)", v)
	}
	if err := CheckInstant(at, now); err != nil {
		return time.Time{}, fmt.Errorf("at: %w", err)
	}
	return at, nil
}

// past returns the model folded to at, from the cache or folded now.
func (s *Service) past(ctx context.Context, at time.Time, now time.Time) (*Past, error) {
	if p := s.pastCache.get(at); p != nil {
		return p, nil
	}
	select {
	case s.pastCache.slot <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.pastCache.slot }()
	if p := s.pastCache.get(at); p != nil {
		return p, nil // folded while this request waited
	}
	p, err := FoldAt(ctx, s.deps.JS, at, PastOptions{Bucket: s.cfg.Snapshots.Bucket, Now: now})
	if err != nil {
		return nil, err
	}
	for _, w := range p.Stats.Warnings {
		s.log.Warn("fleet at an instant: "+w, "at", at)
	}
	s.log.Debug("folded the log to an instant", "at", at, "events", p.Stats.Events, "elapsed", p.Stats.Elapsed,
		"from", p.Stats.FromText())
	if now.Sub(at) >= pastCacheAge {
		s.pastCache.put(p)
	}
	return p, nil
}

// modelFor returns the model a request reads and the instant it is read
// at: the live model now, or with ?at= the model folded to that instant.
// When ok is false the answer is written: 400 naming what is wrong with
// at, or 503 when the log cannot be folded.
func (s *Service) modelFor(w http.ResponseWriter, r *http.Request) (m *model, at time.Time, ok bool) {
	now := s.deps.ClockOf().Now()
	q := r.URL.Query()
	if !q.Has("at") {
		return s.model, now, true
	}
	at, err := parseAt(q.Get("at"), now)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil, time.Time{}, false
	}
	p, err := s.past(r.Context(), at, now)
	if err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			status = http.StatusGatewayTimeout
		}
		writeError(w, status, fmt.Sprintf("fold the log to %s: %v", at.Format(time.RFC3339Nano), err))
		return nil, time.Time{}, false
	}
	// How the answer was made, for a client that wants to know; the body
	// has the live endpoint's shape.
	h := w.Header()
	h.Set("Otawatch-At", at.UTC().Format(time.RFC3339Nano))
	h.Set("Otawatch-Folded-Events", strconv.Itoa(p.Stats.Events))
	h.Set("Otawatch-From", p.Stats.FromText())
	for _, warn := range p.Stats.Warnings {
		h.Add("Otawatch-Warning", warn)
	}
	return p.m, at, true
}
