package simulator

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/identity"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// Mode is how devices decide to update.
type Mode string

// Modes of a fleet.
const (
	// ModeStandalone: devices update on their own, at a fleet-wide rate.
	ModeStandalone Mode = "standalone"
	// ModeFleet: devices install what their desired-state topic asks for.
	ModeFleet Mode = "fleet"
)

// Defaults of FleetConfig.
const (
	DefaultBroker             = "tcp://127.0.0.1:1883"
	DefaultType               = "sensor"
	DefaultClientIDPrefix     = "sim"
	DefaultFromVersion        = "4.1.5"
	DefaultRate               = 100
	DefaultDurationMean       = 127 * time.Second
	DefaultDurationStddev     = 40 * time.Second
	DefaultConnectConcurrency = 32
	DefaultAckTimeout         = 10 * time.Second
	DefaultMaxInFlight        = 4096
	DefaultOfflineFor         = 10 * time.Minute
	DefaultOfflineWithin      = 30 * time.Minute
)

// DefaultErrorCodes are the errorCode values failed updates report unless
// FleetConfig.ErrorCodes says otherwise.
var DefaultErrorCodes = []string{
	"E_DOWNLOAD_TIMEOUT", "E_CHECKSUM_MISMATCH", "E_INSUFFICIENT_STORAGE", "E_FLASH_WRITE", "E_BOOT_VERIFY",
}

// DefaultBackoff is the pause before each retry of a report publish (the seed
// devices' 5 s, 15 s, 45 s), in device time.
var DefaultBackoff = []time.Duration{5 * time.Second, 15 * time.Second, 45 * time.Second}

// ErrCodeReportUndelivered is the errorCode of an update a device gave up
// because its report could not be delivered after every retry.
const ErrCodeReportUndelivered = "E_REPORT_UNDELIVERED"

// FleetConfig configures a Fleet. Zero values take the defaults above.
type FleetConfig struct {
	// Broker is the MQTT broker URL (tcp://host:port).
	Broker string
	// Username and Password are every connection's, unless devices
	// authenticate as themselves (DevicePasswords, PasswordSecret).
	Username string
	Password string
	// DevicePasswords, when set, authenticate each device as itself, as
	// real devices do (DESIGN.md, "Trust boundary"): username = device id,
	// password = DevicePasswords[id]. It must hold every device of the
	// fleet. ReadCredentials reads it from a file.
	DevicePasswords map[string]string
	// PasswordSecret, when set, authenticates each device as itself with
	// the password identity.DerivePassword(PasswordSecret, id), which
	// "otawatch devices import --password-secret-file" registers: a fleet
	// of thousands needs no file of passwords.
	PasswordSecret []byte
	// Mode is standalone (the default) or fleet.
	Mode Mode
	// Devices is the fleet size. Ids are d-00001, d-00002, ...
	Devices int
	// Types are the device types; devices are dealt to them in turn.
	Types []string
	// ClientIDPrefix starts every MQTT client id: "{prefix}-{type}-{id}" per
	// device, "{prefix}-conn-{n}" per multiplexed connection. Two simulators
	// on one broker need different prefixes.
	ClientIDPrefix string
	// Connections multiplexes the devices over this many MQTT connections;
	// 0 gives each device its own (see the package doc for the tradeoff).
	Connections int
	// Wildcard makes each multiplexed connection subscribe one filter per
	// device type (iot-2/type/{type}/id/+/shadow/delta) instead of one topic
	// per device. Every connection then receives every device's desired
	// state and drops those of other connections' devices: Connections
	// times the traffic, but one subscription per session, which brokers
	// that cap a session's subscriptions need (the NATS MQTT listener
	// refuses the 64th QoS 1 subscription of a session at its default
	// max_ack_pending of 1024).
	Wildcard bool
	// ConnectConcurrency bounds connection attempts in progress.
	ConnectConcurrency int
	// FromVersion is the firmware every device starts with (X.Y.Z).
	FromVersion string

	// Rate is the standalone fleet's reports per second; 0 is as fast as
	// the broker acknowledges (bounded by MaxInFlight).
	Rate float64
	// Count stops a standalone fleet after this many reports; 0 loops.
	Count int64
	// MaxInFlight bounds standalone reports published but not acknowledged.
	MaxInFlight int

	// TimeScale divides every device-time duration (install, backoff,
	// offline); 60 runs an hour in a minute.
	TimeScale float64
	// DurationMean and DurationStddev shape the log-normal install duration.
	DurationMean   time.Duration
	DurationStddev time.Duration
	// FailureRate is the probability (0..1) that an install fails.
	FailureRate float64
	// ErrorCodes are the errorCode values of failed installs, drawn uniformly.
	ErrorCodes []string

	// OfflineShare is the share (0..1) of a fleet-mode fleet that goes
	// offline once: at a time drawn uniformly from [0, OfflineWithin] after
	// the fleet is connected, for OfflineFor x U(0.5, 1.5). A device busy
	// with an update goes offline when the update is over.
	OfflineShare  float64
	OfflineWithin time.Duration
	OfflineFor    time.Duration

	// NoPresence turns off the presence contract in fleet mode. By
	// default a fleet-mode device with its own connection sets its MQTT
	// will to its presence topic (events.PresenceTopic) = "offline" and
	// publishes "online" there each time it connects; its outages drop the
	// connection without a DISCONNECT, so the broker publishes the will.
	// Multiplexed connections (Connections > 0) have one will for many
	// devices and never do it.
	NoPresence bool

	// APIURL, when set, is otawatch's HTTP API: a device coming back online
	// asks it for its shadow delta. APIToken is sent as a bearer token.
	APIURL   string
	APIToken string

	// AckTimeout bounds the wait for one report's PUBACK (wall time, not
	// scaled); a publish not acknowledged by then counts as failed.
	AckTimeout time.Duration
	// Backoff is the pause before each retry of a failed report publish, in
	// device time (at least 100 ms of clock time once scaled); its length is
	// the number of retries.
	Backoff []time.Duration

	// Seed seeds every device's RNG.
	Seed uint64
	// Clock is the time source (svc.Clock, as every service's); nil is the
	// wall clock. Devices never sleep: every wait is a timer, so a test's
	// clock runs a whole update cycle by advancing time.
	Clock svc.Clock
}

