package bridge

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
)

// StoreHealthComponent is the bridge's second name in the health registry:
// it is not ready while a stream refuses the bridge's events because the
// stream is full, and says which and why. It is separate from
// HealthComponent, whose state follows the MQTT connection.
const StoreHealthComponent = "bridge-store"

// fullReasons are the refusals of a stream at one of its limits, as
// JetStream words them in a PubAck (err_code 10077, "{err}" of the store)
// and, for the account's storage, in its own error.
var fullReasons = []string{
	"maximum bytes exceeded",
	"maximum messages exceeded",
	"maximum messages per subject exceeded",
	"resource limits exceeded for account",
	"insufficient storage resources",
}

// fullReason returns JetStream's words when err is a publish refused
// because its stream is at a limit (SHADOW and the other audit streams
// refuse new events rather than drop old ones), "" otherwise. Such a
// publish is retried like any other failure; it succeeds once the limit
// is raised.
func fullReason(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		msg = apiErr.Description
	}
	for _, r := range fullReasons {
		if strings.Contains(msg, r) {
			return r
		}
	}
	return ""
}

// fullStreams tracks the streams that refuse the bridge's events for being
// full, and keeps StoreHealthComponent in step. noteStored is on every
// report's path: it costs one atomic load while no stream is full.
type fullStreams struct {
	n  atomic.Int32
	mu sync.Mutex
	// reason is, by stream, JetStream's refusal.
	reason map[string]string
}

// noteRefused records a failed publish of p; it marks p's stream full
// when the failure says so.
func (s *Service) noteRefused(p *pending, err error) {
	why := fullReason(err)
	if why == "" {
		return
	}
	f := &s.full
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.reason[p.stream]; ok {
		return
	}
	if f.reason == nil {
		f.reason = map[string]string{}
	}
	f.reason[p.stream] = why
	f.n.Store(int32(len(f.reason)))
	s.setStoreHealth()
	s.log.Error("stream full: reports are held at the broker until its limit is raised",
		"stream", p.stream, "max_bytes", s.deps.Streams.MaxBytesFor(p.stream), "err", err)
}

// noteStored records a stored event of p; it clears p's stream when it
// was full.
func (s *Service) noteStored(p *pending) {
	f := &s.full
	if f.n.Load() == 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.reason[p.stream]; !ok {
		return
	}
	delete(f.reason, p.stream)
	f.n.Store(int32(len(f.reason)))
	s.setStoreHealth()
	s.log.Info("stream takes events again", "stream", p.stream)
}

// setStoreHealth publishes the full streams to the health registry; f.mu
// is held.
func (s *Service) setStoreHealth() {
	f := &s.full
	if len(f.reason) == 0 {
		s.deps.Health.Set(StoreHealthComponent, nil)
		return
	}
	streams := make([]string, 0, len(f.reason))
	for name := range f.reason {
		streams = append(streams, name)
	}
	sort.Strings(streams)
	parts := make([]string, len(streams))
	for i, name := range streams {
		limit := ""
		if n := s.deps.Streams.MaxBytesFor(name); n > 0 {
			limit = fmt.Sprintf(", max_bytes %d", n)
		}
		parts[i] = fmt.Sprintf("%s stream is full (%s%s)", name, f.reason[name], limit)
	}
	s.deps.Health.Set(StoreHealthComponent,
		fmt.Errorf("%s: reports are held at the broker", strings.Join(parts, "; ")))
}
