package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/ops"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// HealthComponent is the api's name in the health registry: not ready until
// its read model has replayed SHADOW, ROLLOUT, ALERTS and NOTIFY and it
// listens.
const HealthComponent = "api"

// Service is the api service: the HTTP API, the seed-compatible SSE and
// shadow-delta paths, the live dashboard and /metrics, all served from a
// read model it folds from the log.
type Service struct {
	cfg  Config
	deps svc.Deps
	log  *slog.Logger

	model   *model
	folds   []*fold
	shadow  *fold
	stats   *streamStats
	metrics *metrics
	dash    *dashboard
	// streamSlots bounds the SSE and WebSocket clients (http.max_streams).
	streamSlots *streamLimiter
	// pastCache holds recent folds of the log to an instant (?at=);
	// snapshots writes the snapshot index they start from (nil when
	// http.snapshots.disabled).
	pastCache *pastCache
	snapshots *snapshotWriter

	addr atomic.Value // string: the bound address, once listening
}

// New builds the service; it does no I/O. Unset keys of cfg take their
// defaults, and a configuration that Validate refuses is an *conf.Error
// listing every problem (keys under "http", as in the file).
func New(cfg Config, deps svc.Deps) (*Service, error) {
	if err := conf.Check("http", &cfg); err != nil {
		return nil, err
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Health == nil {
		// Alone (tests), the api's /readyz is its own readiness.
		deps.Health = svc.NewHealth()
	}
	s := &Service{cfg: cfg, deps: deps, log: deps.Log.With("component", "api"), model: newModel()}
	s.shadow = s.newFold(events.StreamShadow, s.model.apply)
	s.folds = []*fold{
		s.shadow,
		s.newFold(events.StreamRollout, s.model.apply),
		s.newFold(events.StreamAlerts, s.model.apply),
		s.newFold(events.StreamNotify, s.model.apply),
	}
	s.stats = &streamStats{js: deps.JS}
	s.metrics = newMetrics(deps.Metrics, s.model, s.stats, s.folds)
	s.dash = newDashboard(s.model, s.stats, s.folds, deps.ClockOf())
	s.streamSlots = newStreamLimiter(s.cfg.MaxStreams)
	s.pastCache = newPastCache()
	if !s.cfg.Snapshots.Disabled {
		s.snapshots = &snapshotWriter{cfg: s.cfg.Snapshots, js: deps.JS, m: s.model, log: s.log, clock: deps.ClockOf(),
			replicas: deps.Streams.Replicas, ready: s.caughtUp}
	}
	return s, nil
}

// Addr returns the address the service listens on, once it does ("" before):
// with port 0 in Listen it is how a caller learns the port.
func (s *Service) Addr() string {
	a, _ := s.addr.Load().(string)
	return a
}

// Run serves until ctx ends, then stops gracefully: event streams are told
// to end, and requests in progress get ShutdownTimeout to finish.
func (s *Service) Run(ctx context.Context) error {
	auth, err := s.authenticator()
	if err != nil {
		return err
	}
	s.deps.Health.Set(HealthComponent, errors.New("starting"))
	tlsCfg, err := s.cfg.TLS.Config()
	if err != nil {
		return fmt.Errorf("http.tls: %w", err)
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	s.addr.Store(ln.Addr().String())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// streams ends SSE and WebSocket handlers at shutdown: http.Server.
	// Shutdown does not wait for hijacked connections and would wait out
	// its timeout for streaming ones.
	streams, endStreams := context.WithCancel(context.Background())
	defer endStreams()

	srv := s.newServer(auth, streams)
	srv.RegisterOnShutdown(endStreams)
	scheme := "http"
	if tlsCfg != nil {
		// ServeTLS adds HTTP/2 to NextProtos; SSE works over it, and
		// browsers open WebSockets over HTTP/1.1, which stays offered.
		srv.TLSConfig, scheme = tlsCfg, "https"
	}
	wg := s.runBackground(ctx)

	served := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			served <- srv.ServeTLS(ln, "", "")
			return
		}
		served <- srv.Serve(ln)
	}()
	s.log.Info("http listening", "addr", ln.Addr().String(), "scheme", scheme, "auth", auth.mode())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("http shutdown", "err", err)
		_ = srv.Close()
	}
	wg.Wait()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", serveErr)
	}
	return nil
}

