package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/alerting"
	"github.com/otawatch/otawatch/services/api"
	"github.com/otawatch/otawatch/services/audit"
	"github.com/otawatch/otawatch/services/bridge"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/identity"
	"github.com/otawatch/otawatch/services/internal/lease"
	"github.com/otawatch/otawatch/services/internal/ops"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/natsd"
	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/projector"
	"github.com/otawatch/otawatch/services/rollout"
)

// defaultGCPercent is otawatch run's GOGC unless the environment sets one.
const defaultGCPercent = 400

// serviceBuilders maps a service name to its constructor. The order of
// serviceNames is the order they start in.
func serviceBuilders() map[string]func(c *Config, d svc.Deps) (svc.Service, error) {
	return map[string]func(c *Config, d svc.Deps) (svc.Service, error){
		"bridge":    func(c *Config, d svc.Deps) (svc.Service, error) { return bridge.New(c.MQTT, d) },
		"projector": func(c *Config, d svc.Deps) (svc.Service, error) { return projector.New(c.ClickHouse, d) },
		"alerting":  func(c *Config, d svc.Deps) (svc.Service, error) { return alerting.New(c.Alerting, d) },
		"rollout":   func(c *Config, d svc.Deps) (svc.Service, error) { return rollout.New(c.Rollout, d) },
		"api":       func(c *Config, d svc.Deps) (svc.Service, error) { return api.New(c.HTTP, d) },
		"notify":    func(c *Config, d svc.Deps) (svc.Service, error) { return notify.New(c.Notify, d) },
		"audit":     func(c *Config, d svc.Deps) (svc.Service, error) { return audit.New(c.Audit, d) },
	}
}

func serviceNames() []string {
	return []string{"api", "projector", "alerting", "notify", "rollout", "audit", "bridge"}
}

// cmdRun is "otawatch run [service...]".
func cmdRun(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "run")
	file := fs.String("c", os.Getenv("OTAWATCH_CONFIG"), "config `FILE`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := LoadConfig(*file, env.Environ)
	if err != nil {
		return err
	}
	names, err := selectServices(cfg, fs.Args())
	if err != nil {
		return err
	}
	log := newLogger(env.Stderr, cfg.Log)
	// Every report allocates a little on its way through the bridge and the
	// consumers; with Go's default GOGC=100 the collector costs about 10 µs
	// a report (measured by scripts/bench ingest). The live heap is small
	// (fleet state, reports in flight), so trade memory for CPU. GOGC in the
	// environment still wins.
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
	// SIGINT/SIGTERM end ctx and SIGHUP arrives on env.reload (Main).
	return Run(ctx, cfg, names, log, env.reload)
}

// selectServices resolves the command line's service names: all by default,
// less the projector when no ClickHouse is configured.
func selectServices(cfg *Config, args []string) ([]string, error) {
	builders := serviceBuilders()
	if len(args) == 0 {
		var names []string
		for _, n := range serviceNames() {
			if n == "projector" && cfg.ClickHouse.Addr == "" {
				continue
			}
			names = append(names, n)
		}
		return names, nil
	}
	seen := map[string]bool{}
	for _, n := range args {
		if _, ok := builders[n]; !ok {
			return nil, fmt.Errorf("%w: unknown service %q (services: %v)", ErrUsage, n, serviceNames())
		}
		if n == "projector" && cfg.ClickHouse.Addr == "" {
			return nil, fmt.Errorf("service projector needs clickhouse.addr (or %s)", "OTAWATCH_CLICKHOUSE_ADDR")
		}
		seen[n] = true
	}
	var names []string
	for _, n := range serviceNames() {
		if seen[n] {
			names = append(names, n)
		}
	}
	return names, nil
}

// Infra is the infrastructure a process opens before its services: the
// embedded server (when no nats.url is set) and one NATS connection.
type Infra struct {
	Server  *natsd.Server   // nil with an external NATS
	Devices *identity.Store // the device registry the embedded MQTT listener checks; nil without one
	NC      *nats.Conn
	JS      jetstream.JetStream
}

// OpenInfra starts the embedded server or connects to nats.url, and makes
// sure every stream exists with the configured settings. The embedded
// server admits the built-in identities with the passwords under
// data_dir/credentials (made on the first start) and, on its MQTT
// listener, the devices of the registry; this process connects as the
// services' identity.
func OpenInfra(ctx context.Context, cfg *Config, log *slog.Logger, name string) (*Infra, error) {
	return openInfra(ctx, cfg, log, name, false)
}

