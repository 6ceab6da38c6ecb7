package app

import (
	"slices"
	"strings"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
)

// minStreamBytes is the smallest byte limit a configuration may give a
// stream: below it a stream would refuse (or, REJECTED, drop) almost at
// once, which is a typo (a missing unit), not a plan.
const minStreamBytes = 1 << 20

// validateMaxBytes checks nats.max_bytes and nats.stream_max_bytes: sizes
// of at least 1 MiB (0 is unbounded; -1 too, for an override), and
// overrides only for streams that exist.
//
// What happens at a bound: SHADOW, ROLLOUT, ALERTS and NOTIFY refuse new
// events and keep every old one. The bridge then stops acknowledging MQTT,
// so reports wait at the broker (and devices retry) until the limit is
// raised and otawatch restarted; /readyz says so, and alerting raises
// stream-full from 95% on. REJECTED drops its oldest records.
func (c *NATSConfig) validateMaxBytes(p conf.Problems) {
	check := func(key string, v conf.ByteSize, minusOne bool) {
		switch {
		case v == 0 || (minusOne && v == -1):
		case v < 0:
			p.Addf(key, "%d must not be negative (0 is unbounded)", v)
		case v < minStreamBytes:
			p.Addf(key, "%d bytes is below the minimum of 1MiB (did you mean %dMiB?)", v, v)
		}
	}
	check("max_bytes", c.MaxBytes, false)
	names := events.StreamNames()
	for _, name := range c.StreamMaxBytes.Names() {
		key := "stream_max_bytes." + name
		if !slices.Contains(names, name) {
			p.Addf(key, "%q is not a stream (one of %s)", name, strings.Join(names, ", "))
			continue
		}
		check(key, c.StreamMaxBytes[name], true)
	}
}

// streamMaxBytes is stream_max_bytes in events' terms.
func (c *NATSConfig) streamMaxBytes() map[string]int64 {
	if len(c.StreamMaxBytes) == 0 {
		return nil
	}
	out := make(map[string]int64, len(c.StreamMaxBytes))
	for name, v := range c.StreamMaxBytes {
		out[name] = int64(v)
	}
	return out
}
