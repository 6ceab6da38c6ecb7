// Package svc holds what every otawatch service is handed when it is built:
// the logger, the NATS connection, the stream settings, the shared health
// registry and the process's Prometheus registry. Services take it in
// New(cfg, deps) and do their work in Run(ctx).
package svc

import (
	"context"
	"log/slog"
	"sort"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/otawatch/otawatch/events"
)

// Deps are a service's shared dependencies.
type Deps struct {
	// Log is the process logger; a service adds its own "component".
	Log *slog.Logger
	// NC is a connection to NATS (in-process with the embedded server).
	NC *nats.Conn
	// JS is JetStream on NC.
	JS jetstream.JetStream
	// Streams are the operator's stream settings.
	Streams events.StreamOptions
	// Health collects readiness; nil means nobody asks.
	Health *Health
	// Metrics is the process's Prometheus registry (services/internal/ops
	// serves it on /metrics); nil: a service that serves metrics itself
	// makes its own.
	Metrics *prometheus.Registry
	// Clock is the service's time source for its own timers; nil is the
	// wall clock (ClockOf). Tests set a fake one here, the one seam for
	// time.
	Clock Clock
}

// Service is what the app runs: Run blocks until ctx ends or the service
// fails, and returns nil on a clean stop.
type Service interface {
	Run(ctx context.Context) error
}

// Health is a registry of components' readiness, read by /readyz.
type Health struct {
	mu    sync.Mutex
	state map[string]error
}

// NewHealth returns an empty registry.
func NewHealth() *Health { return &Health{state: map[string]error{}} }

// Set records component's state: nil is ready, an error says why not.
func (h *Health) Set(component string, err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.state[component] = err
}

// Status returns every component's state, sorted by name.
func (h *Health) Status() []ComponentStatus {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]ComponentStatus, 0, len(h.state))
	for name, err := range h.state {
		out = append(out, ComponentStatus{Name: name, Err: err})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Ready reports whether every component is ready.
func (h *Health) Ready() bool {
	for _, s := range h.Status() {
		if s.Err != nil {
			return false
		}
	}
	return true
}

// ComponentStatus is one component's readiness.
type ComponentStatus struct {
	Name string
	Err  error
}
