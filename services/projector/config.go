package projector

import (
	"net"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
)

// Config is the projector's section of the configuration ("clickhouse").
type Config struct {
	// Addr is the ClickHouse native-protocol address (host:port); empty
	// turns the projector off when all services run.
	Addr string `yaml:"addr"`
	// Database holds the read models (default "otawatch"); it is created
	// at start when missing.
	Database string `yaml:"database"`
	// Username and PasswordFile are the ClickHouse credentials (user
	// "default" without a password by default).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// BatchSize and BatchTimeout bound a batch: it is written when either is
	// reached.
	BatchSize    int           `yaml:"batch_size"`
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	// AckWait is how long JetStream waits for the projector's ack before it
	// redelivers a message. While ClickHouse is down the projector keeps
	// its batch alive (in-progress acks), so this only matters after a
	// crash: that is how long its unacked batch waits.
	AckWait time.Duration `yaml:"ack_wait"`
}

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.Database == "" {
		c.Database = "otawatch"
	}
	if c.Username == "" {
		c.Username = "default"
	}
	if c.BatchSize == 0 {
		c.BatchSize = 10000
	}
	if c.BatchTimeout == 0 {
		c.BatchTimeout = 200 * time.Millisecond
	}
	if c.AckWait == 0 {
		c.AckWait = time.Minute
	}
}

// Validate reports every problem of the section.
func (c *Config) Validate(p conf.Problems) {
	if c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			p.Addf("addr", "%q is not host:port: %v", c.Addr, err)
		}
	}
	if err := events.ValidateID("database", c.Database); err != nil {
		p.Addf("database", "%v", err)
	}
	if c.BatchSize < 1 || c.BatchSize > 1_000_000 {
		p.Addf("batch_size", "%d is out of range 1..1000000", c.BatchSize)
	}
	if c.BatchTimeout <= 0 {
		p.Addf("batch_timeout", "must be positive")
	}
	if c.AckWait < time.Second {
		p.Addf("ack_wait", "%s is shorter than 1s", c.AckWait)
	}
}
