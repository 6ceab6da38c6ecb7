package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/projector"
)

// cmdReplay is "otawatch replay projector|verify".
func cmdReplay(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: replay what? (projector, verify, alerting, rollout, notify)", ErrUsage)
	}
	switch args[0] {
	case "projector":
		return cmdReplayProjector(ctx, env, args[1:])
	case "verify":
		return cmdReplayVerify(ctx, env, args[1:])
	case "alerting":
		return cmdReplayAlerting(ctx, env, args[1:])
	case "rollout":
		return cmdReplayRollout(ctx, env, args[1:])
	case "notify":
		return cmdReplayNotify(ctx, env, args[1:])
	}
	return fmt.Errorf("%w: unknown replay target %q (projector, verify, alerting, rollout, notify)", ErrUsage, args[0])
}

// databases is a repeatable --database flag.
type databases []string

func (d *databases) String() string { return strings.Join(*d, ",") }
func (d *databases) Set(s string) error {
	if err := events.ValidateID("database", s); err != nil {
		return err
	}
	*d = append(*d, s)
	return nil
}

// cmdReplayProjector re-projects the log into ClickHouse. It reaches NATS
// the way "run" does: nats.url when set, else the embedded server on the
// data dir, which must not be in use by a running otawatch (the replay
// starts its own server there, with no MQTT listener and a random client
// port).
func cmdReplayProjector(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "replay projector")
	var (
		file     = fs.String("c", os.Getenv("OTAWATCH_CONFIG"), "config `FILE` (clickhouse.*, nats.*, data_dir)")
		fromSeq  = fs.Uint64("from-seq", 0, "start each stream at this stream `sequence` (0: the start)")
		fromTime = fs.String("from-time", "", "start at the first event stored at or after `TIME` (RFC 3339, or YYYY-MM-DD in UTC)")
		database = fs.String("database", "", "write into this `database`, created with the schema if missing (default: clickhouse.database, the live one)")
		streams  = fs.String("streams", "", "comma-separated `streams` to replay (default: SHADOW,ROLLOUT,ALERTS,NOTIFY)")
		every    = fs.Duration("progress", time.Second, "print a progress line this often on stderr")
	)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	opts := projector.ReplayOptions{Database: *database, FromSeq: *fromSeq, ProgressEvery: *every}
	if *fromTime != "" {
		if *fromSeq > 0 {
			return fmt.Errorf("%w: --from-seq and --from-time exclude each other", ErrUsage)
		}
		t, err := parseTime(*fromTime)
		if err != nil {
			return fmt.Errorf("%w: --from-time: %v", ErrUsage, err)
		}
		opts.FromTime = t
	}
	if opts.Database != "" {
		if err := events.ValidateID("database", opts.Database); err != nil {
			return fmt.Errorf("%w: --database: %v", ErrUsage, err)
		}
	}
	for _, s := range strings.Split(*streams, ",") {
		if s = strings.ToUpper(strings.TrimSpace(s)); s != "" {
			opts.Streams = append(opts.Streams, s)
		}
	}
	cfg, err := LoadConfig(*file, env.Environ)
	if err != nil {
		return err
	}
	if cfg.ClickHouse.Addr == "" {
		return errors.New("replay needs clickhouse.addr (or OTAWATCH_CLICKHOUSE_ADDR)")
	}
	log := newLogger(env.Stderr, cfg.Log)

	// The replay only reads the log: no MQTT listener, and a client port
	// that cannot clash with anything.
	infraCfg := *cfg
	infraCfg.NATS.MQTTListen = ""
	infraCfg.NATS.Listen = "127.0.0.1:-1"
	inf, err := OpenInfra(ctx, &infraCfg, log, "otawatch-replay")
	if err != nil {
		return err
	}
	defer inf.Close()

	if opts.Database == "" {
		opts.Database = cfg.ClickHouse.Database
	}
	fmt.Fprintf(env.Stderr, "replay: into database %s on %s\n", opts.Database, cfg.ClickHouse.Addr)
	var last projector.ReplayProgress
	opts.Progress = func(p projector.ReplayProgress) {
		if !p.Done {
			fmt.Fprintln(env.Stderr, progressLine(p, last))
		}
		last = p
	}
	final, err := projector.Replay(ctx, cfg.ClickHouse, inf.JS, log, opts)
	printReplaySummary(env.Stdout, final)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errors.New("replay interrupted")
	}
	return nil
}

