package app

import (
	"net/url"
	"path/filepath"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/alerting"
	"github.com/otawatch/otawatch/services/api"
	"github.com/otawatch/otawatch/services/audit"
	"github.com/otawatch/otawatch/services/bridge"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/ops"
	"github.com/otawatch/otawatch/services/projector"
	"github.com/otawatch/otawatch/services/rollout"
)

// Config is the whole configuration file. Every key is also settable from
// the environment: OTAWATCH_ plus the key path in upper case joined by "_".
type Config struct {
	// DataDir is where the embedded server keeps its store.
	DataDir    string           `yaml:"data_dir"`
	Log        LogConfig        `yaml:"log"`
	NATS       NATSConfig       `yaml:"nats"`
	MQTT       bridge.Config    `yaml:"mqtt"`
	ClickHouse projector.Config `yaml:"clickhouse"`
	HTTP       api.Config       `yaml:"http"`
	Alerting   alerting.Config  `yaml:"alerting"`
	Rollout    rollout.Config   `yaml:"rollout"`
	Devices    DevicesConfig    `yaml:"devices"`
	Audit      audit.Config     `yaml:"audit"`

	// Notify routes alerts to receivers (services/notify; cmd_notify.go
	// lists the receiver kinds).
	Notify NotifyConfig `yaml:"notify"`

	// Ops is where /healthz, /readyz and /metrics are served when the api
	// does not run (services/internal/ops).
	Ops ops.Config `yaml:"ops"`
}

// SetDefaults fills in unset top-level keys.
func (c *Config) SetDefaults() {
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.Devices.RegistryFile == "" {
		c.Devices.RegistryFile = filepath.Join(c.DataDir, "devices.json")
	}
	// The rollout service publishes desired state to the broker the bridge
	// reads unless told otherwise (the sections' own defaults ran first).
	if c.Rollout.Broker == "" {
		c.Rollout.Broker = c.MQTT.Broker
		if c.Rollout.Username == "" && c.Rollout.PasswordFile == "" {
			c.Rollout.Username, c.Rollout.PasswordFile = c.MQTT.Username, c.MQTT.PasswordFile
		}
		if c.Rollout.TLS == (conf.TLSClient{}) {
			c.Rollout.TLS = c.MQTT.TLS
		}
	}
}

// DevicesConfig is the "devices" section: the device registry that
// "otawatch devices" edits and the embedded NATS server checks devices
// against (services/internal/identity).
type DevicesConfig struct {
	// RegistryFile is the registry (default data_dir/devices.json).
	RegistryFile string `yaml:"registry_file"`
	// MosquittoPasswordFile, when set, is Mosquitto's password_file:
	// "otawatch devices add|import|remove" rewrite it from the registry
	// and the services' MQTT users (mqtt.username, rollout.username).
	MosquittoPasswordFile string `yaml:"mosquitto_password_file"`
	// MosquittoPIDFile, when set, is Mosquitto's pid_file: after rewriting
	// the password file the command sends that process SIGHUP, which makes
	// Mosquitto reread it. Without it, run "systemctl reload mosquitto".
	MosquittoPIDFile string `yaml:"mosquitto_pid_file"`
}

// LogConfig is the "log" section.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// SetDefaults fills in unset keys.
func (c *LogConfig) SetDefaults() {
	if c.Level == "" {
		c.Level = "info"
	}
	if c.Format == "" {
		c.Format = "text"
	}
}

// Validate reports every problem of the section.
func (c *LogConfig) Validate(p conf.Problems) {
	switch c.Level {
	case "debug", "info", "warn", "error":
	default:
		p.Addf("level", "%q is not one of debug, info, warn, error", c.Level)
	}
	if c.Format != "text" && c.Format != "json" {
		p.Addf("format", "%q is not text or json", c.Format)
	}
}

