package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/oklog/run"

	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/simulator"
)

// cmdSimulate is "otawatch simulate": a device fleet that speaks the device
// contract, standalone (devices update on their own at a rate) or as a fleet
// that installs what rollouts ask for.
func cmdSimulate(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "simulate")
	f := addSimulateFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	cfg, err := LoadConfig(*f.file, env.Environ)
	if err != nil {
		return err
	}
	fc, err := f.fleetConfig(cfg)
	if err != nil {
		return err
	}
	fleet, err := simulator.NewFleet(fc, newLogger(env.Stderr, cfg.Log))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return runFleet(ctx, env.Stdout, fleet, *f.duration, *f.progress)
}

// simulateFlags are the flags of "otawatch simulate". Most set fc
// directly; fleetConfig reads the others into it.
type simulateFlags struct {
	fc                                simulator.FleetConfig
	file, types, mode, codes          *string
	apiToken, credentials, secretFile *string
	presence                          *bool
	duration, progress                *time.Duration
}

// addSimulateFlags defines the flags of "otawatch simulate" on fs.
func addSimulateFlags(fs *flag.FlagSet) *simulateFlags {
	f := &simulateFlags{}
	fc := &f.fc
	f.file = fs.String("c", os.Getenv("OTAWATCH_CONFIG"), "config `FILE` (mqtt.broker, mqtt.username and mqtt.password_file are used)")
	fs.IntVar(&fc.Devices, "devices", 1500, "number of devices (ids d-00001, d-00002, ...)")
	fs.StringVar(&fc.Broker, "broker", "", "MQTT broker `URL` (default: mqtt.broker of the config, "+simulator.DefaultBroker+")")
	f.types = fs.String("type", simulator.DefaultType, "device type id(s), comma-separated; devices are dealt to them in turn")
	f.mode = fs.String("mode", string(simulator.ModeStandalone), "standalone: devices update on their own at --rate; fleet: devices install what their shadow/delta topic asks")
	fs.Float64Var(&fc.Rate, "rate", simulator.DefaultRate, "standalone: reports per second for the whole fleet (0: as fast as the broker acknowledges)")
	fs.Int64Var(&fc.Count, "count", 0, "standalone: stop after this many reports (0: loop)")
	fs.Float64Var(&fc.TimeScale, "time-scale", 1, "divide every device-time duration (install, backoff, outage) by this")
	fs.Float64Var(&fc.FailureRate, "failure-rate", 0.04, "probability that an install fails")
	f.codes = fs.String("error-codes", strings.Join(simulator.DefaultErrorCodes, ","), "errorCode values of failed installs, comma-separated")
	fs.DurationVar(&fc.DurationMean, "duration-mean", simulator.DefaultDurationMean, "mean install duration (device time, log-normal)")
	fs.DurationVar(&fc.DurationStddev, "duration-stddev", simulator.DefaultDurationStddev, "standard deviation of the install duration")
	fs.StringVar(&fc.FromVersion, "from-version", simulator.DefaultFromVersion, "firmware version every device starts with")
	fs.Float64Var(&fc.OfflineShare, "offline-share", 0, "fleet: share of devices that go offline once")
	fs.DurationVar(&fc.OfflineWithin, "offline-within", simulator.DefaultOfflineWithin, "fleet: outages start within this time of connecting (device time)")
	fs.DurationVar(&fc.OfflineFor, "offline-for", simulator.DefaultOfflineFor, "fleet: mean outage length (device time)")
	f.presence = fs.Bool("presence", true, "fleet: each device sets its MQTT will to its presence topic (\"offline\") and says \"online\" there on connect; outages drop the connection so the broker publishes the will")
	fs.StringVar(&fc.APIURL, "api", "", "fleet: otawatch HTTP API `URL`; devices back online GET their shadow delta there")
	f.apiToken = fs.String("api-token-file", "", "`FILE` holding a bearer token for --api")
	fs.IntVar(&fc.Connections, "connections", 0, "multiplex the devices over this many MQTT connections (0: one per device)")
	fs.BoolVar(&fc.Wildcard, "wildcard", false, "with --connections: one wildcard subscription per connection instead of one per device (needed on the NATS MQTT listener beyond 63 devices a connection)")
	fs.IntVar(&fc.ConnectConcurrency, "connect-concurrency", simulator.DefaultConnectConcurrency, "connection attempts in progress at once")
	fs.StringVar(&fc.ClientIDPrefix, "client-prefix", simulator.DefaultClientIDPrefix, "MQTT client id prefix ({prefix}-{type}-{id})")
	fs.DurationVar(&fc.AckTimeout, "ack-timeout", simulator.DefaultAckTimeout, "wait this long for a report's PUBACK before it counts as failed")
	f.duration = fs.Duration("duration", 0, "stop after this long (0: until interrupted, or --count)")
	fs.Uint64Var(&fc.Seed, "seed", 1, "seed of the devices' random draws (same seed, same outcomes)")
	f.progress = fs.Duration("progress", 5*time.Second, "print a progress line this often (0: only the summary)")
	f.credentials = fs.String("credentials", "", "each device authenticates as itself (username = device id) with its password from `FILE` (lines \"id password\", as otawatch devices import takes)")
	f.secretFile = fs.String("password-secret-file", "", "each device authenticates as itself with the password hex HMAC-SHA256(secret, id), the secret read from `FILE` (as otawatch devices import --password-secret-file registers them)")
	return f
}

