// Package natsd runs the embedded NATS server: JetStream with the file store
// under the data dir, and optionally the server's own MQTT listener. It is the
// default, one-machine event log; with nats.url set otawatch connects to an
// existing server or cluster instead and this package is not used.
package natsd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config is the embedded server's configuration.
type Config struct {
	// StoreDir is where JetStream keeps its files.
	StoreDir string
	// Listen is the client address, host:port; port -1 picks a free port.
	Listen string
	// MQTTListen is the MQTT listener's address; empty turns it off.
	MQTTListen string
	// ServerName names the server (MQTT needs one); default "otawatch".
	ServerName string
	// ReadyTimeout bounds the wait for the server to accept connections.
	ReadyTimeout time.Duration
	// Auth decides who connects and what each identity may do (auth.go).
	Auth Auth
	// TLS is the client port's TLS, MQTTTLS the MQTT listener's; nil: none.
	// With ClientCAs set, MQTT devices may authenticate by certificate.
	TLS, MQTTTLS *tls.Config
	// MaxPayload bounds one message, and so one MQTT publish; 0: 1 MiB.
	MaxPayload int32
	// HoldDevices makes the MQTT listener answer a device's CONNECT (any
	// MQTT client but UserBridge and UserRollout) only once a persistent
	// session subscribes to device reports, so that no report is
	// acknowledged before something keeps it (hold.go). Set it when the
	// bridge reads this listener. HoldTimeout bounds a device's wait
	// (DefaultHoldTimeout); then it is refused and retries.
	HoldDevices bool
	HoldTimeout time.Duration
	// Log receives the server's warnings and errors; nil: discarded.
	Log *slog.Logger
}

// Server is a running embedded NATS server.
type Server struct {
	srv  *server.Server
	opts *server.Options // the server's own options: it writes resolved ports back
	log  *slog.Logger
	hold *deviceHold // nil unless Config.HoldDevices
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := migrateGlobalStore(cfg.StoreDir, log); err != nil {
		return nil, err
	}
	opts, err := options(cfg)
	if err != nil {
		return nil, err
	}
	auth := &authenticator{auth: cfg.Auth, log: log}
	if cfg.HoldDevices && cfg.MQTTListen != "" {
		auth.hold = newDeviceHold(cfg.HoldTimeout, log)
	}
	opts.CustomClientAuthentication = auth
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("new embedded nats server: %w", err)
	}
	// fatal carries the server's first fatal error (a port in use, a store
	// it cannot open): the start fails at once with it instead of waiting
	// out ReadyTimeout.
	fatal := make(chan string, 1)
	srv.SetLoggerV2(serverLogger{log: log, fatal: fatal}, false, false, false)
	// The authenticator binds clients to the accounts, which exist only
	// now; no client connects before Start.
	if auth.services, err = srv.LookupAccount(ServicesAccount); err == nil {
		auth.devices, err = srv.LookupAccount(DevicesAccount)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded nats accounts: %w", err)
	}
	go srv.Start()
	timeout := cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ready := make(chan bool, 1)
	go func() { ready <- srv.ReadyForConnections(timeout) }()
	select {
	case ok := <-ready:
		if !ok {
			auth.hold.shutdown()
			srv.Shutdown()
			return nil, fmt.Errorf("embedded nats server not ready after %s (its errors are logged with component=nats)", timeout)
		}
	case msg := <-fatal:
		auth.hold.shutdown()
		srv.Shutdown() // the readiness poll gives up on its own
		return nil, fmt.Errorf("start embedded nats server: %s", msg)
	}
	if auth.hold != nil {
		go auth.hold.watch(func() (bool, error) { return reportsSubscribed(srv) })
	}
	return &Server{srv: srv, opts: opts, log: log, hold: auth.hold}, nil
}

