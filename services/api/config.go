package api

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/lease"
)

// Config is the HTTP API's section of the configuration ("http").
type Config struct {
	// Listen is the HTTP address (host:port). Port 0 picks a free port
	// (see Service.Addr).
	Listen string `yaml:"listen"`
	// TokensFile holds the API tokens, one per line: "ROLE TOKEN [NAME]"
	// where ROLE is read-only or operator (see ParseTokens). Empty means no
	// tokens: allowed only when Listen is a loopback address, and then every
	// caller is an anonymous operator (a warning is logged at start).
	TokensFile string `yaml:"tokens_file"`
	// ReadTimeout bounds reading a request, headers and body.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing a response. Event streams (SSE, the
	// dashboard WebSocket) lift it for themselves: they are meant to last.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// ShutdownTimeout bounds the graceful stop: requests in progress get
	// this long to finish when the service stops.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// DashboardRefresh is how often the dashboard's cached view is rebuilt
	// when something changed, and so the fastest the WebSocket pushes.
	DashboardRefresh time.Duration `yaml:"dashboard_refresh"`
	// SSEHeartbeat is the interval of the comment lines that keep an idle
	// Server-Sent Events stream (and the proxies in front of it) alive.
	SSEHeartbeat time.Duration `yaml:"sse_heartbeat"`
	// RolloutTimeout bounds one request to the rollout service.
	RolloutTimeout time.Duration `yaml:"rollout_timeout"`
	// MaxBodyBytes bounds a request body (1 MiB by default): a larger one
	// is answered 413 before a handler reads it, or as soon as reading
	// passes the bound when the length is not announced.
	MaxBodyBytes conf.ByteSize `yaml:"max_body_bytes"`
	// MaxStreams bounds the event streams open at once, Server-Sent
	// Events and WebSockets together (512 by default): each holds a
	// goroutine, a connection and, for SSE, a JetStream consumer. One more
	// is answered 503 with Retry-After.
	MaxStreams int `yaml:"max_streams"`
	// TLS serves HTTPS with tls.cert_file and tls.key_file (both, or
	// neither for plain HTTP); tls.client_ca_file asks browsers and
	// clients for a certificate and checks any they show (tokens are still
	// required).
	TLS conf.TLSServer `yaml:"tls"`
	// Snapshots is the snapshot index that makes the fleet at an instant
	// (GET /api/v1/fleet/state?at=, otawatch fleet at) fold only the
	// events after the newest snapshot before it (snapshots.go).
	Snapshots SnapshotConfig `yaml:"snapshots"`
}

// SnapshotConfig is the snapshot index's part of the section
// ("http.snapshots"). One api instance at a time writes snapshots (a
// lease); every instance, and the command line, reads them.
type SnapshotConfig struct {
	// Disabled stops this process writing snapshots; queries still read
	// the ones in the bucket, and without any fold the log from its start.
	Disabled bool `yaml:"disabled"`
	// Every is how many events (SHADOW, ROLLOUT and ALERTS together) the
	// read model applies between snapshots: about the most a query folds
	// after the snapshot it starts from.
	Every int `yaml:"every"`
	// Interval writes a snapshot this long after the last one when fewer
	// than Every events came meanwhile (and at least one did).
	Interval time.Duration `yaml:"interval"`
	// Keep bounds the snapshots kept. Past it, the one whose removal
	// leaves the smallest gap (in events) between its neighbours goes, so
	// the kept ones spread over the whole history, the newest always
	// among them. A snapshot is about 30 bytes a device gzip'd (300 kB
	// for 10,000 devices, BenchmarkFleetAt), plus the running jobs' plans.
	Keep int `yaml:"keep"`
	// Bucket is the JetStream KV bucket of the snapshots and their index.
	Bucket string `yaml:"bucket"`
	// LeaseBucket and LeaseTTL: the JetStream KV lease that makes one
	// instance the writer.
	LeaseBucket string        `yaml:"lease_bucket"`
	LeaseTTL    time.Duration `yaml:"lease_ttl"`
}

