package ops

import (
	"time"

	"github.com/otawatch/otawatch/services/internal/conf"
)

// Config is the "ops" section: where a process serves /healthz, /readyz
// and /metrics.
type Config struct {
	// Listen is the ops listener's address. Empty (the default) serves the
	// ops endpoints on http.listen when the api service is not among the
	// process's services (the api serves them itself otherwise), so
	// "otawatch run bridge" answers a probe on the port "otawatch run"
	// would. An address (host:port) serves them there, in every process,
	// api or not. ListenOff ("off") serves them nowhere but on the api.
	Listen string `yaml:"listen"`
	// Interval is how often the streams are checked and the durable
	// consumers' pending counts are read.
	Interval time.Duration `yaml:"interval"`
}

// ListenOff turns the ops listener off.
const ListenOff = "off"

// DefaultInterval is Config.Interval's default.
const DefaultInterval = 5 * time.Second

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
}

// Validate reports every problem of the section.
func (c *Config) Validate(p conf.Problems) {
	if c.Listen != "" && c.Listen != ListenOff {
		conf.CheckListen(p, "listen", c.Listen)
	}
	if c.Interval < 100*time.Millisecond {
		p.Addf("interval", "%s is shorter than 100ms: every check asks JetStream about every stream", c.Interval)
	}
}