// NATSConfig is the "nats" section.
type NATSConfig struct {
	// URL is an external NATS server or cluster (comma-separated URLs);
	// empty runs the embedded server.
	URL string `yaml:"url"`
	// CredentialsFile is a NATS credentials file for URL.
	CredentialsFile string `yaml:"credentials_file"`
	// Listen is the embedded server's client address.
	Listen string `yaml:"listen"`
	// MQTTListen is the embedded MQTT listener; empty turns it off.
	MQTTListen string `yaml:"mqtt_listen"`
	// Replicas is each stream's number of copies.
	Replicas int `yaml:"replicas"`
	// MaxAge is how long streams keep events; 0 keeps them forever.
	MaxAge time.Duration `yaml:"max_age"`
	// DuplicateWindow is how long a Nats-Msg-Id is remembered.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	// MaxBytes bounds each stream's size (0: unbounded; REJECTED keeps
	// its own 1 GiB default); StreamMaxBytes overrides it per stream name.
	// See streamlimits.go for what happens at a bound.
	MaxBytes       conf.ByteSize  `yaml:"max_bytes"`
	StreamMaxBytes conf.ByteSizes `yaml:"stream_max_bytes"`

	// Username and PasswordFile authenticate to URL (deploy/nats/cluster.conf
	// names the user otawatch); the embedded server needs neither: its
	// identities' passwords are made under data_dir/credentials.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// ClientTLS is the TLS toward URL (CA, client certificate).
	ClientTLS conf.TLSClient `yaml:"client_tls"`
	// Anonymous admits clients without credentials on the embedded
	// server's client port, with the services' permissions; MQTTAnonymous
	// admits MQTT clients without credentials, with the whole device topic
	// space. Each only on a loopback listener, with a warning at start.
	Anonymous     bool `yaml:"anonymous"`
	MQTTAnonymous bool `yaml:"mqtt_anonymous"`
	// TLS is the embedded client port's TLS, MQTTTLS the MQTT listener's;
	// with mqtt_tls.client_ca_file a device may authenticate by a client
	// certificate whose common name is its id.
	TLS     conf.TLSServer `yaml:"tls"`
	MQTTTLS conf.TLSServer `yaml:"mqtt_tls"`
}

// SetDefaults fills in unset keys.
func (c *NATSConfig) SetDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:4222"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = events.DefaultDuplicateWindow
	}
}

// Validate reports every problem of the section.
func (c *NATSConfig) Validate(p conf.Problems) {
	if c.URL != "" {
		if u, err := url.Parse(c.URL); err != nil || u.Host == "" {
			p.Addf("url", "%q is not a NATS URL (nats://host:port)", c.URL)
		}
	}
	if !conf.CheckListen(p, "listen", c.Listen) && c.Anonymous && c.URL == "" {
		p.Addf("anonymous", "is allowed only on a loopback listen address, not %q: anyone who reaches the port could act as the services", c.Listen)
	}
	if c.MQTTListen != "" {
		if !conf.CheckListen(p, "mqtt_listen", c.MQTTListen) && c.MQTTAnonymous && c.URL == "" {
			p.Addf("mqtt_anonymous", "is allowed only on a loopback mqtt_listen address, not %q: anyone who reaches it could report for any device", c.MQTTListen)
		}
	}
	if c.CredentialsFile != "" && (c.Username != "" || c.PasswordFile != "") {
		p.Addf("credentials_file", "is set together with username/password_file: use one")
	}
	if (c.Username == "") != (c.PasswordFile == "") {
		p.Addf("password_file", "username and password_file go together")
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		p.Addf("replicas", "%d is out of range 1..5", c.Replicas)
	}
	if c.MaxAge < 0 {
		p.Addf("max_age", "must not be negative (0 keeps events forever)")
	}
	if c.DuplicateWindow < 0 {
		p.Addf("duplicate_window", "must not be negative")
	}
	if c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge {
		p.Addf("duplicate_window", "%s is longer than max_age %s", c.DuplicateWindow, c.MaxAge)
	}
	c.validateMaxBytes(p)
}

// StreamOptions are the stream settings of this configuration.
func (c *NATSConfig) StreamOptions() events.StreamOptions {
	return events.StreamOptions{Replicas: c.Replicas, MaxAge: c.MaxAge, DuplicateWindow: c.DuplicateWindow,
		MaxBytes: int64(c.MaxBytes), StreamMaxBytes: c.streamMaxBytes()}
}

// LoadConfig reads the file at path (none when empty), applies the
// environment, sets defaults and validates.
func LoadConfig(path string, env []string) (*Config, error) {
	var c Config
	// mqtt_listen defaults to on, but an explicit empty value turns it off,
	// so the default goes in before decoding.
	c.NATS.MQTTListen = "127.0.0.1:1883"
	// The same for the bridge's presence subscription.
	c.MQTT.PresenceTopic = bridge.DefaultPresenceTopic
	if err := conf.Load(path, env, &c); err != nil {
		return nil, err
	}
	return &c, nil
}
