// Package natsd runs the embedded NATS server: JetStream with the file store
// under the data dir, and optionally the server's own MQTT listener. It is the
// default, one-machine event log; with nats.url set otawatch connects to an
// existing server or cluster instead and this package is not used.
package natsd

import (
	"fmt"
	"net"
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
}

// Server is a running embedded NATS server.
type Server struct {
	srv  *server.Server
	opts *server.Options // the server's own options: it writes resolved ports back
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	opts, err := options(cfg)
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("new embedded nats server: %w", err)
	}
	go srv.Start()
	timeout := cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if !srv.ReadyForConnections(timeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats server not ready after %s", timeout)
	}
	return &Server{srv: srv, opts: opts}, nil
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
		// Reports are small, but a rejected oversized payload still travels
		// to the REJECTED stream in full.
		MaxPayload: 8 << 20,
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
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
