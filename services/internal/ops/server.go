package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/otawatch/otawatch/services/internal/svc"
)

// Server is the ops listener: /healthz, /readyz and /metrics, with an
// access log line per request.
type Server struct {
	ln  net.Listener
	srv *http.Server
	log *slog.Logger
}

// Listen binds addr at once, so a busy port fails the process's start
// instead of leaving it without probes, and returns the server to Serve.
func Listen(addr string, h *svc.Health, reg *prometheus.Registry, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ops listener: listen on %s: %w", addr, err)
	}
	log = log.With("component", "ops")
	return &Server{ln: ln, log: log, srv: &http.Server{
		Handler:           AccessLog(log, Mux(h, reg)),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}, nil
}

// Addr is the bound address (with port 0 in the address, how a caller
// learns the port).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends, then shuts down (requests in progress get a
// few seconds) and returns nil.
func (s *Server) Serve(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(s.ln) }()
	s.log.Info("ops listening", "addr", s.Addr(), "paths", "/healthz /readyz /metrics")
	select {
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("ops listener: serve: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
	}
	return nil
}

// Close releases the listener of a server that never served.
func (s *Server) Close() { _ = s.srv.Close(); _ = s.ln.Close() }