// Defaults of http.snapshots.
const (
	DefaultSnapshotEvery       = 50_000
	DefaultSnapshotInterval    = 10 * time.Minute
	DefaultSnapshotKeep        = 200
	DefaultSnapshotBucket      = "api_snapshots"
	DefaultSnapshotLeaseBucket = "api_snapshot_lease"
	DefaultSnapshotLeaseTTL    = 10 * time.Second
	// MaxSnapshotKeep bounds Keep: the index of the kept snapshots is one
	// KV value, within the server's max payload.
	MaxSnapshotKeep = 2000
)

// SetDefaults fills in unset keys.
func (c *SnapshotConfig) SetDefaults() {
	if c.Every == 0 {
		c.Every = DefaultSnapshotEvery
	}
	if c.Interval == 0 {
		c.Interval = DefaultSnapshotInterval
	}
	if c.Keep == 0 {
		c.Keep = DefaultSnapshotKeep
	}
	if c.Bucket == "" {
		c.Bucket = DefaultSnapshotBucket
	}
	if c.LeaseBucket == "" {
		c.LeaseBucket = DefaultSnapshotLeaseBucket
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultSnapshotLeaseTTL
	}
}

// Validate reports every problem of http.snapshots.
func (c *SnapshotConfig) Validate(p conf.Problems) {
	if c.Every < 1 {
		p.Addf("every", "%d is not a count of at least 1 event", c.Every)
	}
	if c.Interval < time.Second {
		p.Addf("interval", "%s is shorter than 1s", c.Interval)
	}
	if c.Keep < 2 || c.Keep > MaxSnapshotKeep {
		p.Addf("keep", "%d is not a count from 2 to %d", c.Keep, MaxSnapshotKeep)
	}
	if err := events.ValidateID("snapshot bucket", c.Bucket); err != nil {
		p.Addf("bucket", "%v", err)
	}
	lease.CheckConfig(p, c.LeaseBucket, c.LeaseTTL)
}

// Defaults of the section.
const (
	DefaultListen           = "127.0.0.1:8080"
	DefaultReadTimeout      = 30 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
	DefaultShutdownTimeout  = 10 * time.Second
	DefaultDashboardRefresh = time.Second
	DefaultSSEHeartbeat     = 15 * time.Second
	DefaultRolloutTimeout   = 10 * time.Second
	DefaultMaxBodyBytes     = 1 << 20
	DefaultMaxStreams       = 512
)

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	setDur(&c.ReadTimeout, DefaultReadTimeout)
	setDur(&c.WriteTimeout, DefaultWriteTimeout)
	setDur(&c.ShutdownTimeout, DefaultShutdownTimeout)
	setDur(&c.DashboardRefresh, DefaultDashboardRefresh)
	setDur(&c.SSEHeartbeat, DefaultSSEHeartbeat)
	setDur(&c.RolloutTimeout, DefaultRolloutTimeout)
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
}

// Validate reports every problem of the section. It reads the tokens file,
// so `otawatch check config` catches a bad one before a start does.
func (c *Config) Validate(p conf.Problems) {
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		p.Addf("listen", "%q is not host:port: %v", c.Listen, err)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout},
		{"shutdown_timeout", c.ShutdownTimeout}, {"dashboard_refresh", c.DashboardRefresh},
		{"sse_heartbeat", c.SSEHeartbeat}, {"rollout_timeout", c.RolloutTimeout},
	} {
		if d.v < 0 {
			p.Addf(d.key, "must not be negative")
		}
	}
	if c.MaxBodyBytes < 1 {
		p.Addf("max_body_bytes", "%d is not a size of at least 1 byte", c.MaxBodyBytes)
	}
	if c.MaxStreams < 1 {
		p.Addf("max_streams", "%d is not a count of at least 1", c.MaxStreams)
	}
	// TLS (a conf.Validator) is validated by conf.Decode's walk, as "tls".
	if c.TokensFile == "" {
		if err == nil && !conf.IsLoopback(host) {
			p.Addf("tokens_file", "is required when listen (%q) is not a loopback address: without tokens anyone who reaches the port could drive rollouts", c.Listen)
		}
		return
	}
	if _, err := LoadTokens(c.TokensFile); err != nil {
		p.Addf("tokens_file", "%v", err)
	}
}

// LoadTokens reads and parses a tokens file.
func LoadTokens(path string) ([]Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	defer f.Close()
	return ParseTokens(path, f)
}