// openInfra is OpenInfra; holdDevices has the embedded MQTT listener hold
// devices until the bridge has subscribed (natsd.Config.HoldDevices).
func openInfra(ctx context.Context, cfg *Config, log *slog.Logger, name string, holdDevices bool) (*Infra, error) {
	inf := &Infra{}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
	}
	var err error
	if cfg.NATS.URL == "" {
		var creds map[string]string
		inf.Server, inf.Devices, creds, err = startEmbedded(cfg, log, holdDevices)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(events.IdentityServices, creds[events.IdentityServices]))
		inf.NC, err = inf.Server.Connect(name, opts...)
	} else {
		var extra []nats.Option
		if extra, err = externalAuth(cfg.NATS); err == nil {
			inf.NC, err = nats.Connect(cfg.NATS.URL, append(opts, extra...)...)
			if err != nil {
				err = fmt.Errorf("connect to nats %s: %w", cfg.NATS.URL, err)
			}
		}
	}
	if err != nil {
		inf.Close()
		return nil, err
	}
	inf.JS, err = jetstream.New(inf.NC)
	if err != nil {
		inf.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := events.EnsureStreams(ctx, inf.JS, cfg.NATS.StreamOptions()); err != nil {
		inf.Close()
		return nil, err
	}
	return inf, nil
}

// startEmbedded starts the embedded server with its identities, its
// device registry (when the MQTT listener is on) and its TLS.
func startEmbedded(cfg *Config, log *slog.Logger, holdDevices bool) (*natsd.Server, *identity.Store, map[string]string, error) {
	creds, err := ensureCredentials(cfg.DataDir)
	if err != nil {
		return nil, nil, nil, err
	}
	tlsCfg, err := cfg.NATS.TLS.Config()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nats.tls: %w", err)
	}
	mqttTLS, err := cfg.NATS.MQTTTLS.Config()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nats.mqtt_tls: %w", err)
	}
	auth := natsd.Auth{Passwords: creds, AnonymousNATS: cfg.NATS.Anonymous, AnonymousMQTT: cfg.NATS.MQTTAnonymous}
	var store *identity.Store
	if cfg.NATS.MQTTListen != "" {
		if store, err = identity.OpenStore(cfg.Devices.RegistryFile, log); err != nil {
			return nil, nil, nil, err
		}
		auth.Devices = store
	}
	srv, err := natsd.Start(natsd.Config{
		StoreDir:    filepath.Join(cfg.DataDir, "jetstream"),
		Listen:      cfg.NATS.Listen,
		MQTTListen:  cfg.NATS.MQTTListen,
		Auth:        auth,
		TLS:         tlsCfg,
		MQTTTLS:     mqttTLS,
		HoldDevices: holdDevices,
		Log:         log.With("component", "nats"),
	})
	if err != nil {
		if store != nil {
			store.Close()
		}
		return nil, nil, nil, err
	}
	if store != nil {
		// A device removed from the registry loses its connection too,
		// not only its next one.
		store.OnChange(func(removed []string) { srv.DisconnectDevices(removed) })
	}
	warnAnonymous(log, cfg.NATS)
	log.Info("embedded nats started", "client_url", srv.ClientURL(), "mqtt", srv.MQTTAddr(),
		"store_dir", filepath.Join(cfg.DataDir, "jetstream"), "credentials", credentialsDir(cfg.DataDir))
	return srv, store, creds, nil
}

// bridgesOwnListener reports whether the bridge runs in this process and
// reads the embedded server's MQTT listener.
func bridgesOwnListener(cfg *Config, names []string) bool {
	return cfg.NATS.URL == "" && cfg.NATS.MQTTListen != "" && slices.Contains(names, "bridge") &&
		sameListener(cfg.MQTT.Broker, cfg.NATS.MQTTListen)
}

// claimInstance claims the data dir for this process (lease.Instance), so
// that after a crash a restart on the same data dir resumes its leases at
// once instead of standing by for their TTL. With the embedded server a
// data dir another live process holds is an error: two servers would open
// one store. With nats.url the data dir holds nothing else; a process that
// cannot claim it runs without an instance (its leases wait out a crashed
// predecessor's TTL, as a new instance's do) and says so.
func claimInstance(cfg *Config, log *slog.Logger) (*lease.Instance, error) {
	inst, err := lease.ClaimInstance(cfg.DataDir)
	switch {
	case err == nil:
		log.Debug("data dir claimed", "data_dir", cfg.DataDir, "instance", inst.ID())
		return inst, nil
	case cfg.NATS.URL == "":
		return nil, fmt.Errorf("%w (data_dir: each otawatch with the embedded server needs its own)", err)
	default:
		log.Info("running without a lasting instance id: after a crash, this process's leases wait out their TTL",
			"data_dir", cfg.DataDir, "err", err)
		return nil, nil
	}
}

// externalAuth are the connection options toward nats.url: a credentials
// file, or a user and password file, and TLS.
func externalAuth(c NATSConfig) ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case c.CredentialsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredentialsFile))
	case c.Username != "":
		pw, err := conf.ReadSecret(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("nats.password_file: %w", err)
		}
		opts = append(opts, nats.UserInfo(c.Username, pw))
	}
	tlsCfg, err := c.ClientTLS.Config()
	if err != nil {
		return nil, fmt.Errorf("nats.client_tls: %w", err)
	}
	if tlsCfg != nil {
		opts = append(opts, nats.Secure(tlsCfg))
	}
	return opts, nil
}

// Close drains the connection (so consumers finish what they hold) and
// stops the embedded server, in that order.
func (i *Infra) Close() {
	if i.NC != nil {
		if err := i.NC.Drain(); err == nil {
			for deadline := time.Now().Add(10 * time.Second); !i.NC.IsClosed() && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
		}
		i.NC.Close()
	}
	if i.Server != nil {
		i.Server.Shutdown()
	}
	if i.Devices != nil {
		i.Devices.Close()
	}
}