// fleetConfig is the fleet the flags describe, completed from cfg (the
// broker, the bridge's MQTT user) and the secret files the flags name.
func (f *simulateFlags) fleetConfig(cfg *Config) (simulator.FleetConfig, error) {
	fc := f.fc
	fc.Mode, fc.NoPresence = simulator.Mode(*f.mode), !*f.presence
	fc.Types, fc.ErrorCodes = splitList(*f.types), splitList(*f.codes)
	if fc.Broker == "" {
		fc.Broker = cfg.MQTT.Broker
	}
	password, err := conf.ReadSecret(cfg.MQTT.PasswordFile)
	if err != nil {
		return fc, fmt.Errorf("mqtt.password_file: %w", err)
	}
	if fc.APIToken, err = conf.ReadSecret(*f.apiToken); err != nil {
		return fc, fmt.Errorf("--api-token-file: %w", err)
	}
	if fc.DevicePasswords, err = readDeviceCredentials(*f.credentials); err != nil {
		return fc, err
	}
	if fc.PasswordSecret, err = readPasswordSecret(*f.secretFile); err != nil {
		return fc, err
	}
	fc.Username, fc.Password = cfg.MQTT.Username, password
	if fc.DevicePasswords != nil || fc.PasswordSecret != nil {
		// Devices are themselves, not the bridge's user.
		fc.Username, fc.Password = "", ""
	}
	return fc, nil
}

// readDeviceCredentials reads --credentials (nil without one).
func readDeviceCredentials(path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--credentials: %w", err)
	}
	defer f.Close()
	creds, err := simulator.ReadCredentials(f)
	if err != nil {
		return nil, fmt.Errorf("--credentials %s: %w", path, err)
	}
	return creds, nil
}

// readPasswordSecret reads --password-secret-file (nil without one), which
// must not be empty.
func readPasswordSecret(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	s, err := conf.ReadSecret(path)
	if err != nil {
		return nil, fmt.Errorf("--password-secret-file: %w", err)
	}
	if s == "" {
		return nil, fmt.Errorf("--password-secret-file %s is empty", path)
	}
	return []byte(s), nil
}

// runFleet runs fleet until ctx ends, after duration (0: no limit) or when
// the fleet stops by itself (--count), with a progress line every progress
// (0: none), and prints the summary.
func runFleet(ctx context.Context, w io.Writer, fleet *simulator.Fleet, duration, progress time.Duration) error {
	start := time.Now()
	var g run.Group
	{
		// The fleet: until --duration, --count or a signal.
		fctx, cancel := context.WithCancel(ctx)
		if duration > 0 {
			var stop context.CancelFunc
			fctx, stop = context.WithTimeout(fctx, duration)
			defer stop()
		}
		g.Add(func() error {
			return fleet.Run(fctx)
		}, func(error) { cancel() })
	}
	if progress > 0 {
		// Progress: one line every --progress.
		pctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			printProgress(pctx, w, fleet, progress, start)
			return nil
		}, func(error) { cancel() })
	}
	err := g.Run()
	fmt.Fprintf(w, "simulate: done after %s: %s\n", time.Since(start).Round(time.Millisecond), fleet.Stats())
	return err
}

// printProgress prints the fleet's stats and its report rate every
// interval until ctx ends.
func printProgress(ctx context.Context, w io.Writer, fleet *simulator.Fleet, interval time.Duration, start time.Time) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var prev int64
	prevAt := start
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s := fleet.Stats()
			rate := float64(s.Sent()-prev) / now.Sub(prevAt).Seconds()
			prev, prevAt = s.Sent(), now
			fmt.Fprintf(w, "simulate: %s %.0f reports/s %s\n", now.Sub(start).Round(time.Second), rate, s)
		}
	}
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