// parseTime takes RFC 3339 or a bare date (midnight UTC).
func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not RFC 3339 (2025-07-22T11:30:00Z) or a date (2025-07-22)", s)
}

// progressLine is "replay: 1.2s 120000 events 98000/s | SHADOW 100000/250000 ...":
// the rate is over the last interval.
func progressLine(p, prev projector.ReplayProgress) string {
	var b strings.Builder
	rate := 0.0
	if dt := (p.Elapsed - prev.Elapsed).Seconds(); dt > 0 {
		rate = float64(p.Events()-prev.Events()) / dt
	}
	fmt.Fprintf(&b, "replay: %s %d events %.0f/s |", p.Elapsed.Round(100*time.Millisecond), p.Events(), rate)
	for _, s := range p.Streams {
		fmt.Fprintf(&b, " %s %d/%d", s.Stream, s.Seq, s.LastSeq)
		if s.Done {
			b.WriteString(" done")
		}
	}
	return b.String()
}

func printReplaySummary(w io.Writer, p projector.ReplayProgress) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tEVENTS\tLAST SEQ\tPOISON\tDONE")
	for _, s := range p.Streams {
		fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%d\t%v\n", s.Stream, s.Events, s.Seq, s.LastSeq, s.Poison, s.Done)
	}
	tw.Flush()
	rate := 0.0
	if p.Elapsed > 0 {
		rate = float64(p.Events()) / p.Elapsed.Seconds()
	}
	fmt.Fprintf(w, "replayed %d events in %s (%.0f events/s)\n", p.Events(), p.Elapsed.Round(time.Millisecond), rate)
}

// cmdReplayVerify compares two databases' read models.
func cmdReplayVerify(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "replay verify")
	file := fs.String("c", os.Getenv("OTAWATCH_CONFIG"), "config `FILE` (clickhouse.*)")
	var dbs databases
	fs.Var(&dbs, "database", "a `database` to compare; give it twice")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if len(dbs) != 2 || fs.NArg() > 0 {
		return fmt.Errorf("%w: give exactly two --database flags", ErrUsage)
	}
	cfg, err := LoadConfig(*file, env.Environ)
	if err != nil {
		return err
	}
	if cfg.ClickHouse.Addr == "" {
		return errors.New("replay verify needs clickhouse.addr (or OTAWATCH_CLICKHOUSE_ADDR)")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	conn, err := projector.Dial(ctx, cfg.ClickHouse, "")
	if err != nil {
		return err
	}
	defer conn.Close()
	res, err := projector.Verify(ctx, conn, dbs[0], dbs[1])
	if err != nil {
		return err
	}
	differ := printVerify(env.Stdout, dbs[0], dbs[1], res)
	if differ > 0 {
		return fmt.Errorf("databases %s and %s differ in %d table(s)", dbs[0], dbs[1], differ)
	}
	return nil
}

// printVerify prints the comparison and returns how many tables differ.
func printVerify(w io.Writer, a, b string, res []projector.TableComparison) int {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "TABLE\tROWS %s\tROWS %s\tCHECKSUM %s\tCHECKSUM %s\t\n", a, b, a, b)
	differ := 0
	cell := func(missing bool, v uint64, hex bool) string {
		switch {
		case missing:
			return "missing"
		case hex:
			return fmt.Sprintf("%016x", v)
		}
		return strconv.FormatUint(v, 10)
	}
	for _, r := range res {
		verdict := "same"
		if !r.Same() {
			verdict = "DIFFERENT"
			differ++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Table, cell(r.MissingA, r.RowsA, false), cell(r.MissingB, r.RowsB, false),
			cell(r.MissingA, r.SumA, true), cell(r.MissingB, r.SumB, true), verdict)
	}
	tw.Flush()
	for _, r := range res {
		if r.Same() {
			continue
		}
		fmt.Fprintf(w, "\n%s differs:\n", r.Table)
		for _, d := range r.Differences {
			fmt.Fprintf(w, "  %s\n", d)
		}
		if len(r.Differences) == projector.MaxDifferences {
			fmt.Fprintf(w, "  (first %d shown)\n", projector.MaxDifferences)
		}
	}
	if differ == 0 {
		fmt.Fprintf(w, "\n%s and %s are identical\n", a, b)
	}
	return differ
}