// migrateGlobalStore moves a store written before the services had an
// account of their own (in the global account, $G) to ServicesAccount,
// so an upgraded otawatch keeps its history.
func migrateGlobalStore(storeDir string, log *slog.Logger) error {
	root := filepath.Join(filepath.Clean(storeDir), "jetstream")
	old, dst := filepath.Join(root, server.DEFAULT_GLOBAL_ACCOUNT), filepath.Join(root, ServicesAccount)
	if _, err := os.Stat(old); err != nil {
		return nil
	}
	if _, err := os.Stat(dst); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("migrate jetstream store: %w", err)
	}
	if err := os.Rename(old, dst); err != nil {
		return fmt.Errorf("migrate jetstream store from %s to %s: %w", old, dst, err)
	}
	log.Warn("moved the jetstream store of the global account to the services account", "from", old, "to", dst)
	return nil
}

func options(cfg Config) (*server.Options, error) {
	host, port, err := splitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats listen address %q: %w", cfg.Listen, err)
	}
	name := cfg.ServerName
	if name == "" {
		name = "otawatch"
	}
	opts := &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Clean(cfg.StoreDir),
		NoSigs:     true,
		MaxPayload: cfg.MaxPayload,
		TLSConfig:  cfg.TLS,
		TLS:        cfg.TLS != nil,
	}
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = 1 << 20
	}
	if err := opts.ProcessConfigString(accountsConfig(cfg.MQTTListen != "")); err != nil {
		return nil, fmt.Errorf("embedded nats accounts: %w", err)
	}
	// The MQTT listener keeps one JetStream consumer per QoS 1
	// subscription of a persistent session, all on one stream, and the
	// server's default caps a stream at 1000 consumers: device 1001 and
	// on get SUBACK 0x80 and never receive their desired state.
	opts.JetStreamLimits.DefaultMaxConsumers = -1
	if cfg.MQTTListen != "" {
		mh, mp, err := splitHostPort(cfg.MQTTListen)
		if err != nil {
			return nil, fmt.Errorf("mqtt listen address %q: %w", cfg.MQTTListen, err)
		}
		opts.MQTT.Host = mh
		opts.MQTT.Port = mp
		opts.MQTT.TLSConfig = cfg.MQTTTLS
	}
	return opts, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q is not a number", p)
	}
	if port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("port %d is out of range", port)
	}
	return host, port, nil
}

// ClientURL is the URL clients outside this process connect to.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// MQTTAddr is the MQTT listener's address (host:port), or "" when it is off.
func (s *Server) MQTTAddr() string {
	if s.opts.MQTT.Port == 0 {
		return ""
	}
	// With port -1 the server picked one and wrote it back into its options.
	return net.JoinHostPort(s.opts.MQTT.Host, strconv.Itoa(s.opts.MQTT.Port))
}

// Connect opens an in-process connection (no TCP), for services running in
// the same process.
func (s *Server) Connect(name string, extra ...nats.Option) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.InProcessServer(s.srv), nats.Name(name)}, extra...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect in-process to embedded nats: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server and waits until it has stopped.
func (s *Server) Shutdown() {
	s.hold.shutdown()
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}

// serverLogger sends the server's log to otawatch's, as component=nats:
// warnings and errors as such, notices at debug (a start prints a dozen).
// A fatal error also goes to fatal, when it has room.
type serverLogger struct {
	log   *slog.Logger
	fatal chan<- string
}

func (l serverLogger) Noticef(format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...))
}
func (l serverLogger) Warnf(format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...))
}
func (l serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
func (l serverLogger) Errorf(format string, v ...any) {
	l.log.Error(fmt.Sprintf(format, v...))
}
func (l serverLogger) Debugf(format string, v ...any) {}
func (l serverLogger) Tracef(format string, v ...any) {}

// DisconnectDevices closes the MQTT connections of the named devices (after
// they left the registry, so their next connect is refused).
func (s *Server) DisconnectDevices(ids []string) {
	for _, id := range ids {
		connz, err := s.srv.Connz(&server.ConnzOptions{Account: DevicesAccount, User: id, Username: true, Limit: 1 << 16})
		if err != nil {
			s.log.Warn("list connections of a removed device", "device_id", id, "err", err)
			continue
		}
		for _, c := range connz.Conns {
			if err := s.srv.DisconnectClientByID(c.Cid); err != nil {
				s.log.Warn("disconnect a removed device", "device_id", id, "err", err)
				continue
			}
			s.log.Info("disconnected a device removed from the registry", "device_id", id, "cid", c.Cid)
		}
	}
}
