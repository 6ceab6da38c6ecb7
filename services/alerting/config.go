package alerting

import (
	"os"
	"time"

	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/fleet"
	"github.com/otawatch/otawatch/services/internal/lease"
)

// Config is the alerting service's section of the configuration ("alerting").
type Config struct {
	// RulesDir is a directory of rule files, reloaded when they change;
	// empty runs the built-in default rules (rules/*.yaml).
	RulesDir string `yaml:"rules_dir"`
	// ReloadInterval is how often RulesDir is checked for changes.
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// OfflineAfter is how long a device may be silent before it is
	// potentially offline: a device.presence event is published and it
	// leaves the success rate until it reports again.
	OfflineAfter time.Duration `yaml:"offline_after"`
	// TickInterval is how often time-based rules (stale-shadow) and
	// staleness are checked. Tick times are multiples of it, so a backtest
	// with the same interval ticks at the same times.
	TickInterval time.Duration `yaml:"tick_interval"`
	// EvalTimeout bounds the rule evaluations of one event.
	EvalTimeout time.Duration `yaml:"eval_timeout"`
	// SnapshotBucket is the JetStream KV bucket of the state snapshot.
	SnapshotBucket string `yaml:"snapshot_bucket"`
	// SnapshotInterval is how often the state is written there, when it
	// changed; a restart reads the log only after the snapshot.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// LeaseBucket and LeaseTTL: the JetStream KV lease that makes one
	// instance the active one; the others stand by (reading nothing) and
	// one takes over, from the last snapshot, within LeaseTTL of the
	// active one's end.
	LeaseBucket string        `yaml:"lease_bucket"`
	LeaseTTL    time.Duration `yaml:"lease_ttl"`
}

// Defaults of the alerting section.
const (
	DefaultTickInterval     = 5 * time.Second
	DefaultReloadInterval   = time.Second
	DefaultSnapshotInterval = time.Minute
	DefaultSnapshotBucket   = "otawatch_alerting"
	DefaultEvalTimeout      = 100 * time.Millisecond
	DefaultLeaseBucket      = "alerting_lease"
	DefaultLeaseTTL         = 10 * time.Second
)

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.OfflineAfter == 0 {
		c.OfflineAfter = fleet.DefaultOfflineAfter
	}
	if c.TickInterval == 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = DefaultReloadInterval
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = DefaultSnapshotInterval
	}
	if c.SnapshotBucket == "" {
		c.SnapshotBucket = DefaultSnapshotBucket
	}
	if c.LeaseBucket == "" {
		c.LeaseBucket = DefaultLeaseBucket
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.EvalTimeout == 0 {
		c.EvalTimeout = DefaultEvalTimeout
	}
}

// Validate reports every problem of the section.
func (c *Config) Validate(p conf.Problems) {
	if c.RulesDir != "" {
		if fi, err := os.Stat(c.RulesDir); err != nil {
			p.Addf("rules_dir", "%v", err)
		} else if !fi.IsDir() {
			p.Addf("rules_dir", "%q is not a directory", c.RulesDir)
		}
	}
	if c.OfflineAfter < time.Second {
		p.Addf("offline_after", "%s is shorter than 1s", c.OfflineAfter)
	}
	if c.TickInterval < 10*time.Millisecond || c.TickInterval > c.OfflineAfter {
		p.Addf("tick_interval", "%s is not between 10ms and offline_after (%s)", c.TickInterval, c.OfflineAfter)
	}
	if c.ReloadInterval < 10*time.Millisecond {
		p.Addf("reload_interval", "%s is shorter than 10ms", c.ReloadInterval)
	}
	if c.SnapshotInterval < time.Second {
		p.Addf("snapshot_interval", "%s is shorter than 1s", c.SnapshotInterval)
	}
	if c.EvalTimeout < time.Millisecond {
		p.Addf("eval_timeout", "%s is shorter than 1ms", c.EvalTimeout)
	}
	lease.CheckConfig(p, c.LeaseBucket, c.LeaseTTL)
	for _, ch := range c.SnapshotBucket {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-') {
			p.Addf("snapshot_bucket", "%q may only have A-Z a-z 0-9 _ -", c.SnapshotBucket)
			break
		}
	}
}
