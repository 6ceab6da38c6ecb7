package app

import (
	"context"
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
	var (
		file        = fs.String("c", os.Getenv("OTAWATCH_CONFIG"), "config `FILE` (mqtt.broker, mqtt.username and mqtt.password_file are used)")
		devices     = fs.Int("devices", 1500, "number of devices (ids d-00001, d-00002, ...)")
		broker      = fs.String("broker", "", "MQTT broker `URL` (default: mqtt.broker of the config, "+simulator.DefaultBroker+")")
		types       = fs.String("type", simulator.DefaultType, "device type id(s), comma-separated; devices are dealt to them in turn")
		mode        = fs.String("mode", string(simulator.ModeStandalone), "standalone: devices update on their own at --rate; fleet: devices install what their shadow/delta topic asks")
		rate        = fs.Float64("rate", simulator.DefaultRate, "standalone: reports per second for the whole fleet (0: as fast as the broker acknowledges)")
		count       = fs.Int64("count", 0, "standalone: stop after this many reports (0: loop)")
		timeScale   = fs.Float64("time-scale", 1, "divide every device-time duration (install, backoff, outage) by this")
		failure     = fs.Float64("failure-rate", 0.04, "probability that an install fails")
		codes       = fs.String("error-codes", strings.Join(simulator.DefaultErrorCodes, ","), "errorCode values of failed installs, comma-separated")
		durMean     = fs.Duration("duration-mean", simulator.DefaultDurationMean, "mean install duration (device time, log-normal)")
		durStddev   = fs.Duration("duration-stddev", simulator.DefaultDurationStddev, "standard deviation of the install duration")
		fromVersion = fs.String("from-version", simulator.DefaultFromVersion, "firmware version every device starts with")
		offShare    = fs.Float64("offline-share", 0, "fleet: share of devices that go offline once")
		offWithin   = fs.Duration("offline-within", simulator.DefaultOfflineWithin, "fleet: outages start within this time of connecting (device time)")
		offFor      = fs.Duration("offline-for", simulator.DefaultOfflineFor, "fleet: mean outage length (device time)")
		presence    = fs.Bool("presence", true, "fleet: each device sets its MQTT will to its presence topic (\"offline\") and says \"online\" there on connect; outages drop the connection so the broker publishes the will")
		api         = fs.String("api", "", "fleet: otawatch HTTP API `URL`; devices back online GET their shadow delta there")
		apiToken    = fs.String("api-token-file", "", "`FILE` holding a bearer token for --api")
		conns       = fs.Int("connections", 0, "multiplex the devices over this many MQTT connections (0: one per device)")
		wildcard    = fs.Bool("wildcard", false, "with --connections: one wildcard subscription per connection instead of one per device (needed on the NATS MQTT listener beyond 63 devices a connection)")
		connConc    = fs.Int("connect-concurrency", simulator.DefaultConnectConcurrency, "connection attempts in progress at once")
		prefix      = fs.String("client-prefix", simulator.DefaultClientIDPrefix, "MQTT client id prefix ({prefix}-{type}-{id})")
		ackTimeout  = fs.Duration("ack-timeout", simulator.DefaultAckTimeout, "wait this long for a report's PUBACK before it counts as failed")
		duration    = fs.Duration("duration", 0, "stop after this long (0: until interrupted, or --count)")
		seed        = fs.Uint64("seed", 1, "seed of the devices' random draws (same seed, same outcomes)")
		progress    = fs.Duration("progress", 5*time.Second, "print a progress line this often (0: only the summary)")
		credentials = fs.String("credentials", "", "each device authenticates as itself (username = device id) with its password from `FILE` (lines \"id password\", as otawatch devices import takes)")
		secretFile  = fs.String("password-secret-file", "", "each device authenticates as itself with the password hex HMAC-SHA256(secret, id), the secret read from `FILE` (as otawatch devices import --password-secret-file registers them)")
	)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	cfg, err := LoadConfig(*file, env.Environ)
	if err != nil {
		return err
	}
	password, err := conf.ReadSecret(cfg.MQTT.PasswordFile)
	if err != nil {
		return fmt.Errorf("mqtt.password_file: %w", err)
	}
	token, err := conf.ReadSecret(*apiToken)
	if err != nil {
		return fmt.Errorf("--api-token-file: %w", err)
	}
	var devicePasswords map[string]string
	if *credentials != "" {
		f, err := os.Open(*credentials)
		if err != nil {
			return fmt.Errorf("--credentials: %w", err)
		}
		devicePasswords, err = simulator.ReadCredentials(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("--credentials %s: %w", *credentials, err)
		}
	}
	var secret []byte
	if *secretFile != "" {
		s, err := conf.ReadSecret(*secretFile)
		if err != nil {
			return fmt.Errorf("--password-secret-file: %w", err)
		}
		if s == "" {
			return fmt.Errorf("--password-secret-file %s is empty", *secretFile)
		}
		secret = []byte(s)
	}
	username := cfg.MQTT.Username
	if devicePasswords != nil || secret != nil {
		// Devices are themselves, not the bridge's user.
		username, password = "", ""
	}
	fc := simulator.FleetConfig{
		Broker:             *broker,
		Username:           username,
		Password:           password,
		DevicePasswords:    devicePasswords,
		PasswordSecret:     secret,
		Mode:               simulator.Mode(*mode),
		Devices:            *devices,
		Types:              splitList(*types),
		ClientIDPrefix:     *prefix,
		Connections:        *conns,
		Wildcard:           *wildcard,
		ConnectConcurrency: *connConc,
		FromVersion:        *fromVersion,
		Rate:               *rate,
		Count:              *count,
		TimeScale:          *timeScale,
		DurationMean:       *durMean,
		DurationStddev:     *durStddev,
		FailureRate:        *failure,
		ErrorCodes:         splitList(*codes),
		OfflineShare:       *offShare,
		OfflineWithin:      *offWithin,
		OfflineFor:         *offFor,
		NoPresence:         !*presence,
		APIURL:             *api,
		APIToken:           token,
		AckTimeout:         *ackTimeout,
		Seed:               *seed,
	}
	if fc.Broker == "" {
		fc.Broker = cfg.MQTT.Broker
	}
	log := newLogger(env.Stderr, cfg.Log)
	fleet, err := simulator.NewFleet(fc, log)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}

	start := time.Now()
	var g run.Group
	{
		// The fleet: until --duration, --count or a signal.
		fctx, cancel := context.WithCancel(ctx)
		if *duration > 0 {
			var stop context.CancelFunc
			fctx, stop = context.WithTimeout(fctx, *duration)
			defer stop()
		}
		g.Add(func() error {
			return fleet.Run(fctx)
		}, func(error) { cancel() })
	}
	if *progress > 0 {
		// Progress: one line every --progress.
		pctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			printProgress(pctx, env.Stdout, fleet, *progress, start)
			return nil
		}, func(error) { cancel() })
	}
	err = g.Run()
	fmt.Fprintf(env.Stdout, "simulate: done after %s: %s\n", time.Since(start).Round(time.Millisecond), fleet.Stats())
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
