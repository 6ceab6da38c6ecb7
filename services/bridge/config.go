package bridge

import (
	"strings"
	"time"

	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/lease"
)

// Config is the bridge's section of the configuration ("mqtt").
type Config struct {
	// Broker is the MQTT broker URL (tcp://host:port).
	Broker string `yaml:"broker"`
	// ClientID must be stable: the broker keeps the bridge's persistent
	// session (cleanSession=false) under it.
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username"`
	// PasswordFile holds the password; secrets never come from flags.
	PasswordFile string `yaml:"password_file"`
	// TLS is the broker connection's TLS (CA, client certificate) for an
	// ssl://, tls://, mqtts:// or wss:// broker.
	TLS conf.TLSClient `yaml:"tls"`
	// Topic is the subscription filter for device reports.
	Topic string `yaml:"topic"`
	// PresenceTopic is the subscription filter for device presence
	// messages (a device's will "offline" and its "online" on connect,
	// events.PresenceTopic), stored as device.presence events. Empty
	// turns presence off; the configuration file's loader puts
	// DefaultPresenceTopic in before decoding, so only an explicit empty
	// value does (a Config built in code has it off unless set).
	PresenceTopic string `yaml:"presence_topic"`
	// MaxInFlight bounds the reports being stored at once (JetStream
	// publishes awaiting their PubAck). Reports received beyond it wait
	// in memory, as many as the broker's in-flight window lets it send
	// unacknowledged (Mosquitto's max_inflight_messages).
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxPayload is the largest report accepted, in bytes.
	MaxPayload int `yaml:"max_payload"`
	// ConnectTimeout bounds one connection attempt.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// MaxReconnectInterval caps the reconnect backoff.
	MaxReconnectInterval time.Duration `yaml:"max_reconnect_interval"`
	// KeepAlive is the MQTT keep-alive: how soon a dead connection is noticed.
	KeepAlive time.Duration `yaml:"keep_alive"`
	// PublishTimeout bounds the wait for one JetStream PubAck before the
	// publish is tried again (same Nats-Msg-Id, so never stored twice).
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// DrainTimeout bounds the wait at stop for reports in flight; what is
	// not stored by then stays unacknowledged and comes back next session.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// LeaseBucket and LeaseTTL: the JetStream KV lease, keyed by client
	// id, that lets one bridge instance per client id connect while
	// others stand by (two connections with one client id would take the
	// session from each other in turn). A standby takes over within
	// LeaseTTL of the active one's end.
	LeaseBucket string        `yaml:"lease_bucket"`
	LeaseTTL    time.Duration `yaml:"lease_ttl"`
}

// Defaults of the bridge section.
const (
	DefaultBroker      = "tcp://127.0.0.1:1883"
	DefaultClientID    = "otawatch-bridge"
	DefaultTopic       = "iot-2/type/+/id/+/update/shadow"
	DefaultMaxInFlight = 1024
	DefaultMaxPayload  = 16 << 10
	DefaultLeaseBucket = "bridge_lease"
	DefaultLeaseTTL    = 10 * time.Second
)

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.Broker == "" {
		c.Broker = DefaultBroker
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MaxReconnectInterval == 0 {
		c.MaxReconnectInterval = 30 * time.Second
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 30 * time.Second
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.LeaseBucket == "" {
		c.LeaseBucket = DefaultLeaseBucket
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
}

// Validate reports every problem of the section.
func (c *Config) Validate(p conf.Problems) {
	conf.CheckMQTTBroker(p, "broker", c.Broker)
	conf.CheckMQTTClientID(p, "client_id", c.ClientID)
	conf.CheckMQTTTLS(p, "tls", c.Broker, c.TLS)
	if c.Topic == "" || strings.Count(c.Topic, "/") < 5 {
		p.Addf("topic", "%q does not look like iot-2/type/{typeId}/id/{deviceId}/update/shadow", c.Topic)
	}
	validatePresenceTopic(p, c.PresenceTopic, c.Topic)
	if c.MaxInFlight < 1 || c.MaxInFlight > 65535 {
		p.Addf("max_in_flight", "%d is out of range 1..65535", c.MaxInFlight)
	}
	if c.MaxPayload < 256 || c.MaxPayload > 1<<20 {
		p.Addf("max_payload", "%d is out of range 256..1048576 bytes", c.MaxPayload)
	}
	if c.ConnectTimeout < 0 {
		p.Addf("connect_timeout", "must not be negative")
	}
	if c.MaxReconnectInterval < 0 {
		p.Addf("max_reconnect_interval", "must not be negative")
	}
	if c.KeepAlive < time.Second {
		p.Addf("keep_alive", "%s is shorter than 1s", c.KeepAlive)
	}
	if c.PublishTimeout < 0 {
		p.Addf("publish_timeout", "must not be negative")
	}
	if c.DrainTimeout < 0 {
		p.Addf("drain_timeout", "must not be negative")
	}
	lease.CheckConfig(p, c.LeaseBucket, c.LeaseTTL)
}