// newServer is the HTTP server of the api; base is every request's
// context (streaming handlers end with it).
func (s *Service) newServer(auth *authenticator, base context.Context) *http.Server {
	return &http.Server{
		Handler:           ops.AccessLog(s.log, s.handler(auth)),
		ReadHeaderTimeout: min(s.cfg.ReadTimeout, 10*time.Second),
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// runBackground starts what the api does beside serving requests until
// ctx ends: the read models' folds, the readiness tracker, the snapshot
// writer and the dashboard's refresh. Wait on the group after ctx ends.
func (s *Service) runBackground(ctx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, f := range s.folds {
		wg.Go(func() { _ = f.Run(ctx) }) // nil when ctx ends; it logs its own failures
	}
	wg.Go(func() { s.trackReadiness(ctx) })
	if s.snapshots != nil {
		wg.Go(func() { s.snapshots.run(ctx) })
	}
	wg.Go(func() { s.dash.run(ctx, s.cfg.DashboardRefresh) })
	return &wg
}

// caughtUp reports whether every fold has replayed its stream.
func (s *Service) caughtUp() bool {
	for _, f := range s.folds {
		if !f.caughtUp() {
			return false
		}
	}
	return true
}

// authenticator loads the tokens, or allows anonymous operators on a
// loopback address when there are none.
func (s *Service) authenticator() (*authenticator, error) {
	if s.cfg.TokensFile == "" {
		host, _, err := net.SplitHostPort(s.cfg.Listen)
		if err != nil || !conf.IsLoopback(host) {
			return nil, fmt.Errorf("http.tokens_file is required when http.listen (%q) is not a loopback address", s.cfg.Listen)
		}
		s.log.Warn("no API tokens configured (http.tokens_file): every local caller is an anonymous operator; set tokens before exposing the port",
			"listen", s.cfg.Listen)
		return &authenticator{anonymous: true}, nil
	}
	tokens, err := LoadTokens(s.cfg.TokensFile)
	if err != nil {
		return nil, err
	}
	return &authenticator{tokens: tokens}, nil
}

func (a *authenticator) mode() string {
	if a.anonymous {
		return "anonymous"
	}
	return fmt.Sprintf("%d tokens", len(a.tokens))
}

// trackReadiness reports the api's readiness to the health registry until
// ctx ends: not ready while the read model replays its streams, or while
// the NATS connection is down (the model would silently fall behind).
func (s *Service) trackReadiness(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var last error
	first := true
	caughtUp := false
	for {
		var notReady error
		for _, f := range s.folds {
			if err := f.Status(); err != nil {
				notReady = err
				break
			}
		}
		if notReady == nil && !caughtUp {
			caughtUp = true
			s.log.Info("read model caught up", "shadow_seq", s.shadow.Applied())
		}
		if notReady == nil && s.deps.NC != nil && !s.deps.NC.IsConnected() {
			notReady = fmt.Errorf("nats connection %s", s.deps.NC.Status())
		}
		if first || (notReady == nil) != (last == nil) || notReady != nil {
			s.deps.Health.Set(HealthComponent, notReady)
		}
		first, last = false, notReady
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// componentStatus is one line of /readyz.
type componentStatus = ops.ComponentStatus

// route is one entry of the routing table.
type route struct {
	pattern string
	role    Role // "" needs no token
	stream  bool // long-lived: excluded from the latency histogram
	h       http.HandlerFunc
}

func (s *Service) routes() []route {
	const v0002 = "/api/v0002/device/types/{typeId}/devices/{deviceId}"
	return []route{
		// The process's probes and metrics, as every otawatch process
		// serves them (services/internal/ops).
		{"GET /healthz", "", false, ops.Healthz().ServeHTTP},
		{"GET /readyz", "", false, ops.Readyz(s.deps.Health).ServeHTTP},
		{"GET /metrics", "", false, ops.Metrics(s.metrics.reg).ServeHTTP},
		{"GET /{$}", "", false, s.handleIndex},

		{"GET " + v0002 + "/events/shadow", RoleReadOnly, true, s.handleShadowEvents},
		{"GET " + v0002 + "/shadow/delta", RoleReadOnly, false, s.handleShadowDelta},

		{"GET /api/v1/devices", RoleReadOnly, false, s.handleDevices},
		{"GET /api/v1/devices/{typeId}/{deviceId}", RoleReadOnly, false, s.handleDevice},
		{"GET /api/v1/devices/{typeId}/{deviceId}/history", RoleReadOnly, false, s.handleHistory},
		{"GET /api/v1/fleet", RoleReadOnly, false, s.handleFleet},
		{"GET /api/v1/fleet/state", RoleReadOnly, false, s.handleFleetState},
		{"GET /api/v1/alerts", RoleReadOnly, false, s.handleAlerts},
		{"GET /api/v1/silences", RoleReadOnly, false, s.handleSilenceList},
		{"POST /api/v1/silences", RoleOperator, false, s.handleSilenceCreate},
		{"DELETE /api/v1/silences/{id}", RoleOperator, false, s.handleSilenceExpire},
		{"GET /api/v1/rollouts", RoleReadOnly, false, s.handleRolloutList},
		{"GET /api/v1/rollouts/{job}", RoleReadOnly, false, s.handleRolloutShow},
		{"POST /api/v1/rollouts", RoleOperator, false, s.handleRolloutCreate},
		{"POST /api/v1/rollouts/{job}/{cmd}", RoleOperator, false, s.handleRolloutCommand},
		{"GET /api/v1/ws", RoleReadOnly, true, s.handleWS},
		{"GET /api/v1/whoami", RoleReadOnly, false, s.handleWhoami},
		{"GET /api/v1/events", RoleReadOnly, true, s.handleEvents},
		{"GET /api/v1/openapi.json", "", false, handleOpenAPI},
	}
}

// handler builds the routing table: every route instrumented, the /api
// routes behind auth, the event streams behind their limit, every body
// bounded (limitBody), and the mux's own 404 and 405 answered as JSON.
func (s *Service) handler(auth *authenticator) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		var h http.Handler = rt.h
		if rt.stream {
			h = s.streamSlots.limit(h)
		}
		if rt.role != "" {
			h = auth.require(rt.role, h)
		}
		_, path, _ := cutMethod(rt.pattern)
		mux.Handle(rt.pattern, s.metrics.instrument(path, rt.stream, h))
	}
	return limitBody(int64(s.cfg.MaxBodyBytes), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// No route: let the mux decide between 404 and 405 (and its Allow
		// header), then say it in JSON.
		h, _ := mux.Handler(r)
		rec := &headerRecorder{h: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.status >= 300 && rec.status < 400 {
			// A path to clean ("//", "/./"): the mux's redirect is right.
			mux.ServeHTTP(w, r)
			return
		}
		if allow := rec.h.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		status := rec.status
		if status == 0 || status == http.StatusOK {
			status = http.StatusNotFound
		}
		msg := fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)
		if status == http.StatusMethodNotAllowed {
			msg = fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, rec.h.Get("Allow"))
		}
		s.metrics.requests.WithLabelValues("unmatched", r.Method, fmt.Sprint(status)).Inc()
		writeError(w, status, msg)
	}))
}

// cutMethod splits "GET /path" into its method and path.
func cutMethod(pattern string) (method, path string, ok bool) {
	for i := 0; i < len(pattern); i++ {
		if pattern[i] == ' ' {
			return pattern[:i], pattern[i+1:], true
		}
	}
	return "", pattern, false
}
