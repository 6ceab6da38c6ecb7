package rollout

import (
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/lease"
)

// Config is the rollout service's section of the configuration ("rollout").
// The job defaults (waves, gate, failure policy, timeout, rate, soak) are
// written into each job's spec when it is created, so a running job never
// changes behaviour with the configuration.
type Config struct {
	// Broker is the MQTT broker the desired state goes to (tcp://host:port).
	// Empty in the file means the bridge's (mqtt.broker, with its username
	// and password_file); built directly, DefaultBroker.
	Broker string `yaml:"broker"`
	// ClientID is the MQTT client id; empty makes a unique one per instance
	// ("otawatch-rollout-<random>"), since two instances with one id would
	// disconnect each other.
	ClientID string `yaml:"client_id"`
	// Instance names this instance: the driver lease's holder, as
	// operators see it in the lease bucket and in log lines, and the
	// suffix of the default client id. Empty is a random name per start.
	Instance string `yaml:"instance"`
	Username string `yaml:"username"`
	// PasswordFile holds the MQTT password.
	PasswordFile string `yaml:"password_file"`
	// TLS is the broker connection's TLS (CA, client certificate) for an
	// ssl://, tls://, mqtts:// or wss:// broker.
	TLS conf.TLSClient `yaml:"tls"`

	// Waves and WaveSize are a new job's default plan: waves of WaveSize
	// devices, at most Waves of them (1500 devices: 15 waves of 100; more
	// devices: 15 larger waves).
	Waves    int `yaml:"waves"`
	WaveSize int `yaml:"wave_size"`
	// Gate is the share of a wave's online devices that must complete.
	Gate float64 `yaml:"gate"`
	// MaxFailure, MinFinished and OnFailure are the default failure policy.
	MaxFailure  float64 `yaml:"max_failure"`
	MinFinished int     `yaml:"min_finished"`
	OnFailure   string  `yaml:"on_failure"`
	// DeviceTimeout is the default per-device timeout.
	DeviceTimeout time.Duration `yaml:"device_timeout"`
	// Rate is the default cap on desired-state messages per second.
	Rate float64 `yaml:"rate"`
	// Soak is the default watch time of a gated wave.
	Soak time.Duration `yaml:"soak"`
	// AllowInsecureURLs lets a job's firmware URL be http rather than
	// https (a lab without TLS). Off by default: over http anyone on the
	// path can swap the image a device downloads.
	AllowInsecureURLs bool `yaml:"allow_insecure_urls"`

	// LeaseBucket and LeaseTTL: the JetStream KV lease that makes one
	// instance the driver. A driver that cannot renew steps down after
	// two thirds of LeaseTTL; another takes over after LeaseTTL.
	LeaseBucket string        `yaml:"lease_bucket"`
	LeaseTTL    time.Duration `yaml:"lease_ttl"`
	// Tick is how often the driver evaluates gates and sends a batch.
	Tick time.Duration `yaml:"tick"`
	// PublishTimeout bounds the wait for the broker's PUBACK of a batch.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// RetainedWait bounds the look at retained messages after a restart,
	// for devices whose send was recorded but not confirmed.
	RetainedWait time.Duration `yaml:"retained_wait"`
	// MaxBatch caps the devices sent per tick and job.
	MaxBatch int `yaml:"max_batch"`
}

// Defaults of the rollout section.
const (
	DefaultBroker        = "tcp://127.0.0.1:1883"
	DefaultWaves         = 15
	DefaultWaveSize      = 100
	DefaultGate          = 0.9
	DefaultMaxFailure    = 0.1
	DefaultMinFinished   = 10
	DefaultDeviceTimeout = 30 * time.Minute
	DefaultRate          = 100
	DefaultLeaseBucket   = "rollout_lease"
	DefaultLeaseTTL      = 10 * time.Second
	DefaultTick          = 100 * time.Millisecond
	DefaultMaxBatch      = 1000
)

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.Waves == 0 {
		c.Waves = DefaultWaves
	}
	if c.WaveSize == 0 {
		c.WaveSize = DefaultWaveSize
	}
	if c.Gate == 0 {
		c.Gate = DefaultGate
	}
	if c.MaxFailure == 0 {
		c.MaxFailure = DefaultMaxFailure
	}
	if c.MinFinished == 0 {
		c.MinFinished = DefaultMinFinished
	}
	if c.OnFailure == "" {
		c.OnFailure = events.OnFailurePause
	}
	if c.DeviceTimeout == 0 {
		c.DeviceTimeout = DefaultDeviceTimeout
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.LeaseBucket == "" {
		c.LeaseBucket = DefaultLeaseBucket
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Tick == 0 {
		c.Tick = DefaultTick
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.RetainedWait == 0 {
		c.RetainedWait = 2 * time.Second
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
}

// Validate reports every problem of the section.
func (c *Config) Validate(p conf.Problems) {
	// An empty broker is filled in from mqtt.broker by the app, or by New.
	if c.Broker != "" {
		conf.CheckMQTTBroker(p, "broker", c.Broker)
		conf.CheckMQTTTLS(p, "tls", c.Broker, c.TLS)
	}
	conf.CheckMQTTClientID(p, "client_id", c.ClientID)
	conf.CheckMQTTClientID(p, "instance", c.Instance) // the default client id ends in it
	if c.Waves < 1 {
		p.Addf("waves", "%d must be at least 1", c.Waves)
	}
	if c.WaveSize < 1 {
		p.Addf("wave_size", "%d must be at least 1", c.WaveSize)
	}
	if c.Gate <= 0 || c.Gate > 1 {
		p.Addf("gate", "%v is out of range (0, 1]", c.Gate)
	}
	if c.MaxFailure < 0 || c.MaxFailure > 1 {
		p.Addf("max_failure", "%v is out of range [0, 1]", c.MaxFailure)
	}
	if c.MinFinished < 1 {
		p.Addf("min_finished", "%d must be at least 1", c.MinFinished)
	}
	if c.OnFailure != events.OnFailurePause && c.OnFailure != events.OnFailureAbort {
		p.Addf("on_failure", "%q is not pause or abort", c.OnFailure)
	}
	if c.DeviceTimeout < 0 {
		p.Addf("device_timeout", "must not be negative")
	}
	if c.Rate <= 0 {
		p.Addf("rate", "%v must be positive", c.Rate)
	}
	if c.Soak < 0 {
		p.Addf("soak", "must not be negative")
	}
	lease.CheckConfig(p, c.LeaseBucket, c.LeaseTTL)
	if c.Tick <= 0 || c.Tick > c.LeaseTTL/3 {
		p.Addf("tick", "%s must be positive and at most a third of lease_ttl", c.Tick)
	}
	if c.PublishTimeout <= 0 {
		p.Addf("publish_timeout", "must be positive")
	}
	if c.RetainedWait <= 0 {
		p.Addf("retained_wait", "must be positive")
	}
	if c.MaxBatch < 1 {
		p.Addf("max_batch", "%d must be at least 1", c.MaxBatch)
	}
}
