package api

import (
	"net"

	"github.com/otawatch/otawatch/services/internal/conf"
)

// Config is the HTTP API's section of the configuration ("http").
type Config struct {
	// Listen is the HTTP address (host:port).
	Listen string `yaml:"listen"`
}

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
}

// Validate reports every problem of the section.
func (c *Config) Validate(p conf.Problems) {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		p.Addf("listen", "%q is not host:port: %v", c.Listen, err)
	}
}
