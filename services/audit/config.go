package audit

import (
	"os"
	"time"

	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/lease"
)

// Config is the "audit" section.
type Config struct {
	// CheckpointInterval is the longest a stream's chain goes without a
	// checkpoint while it has new events.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// CheckpointEvery writes a checkpoint after this many events of a
	// stream, however soon.
	CheckpointEvery int `yaml:"checkpoint_every"`
	// LeaseBucket and LeaseTTL: the JetStream KV lease that makes one
	// instance write checkpoints; the others stand by.
	LeaseBucket string        `yaml:"lease_bucket"`
	LeaseTTL    time.Duration `yaml:"lease_ttl"`
	// SigningKeyFile, when set, is an Ed25519 private key (PEM, PKCS #8;
	// "otawatch audit keygen" writes one) that signs exports' manifests.
	SigningKeyFile string `yaml:"signing_key_file"`
}

// Defaults of the audit section.
const (
	DefaultCheckpointInterval = time.Minute
	DefaultCheckpointEvery    = 10000
	DefaultLeaseBucket        = "audit_lease"
	DefaultLeaseTTL           = 10 * time.Second
)

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = DefaultCheckpointEvery
	}
	if c.LeaseBucket == "" {
		c.LeaseBucket = DefaultLeaseBucket
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
}

// Validate checks the section.
func (c *Config) Validate(p conf.Problems) {
	if c.CheckpointInterval < time.Second {
		p.Addf("checkpoint_interval", "%s is under 1s", c.CheckpointInterval)
	}
	if c.CheckpointEvery < 1 {
		p.Addf("checkpoint_every", "%d must be at least 1", c.CheckpointEvery)
	}
	lease.CheckConfig(p, c.LeaseBucket, c.LeaseTTL)
	if c.SigningKeyFile != "" {
		if _, err := os.Stat(c.SigningKeyFile); err != nil {
			p.Addf("signing_key_file", "%v", err)
		}
	}
}
