package rollout

import "github.com/otawatch/otawatch/services/internal/conf"

// Config is the rollout service's section of the configuration ("rollout").
type Config struct{}

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {}

// Validate reports every problem of the section.
func (c *Config) Validate(p conf.Problems) {}