// reloader is a service that reloads its configuration on SIGHUP.
type reloader interface{ Reload() }

// errStopped ends the group when ctx ends (a signal, in the command).
var errStopped = errors.New("stop requested")

// Run opens the infrastructure, runs the named services in one oklog/run
// group until ctx ends or a service fails, and closes everything in reverse
// order. The end of ctx is a clean stop (nil). Each value on reload (SIGHUP,
// in the command) makes the services that can reload do so.
func Run(ctx context.Context, cfg *Config, names []string, log *slog.Logger, reload <-chan os.Signal) error {
	useEmbeddedBroker(cfg)
	inst, err := claimInstance(cfg, log)
	if err != nil {
		return err
	}
	defer inst.Close()
	// Every lease a service opens under ctx resumes at once what this data
	// dir's earlier run held when it died.
	ctx = lease.WithInstance(ctx, inst)
	// A bridge of this process reading the embedded listener: devices wait
	// for its subscription, so no report is acknowledged before it.
	inf, err := openInfra(ctx, cfg, log, "otawatch", bridgesOwnListener(cfg, names))
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped on request during start-up", "err", err)
			return nil
		}
		return err
	}
	defer inf.Close()

	health := svc.NewHealth()
	reg := ops.NewRegistry()
	deps := svc.Deps{Log: log, NC: inf.NC, JS: inf.JS, Streams: cfg.NATS.StreamOptions(), Health: health, Metrics: reg}
	watcher := ops.NewWatcher(inf.JS, neededStreams(names), cfg.Ops.Interval, health, log.With("component", "ops"))
	reg.MustRegister(watcher)
	var opsSrv *ops.Server
	if addr := opsAddr(cfg, names); addr != "" {
		if opsSrv, err = ops.Listen(addr, health, reg, log); err != nil {
			return fmt.Errorf("%w (set ops.listen to another address, or to %q)", err, ops.ListenOff)
		}
		defer opsSrv.Close()
	}
	var g run.Group
	addStopActor(&g, ctx)
	reloaders, err := addServices(&g, ctx, cfg, names, deps, reg, log)
	if err != nil {
		return err
	}
	{
		// Streams: the check behind /readyz's "streams" and the durable
		// consumers' pending counts on /metrics. Its context is not ctx:
		// the group's first actor to return decides how it ended, and that
		// must be the stop actor or a service.
		wctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { watcher.Run(wctx); return nil }, func(error) { cancel() })
	}
	if opsSrv != nil {
		// Ops: /healthz, /readyz and /metrics for this process.
		octx, cancel := context.WithCancel(context.Background())
		g.Add(func() error { return opsSrv.Serve(octx) }, func(error) { cancel() })
	}
	if len(reloaders) > 0 && reload != nil {
		addReloadActor(&g, reload, reloaders, log)
	}
	err = g.Run()
	if errors.Is(err, errStopped) {
		log.Info("stopped on request")
		return nil
	}
	if err == nil {
		// Every service returned on its own: nothing left to do.
		return nil
	}
	return err
}

// addStopActor makes the end of ctx (SIGINT or SIGTERM in the command) stop
// the group cleanly: it returns errStopped.
func addStopActor(g *run.Group, ctx context.Context) {
	stopped := make(chan struct{})
	g.Add(func() error {
		select {
		case <-ctx.Done():
			return errStopped
		case <-stopped:
			return nil
		}
	}, func(error) { close(stopped) })
}

// addServices builds the named services and adds one actor per service,
// which runs until its context ends; it returns those that reload.
func addServices(g *run.Group, ctx context.Context, cfg *Config, names []string, deps svc.Deps, reg prometheus.Registerer, log *slog.Logger) ([]reloader, error) {
	builders := serviceBuilders()
	var reloaders []reloader
	for _, name := range names {
		s, err := builders[name](cfg, deps)
		if err != nil {
			return nil, fmt.Errorf("build service %s: %w", name, err)
		}
		if r, ok := s.(reloader); ok {
			reloaders = append(reloaders, r)
		}
		if err := registerServiceMetrics(reg, s); err != nil {
			return nil, fmt.Errorf("metrics of service %s: %w", name, err)
		}
		sctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			log.Info("service started", "service", name)
			err := s.Run(sctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("service %s: %w", name, err)
			}
			log.Info("service stopped", "service", name)
			return nil
		}, func(error) { cancel() })
	}
	return reloaders, nil
}

// addReloadActor makes the services that reload their configuration
// (alert rules) do it on each value of reload.
func addReloadActor(g *run.Group, reload <-chan os.Signal, reloaders []reloader, log *slog.Logger) {
	done := make(chan struct{})
	g.Add(func() error {
		for {
			select {
			case <-reload:
				log.Info("reloading on request")
				for _, r := range reloaders {
					r.Reload()
				}
			case <-done:
				return nil
			}
		}
	}, func(error) { close(done) })
}