// SetDefaults fills in unset fields.
func (c *FleetConfig) SetDefaults() {
	if c.Broker == "" {
		c.Broker = DefaultBroker
	}
	if c.Mode == "" {
		c.Mode = ModeStandalone
	}
	if len(c.Types) == 0 {
		c.Types = []string{DefaultType}
	}
	if c.ClientIDPrefix == "" {
		c.ClientIDPrefix = DefaultClientIDPrefix
	}
	if c.ConnectConcurrency == 0 {
		c.ConnectConcurrency = DefaultConnectConcurrency
	}
	if c.FromVersion == "" {
		c.FromVersion = DefaultFromVersion
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.TimeScale == 0 {
		c.TimeScale = 1
	}
	if c.DurationMean == 0 {
		c.DurationMean = DefaultDurationMean
		if c.DurationStddev == 0 {
			c.DurationStddev = DefaultDurationStddev
		}
	}
	if len(c.ErrorCodes) == 0 {
		c.ErrorCodes = DefaultErrorCodes
	}
	if c.OfflineFor == 0 {
		c.OfflineFor = DefaultOfflineFor
	}
	if c.OfflineWithin == 0 {
		c.OfflineWithin = DefaultOfflineWithin
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = DefaultAckTimeout
	}
	if c.Backoff == nil {
		c.Backoff = DefaultBackoff
	}
	if c.Clock == nil {
		c.Clock = svc.RealClock{}
	}
}

// Validate reports every problem of the configuration.
func (c *FleetConfig) Validate(p conf.Problems) {
	if u, err := url.Parse(c.Broker); err != nil || u.Host == "" {
		p.Addf("broker", "%q is not an MQTT broker URL (tcp://host:port)", c.Broker)
	}
	if c.Mode != ModeStandalone && c.Mode != ModeFleet {
		p.Addf("mode", "%q is not standalone or fleet", c.Mode)
	}
	if c.Devices < 1 || c.Devices > 9_999_999 {
		p.Addf("devices", "%d is out of range 1..9999999", c.Devices)
	}
	for _, t := range c.Types {
		if err := events.ValidateID("type id", t); err != nil {
			p.Addf("type", "%v", err)
		}
	}
	if strings.ContainsAny(c.ClientIDPrefix, "+#/ ") {
		p.Addf("client_id_prefix", "%q has one of + # / or a space", c.ClientIDPrefix)
	}
	if c.Connections < 0 {
		p.Addf("connections", "must not be negative (0 is one per device)")
	}
	if c.DevicePasswords != nil && c.PasswordSecret != nil {
		p.Addf("password_secret", "devices authenticate with a credentials file or a secret, not both")
	}
	if c.deviceAuth() {
		if c.Connections > 0 {
			p.Addf("connections", "devices that authenticate as themselves need a connection each (connections 0): a multiplexed connection has one identity")
		}
		if c.Username != "" {
			p.Addf("username", "devices authenticate as themselves; a username for every connection does not apply")
		}
	}
	if c.DevicePasswords != nil {
		width := max(5, len(strconv.Itoa(c.Devices)))
		var missing []string
		for i := 1; i <= c.Devices && i <= 9_999_999; i++ {
			if id := DeviceID(i, width); c.DevicePasswords[id] == "" {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			p.Addf("credentials", "no password for %d of %d devices (%s ...)", len(missing), c.Devices, strings.Join(missing[:min(3, len(missing))], ", "))
		}
	}
	if c.Wildcard && c.Connections == 0 {
		p.Addf("wildcard", "applies to multiplexed connections only (set connections)")
	}
	if c.ConnectConcurrency < 1 {
		p.Addf("connect_concurrency", "must be at least 1")
	}
	if _, ok := bumpPatch(c.FromVersion); !ok {
		p.Addf("from_version", "%q is not a version X.Y.Z", c.FromVersion)
	}
	if c.Rate < 0 {
		p.Addf("rate", "must not be negative (0 is unlimited)")
	}
	if c.Count < 0 {
		p.Addf("count", "must not be negative (0 loops)")
	}
	if c.MaxInFlight < 1 {
		p.Addf("max_in_flight", "must be at least 1")
	}
	if c.TimeScale <= 0 {
		p.Addf("time_scale", "must be positive")
	}
	if c.DurationMean <= 0 {
		p.Addf("duration_mean", "must be positive")
	}
	if c.DurationStddev < 0 {
		p.Addf("duration_stddev", "must not be negative")
	}
	if c.FailureRate < 0 || c.FailureRate > 1 {
		p.Addf("failure_rate", "%g is out of range 0..1", c.FailureRate)
	}
	for _, e := range c.ErrorCodes {
		if e == "" || len(e) > 128 {
			p.Addf("error_codes", "%q must be 1 to 128 bytes", e)
		}
	}
	if c.OfflineShare < 0 || c.OfflineShare > 1 {
		p.Addf("offline_share", "%g is out of range 0..1", c.OfflineShare)
	}
	if c.OfflineFor < 0 || c.OfflineWithin < 0 {
		p.Addf("offline_for", "offline durations must not be negative")
	}
	if c.APIURL != "" {
		if u, err := url.Parse(c.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.Addf("api", "%q is not an http(s) URL", c.APIURL)
		}
	}
	if c.AckTimeout <= 0 {
		p.Addf("ack_timeout", "must be positive")
	}
	for _, b := range c.Backoff {
		if b < 0 {
			p.Addf("backoff", "%s must not be negative", b)
		}
	}
}

// deviceAuth reports whether devices authenticate as themselves.
func (c *FleetConfig) deviceAuth() bool { return c.DevicePasswords != nil || c.PasswordSecret != nil }

// devicePassword is device id's password when devices authenticate as
// themselves.
func (c *FleetConfig) devicePassword(id string) string {
	if c.PasswordSecret != nil {
		return identity.DerivePassword(c.PasswordSecret, id)
	}
	return c.DevicePasswords[id]
}

// ReadCredentials reads a credentials file for FleetConfig.DevicePasswords:
// lines "id password" or "id,password", as "otawatch devices import" takes
// them.
func ReadCredentials(r io.Reader) (map[string]string, error) {
	creds, err := identity.ReadCredentials(r)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(creds))
	for _, c := range creds {
		out[c.ID] = c.Password
	}
	return out, nil
}

// check defaults and validates c, returning every problem as one error.
func (c *FleetConfig) check() error {
	c.SetDefaults()
	p := conf.NewProblems()
	c.Validate(p)
	if list := p.List(); len(list) > 0 {
		msgs := make([]string, len(list))
		for i, pr := range list {
			msgs[i] = pr.Key + ": " + pr.Reason
		}
		return fmt.Errorf("simulator configuration: %s", strings.Join(msgs, "; "))
	}
	return nil
}
