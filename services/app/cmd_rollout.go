package app

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/otawatch/otawatch/events"
)

// rolloutUsage is the help of "otawatch rollout".
const rolloutUsage = `usage: otawatch rollout COMMAND [flags] [JOB]

commands:
  create --target-version V --checksum C --url U (--type T | --devices a,b | --devices-file F)
         [--id ID] [--waves N | --wave-size N] [--gate 0.9]
         [--max-failure 0.1 --min-finished 10 --on-failure pause|abort]
         [--device-timeout 30m] [--rate 100] [--soak 0s] [--cel-gate EXPR] [--start]
  start JOB            start a created job
  list                 every job, newest first
  show JOB             per-wave progress and gate decisions
  pause JOB [--reason R]
  resume JOB
  abort JOB [--reason R]
  retry-failed JOB     send the target again to failed and timed-out devices
  what-if JOB [--gate G] [--max-failure F] [--wave-size N] [--soak D] [--cel-gate EXPR] ...
                       the recorded job again under other settings, beside what happened

every command: [-c FILE] [--nats URL] [--timeout 10s] [--json]
Devices are typeId/deviceId, or a bare deviceId whose type is known or is --type.
Unset job settings take the rollout section's defaults (15 waves of 100, gate 0.9, ...).`

// cmdRollout is "otawatch rollout ...": every command but what-if sends a
// request on the rollout command subjects of the running system and
// prints the reply.
func cmdRollout(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, rolloutUsage)
		return fmt.Errorf("%w: which rollout command?", ErrUsage)
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "-h", "--help", "help":
		fmt.Fprintln(env.Stdout, rolloutUsage)
		return nil
	case "what-if":
		return cmdRolloutWhatIf(ctx, env, args)
	case "create":
		return cmdRolloutCreate(ctx, env, args)
	case "list":
		return cmdRolloutList(ctx, env, args)
	case "start", "show", "pause", "resume", "abort", "retry-failed":
		return cmdRolloutJob(ctx, env, sub, args)
	}
	fmt.Fprintln(env.Stderr, rolloutUsage)
	return fmt.Errorf("%w: unknown rollout command %q", ErrUsage, sub)
}

// rolloutFlags are the flags of every rollout command that sends a
// request: -c, --nats, --timeout and --json.
type rolloutFlags struct {
	lf      logFlags
	timeout *time.Duration
	asJSON  *bool
}

// newRolloutFlags is the flag set of "rollout sub" with its rolloutFlags.
func newRolloutFlags(env *Env, sub string) (*flag.FlagSet, rolloutFlags) {
	fs := newFlagSet(env, "rollout "+sub)
	fs.Usage = func() { fmt.Fprintln(env.Stderr, rolloutUsage) }
	return fs, rolloutFlags{
		lf:      addLogFlags(fs, ""),
		timeout: fs.Duration("timeout", 10*time.Second, "wait this long for the reply"),
		asJSON:  fs.Bool("json", false, "print the reply as JSON"),
	}
}

// cmdRolloutCreate is "otawatch rollout create": a job from the flags'
// settings, started at once with --start.
func cmdRolloutCreate(ctx context.Context, env *Env, args []string) error {
	fs, rf := newRolloutFlags(env, "create")
	sf := addRolloutSpecFlags(fs)
	var req events.RolloutRequest
	fs.BoolVar(&req.Start, "start", false, "start the job at once")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, pos[0])
	}
	if req.Spec, err = sf.build(); err != nil {
		return err
	}
	return rf.send(ctx, env, "create", req)
}

// cmdRolloutList is "otawatch rollout list": every job, newest first.
func cmdRolloutList(ctx context.Context, env *Env, args []string) error {
	fs, rf := newRolloutFlags(env, "list")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, pos[0])
	}
	return rf.send(ctx, env, "list", events.RolloutRequest{})
}

// cmdRolloutJob is "otawatch rollout start|show|pause|resume|abort|retry-failed JOB";
// pause and abort take a --reason.
func cmdRolloutJob(ctx context.Context, env *Env, sub string, args []string) error {
	fs, rf := newRolloutFlags(env, sub)
	var req events.RolloutRequest
	if sub == "pause" || sub == "abort" {
		fs.StringVar(&req.Reason, "reason", "", "why, recorded on the event")
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: rollout %s needs one JOB argument", ErrUsage, sub)
	}
	req.JobID = pos[0]
	return rf.send(ctx, env, sub, req)
}

// send sends req as the rollout command sub to the running system, as
// the CLI's identity and $USER, and prints the reply.
func (f rolloutFlags) send(ctx context.Context, env *Env, sub string, req events.RolloutRequest) error {
	cfg, err := LoadConfig(*f.lf.file, env.Environ)
	if err != nil {
		return err
	}
	nc, err := connectCLI(cfg, *f.lf.nats, "otawatch rollout")
	if err != nil {
		return err
	}
	defer nc.Close()
	req.Actor = envUser(env) // sent as the actor header; recorded as cli:USER
	rctx, cancel := context.WithTimeout(ctx, *f.timeout)
	defer cancel()
	rep, err := events.RolloutRequestDo(rctx, nc, sub, req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("rollout %s: no reply within %s", sub, *f.timeout)
		}
		return err
	}
	if *f.asJSON {
		return printJSON(env, rep)
	}
	switch {
	case sub == "list":
		printRolloutList(env.Stdout, rep.Jobs)
	case sub == "retry-failed":
		fmt.Fprintf(env.Stdout, "%d device(s) queued again (attempt %d)\n\n", rep.Retried, rep.Job.Attempts)
		printRolloutJob(env.Stdout, rep.Job)
	case rep.Job != nil:
		printRolloutJob(env.Stdout, rep.Job)
	}
	return nil
}

// rolloutSpecFlags are the job settings of "rollout create".
type rolloutSpecFlags struct {
	spec                events.RolloutSpec
	devicesFile         string
	deviceTimeout, soak time.Duration
}

// addRolloutSpecFlags defines the job settings of "rollout create" on fs.
func addRolloutSpecFlags(fs *flag.FlagSet) *rolloutSpecFlags {
	f := &rolloutSpecFlags{}
	spec := &f.spec
	fs.StringVar(&spec.ID, "id", "", "job `ID` (generated when empty)")
	fs.StringVar(&spec.Target.Version, "target-version", "", "target firmware `VERSION`")
	fs.StringVar(&spec.Target.Checksum, "checksum", "", "target firmware checksum (sha256:...)")
	fs.StringVar(&spec.Target.URL, "url", "", "target firmware download `URL`")
	fs.StringVar(&spec.DeviceType, "type", "", "every known device of this `TYPE`")
	fs.Func("devices", "devices, comma-separated (typeId/deviceId or deviceId)", func(s string) error {
		spec.Devices = append(spec.Devices, splitList(s)...)
		return nil
	})
	fs.StringVar(&f.devicesFile, "devices-file", "", "`FILE` with one device per line (# comments)")
	fs.IntVar(&spec.Waves, "waves", 0, "number of waves")
	fs.IntVar(&spec.WaveSize, "wave-size", 0, "devices per wave")
	fs.Float64Var(&spec.Gate, "gate", 0, "share of a wave's online devices that must complete (default 0.9)")
	fs.Float64Var(&spec.MaxFailure, "max-failure", 0, "share of a wave's online devices that may fail or time out (default 0.1)")
	fs.IntVar(&spec.MinFinished, "min-finished", 0, "finished devices before the failure policy applies (default 10)")
	fs.StringVar(&spec.OnFailure, "on-failure", "", "pause or abort when the failure policy trips (default pause)")
	fs.DurationVar(&f.deviceTimeout, "device-timeout", 0, "a device that neither completes nor fails this long after its desired state was sent times out (default 30m)")
	fs.Float64Var(&spec.Rate, "rate", 0, "desired-state messages per second (default 100)")
	fs.DurationVar(&f.soak, "soak", 0, "watch a gated wave this long before the next starts")
	fs.StringVar(&spec.CELGate, "cel-gate", "", "extra gate: a CEL `EXPR` over fleet and rollout that must hold")
	return f
}

// build is the job the flags describe, with the devices of --devices-file
// after those of --devices. The rollout service checks the rest.
func (f *rolloutSpecFlags) build() (*events.RolloutSpec, error) {
	spec := f.spec
	if spec.Waves > 0 && spec.WaveSize > 0 {
		return nil, fmt.Errorf("%w: give --waves or --wave-size, not both", ErrUsage)
	}
	if f.devicesFile != "" {
		devs, err := rolloutDevicesFile(f.devicesFile)
		if err != nil {
			return nil, err
		}
		spec.Devices = append(spec.Devices, devs...)
	}
	if spec.DeviceType == "" && len(spec.Devices) == 0 {
		return nil, fmt.Errorf("%w: name the devices: --type, --devices or --devices-file", ErrUsage)
	}
	spec.DeviceTimeout, spec.Soak = events.Duration(f.deviceTimeout), events.Duration(f.soak)
	return &spec, nil
}

// rolloutDevicesFile reads --devices-file: devices separated by commas or
// lines, "#" starting a comment; a file that names none is an error.
func rolloutDevicesFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("devices file: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		out = append(out, splitList(line)...)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("devices file %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("devices file %s names no device", path)
	}
	return out, nil
}

// cliNATSURL is where the running system listens: nats.url, or the
// embedded server's client address (a wildcard host means this machine).
func cliNATSURL(cfg *Config) string {
	if cfg.NATS.URL != "" {
		return cfg.NATS.URL
	}
	host, port, err := net.SplitHostPort(cfg.NATS.Listen)
	if err != nil {
		return "nats://" + cfg.NATS.Listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "nats://" + net.JoinHostPort(host, port)
}

func printRolloutList(w io.Writer, jobs []events.RolloutJob) {
	if len(jobs) == 0 {
		fmt.Fprintln(w, "no rollout jobs")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSTATUS\tWAVE\tDEVICES\tCOMPLETED\tFAILED\tTIMED OUT\tTARGET\tCREATED")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%d\t%d\t%d\t%s\t%s\n", j.ID, j.Status, j.Wave, j.WaveCount, j.Total.Targeted,
			j.Total.Completed, j.Total.Failed, j.Total.TimedOut, j.Spec.Target.Version, j.CreatedAt.UTC().Format(time.RFC3339))
	}
	tw.Flush()
}

// printRolloutJob prints a job: its status, settings and times, then its
// waves.
func printRolloutJob(w io.Writer, j *events.RolloutJob) {
	if j == nil {
		return
	}
	fmt.Fprintf(w, "job %s: %s", j.ID, j.Status)
	if j.WaveCount > 0 {
		fmt.Fprintf(w, ", wave %d of %d", j.Wave, j.WaveCount)
	}
	fmt.Fprintln(w)
	if j.Reason != "" {
		fmt.Fprintf(w, "  why:      %s (%s)\n", j.Reason, j.By)
	}
	printRolloutSpec(w, j.Spec)
	fmt.Fprintf(w, "  created:  %s", j.CreatedAt.UTC().Format(time.RFC3339))
	if !j.StartedAt.IsZero() {
		fmt.Fprintf(w, "; started %s", j.StartedAt.UTC().Format(time.RFC3339))
	}
	if !j.FinishedAt.IsZero() {
		fmt.Fprintf(w, "; finished %s", j.FinishedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	if j.Attempts > 0 {
		fmt.Fprintf(w, "  retries:  %d round(s) of retry-failed\n", j.Attempts)
	}
	if j.Status == events.RolloutAborted {
		// What the abort took back: retained deltas of devices that had
		// not finished (one already installing is not stopped).
		fmt.Fprintf(w, "  retracted: %d delta(s) cleared from the broker", j.Retracted)
		if j.RetractPending > 0 {
			fmt.Fprintf(w, ", %d pending", j.RetractPending)
		}
		fmt.Fprintln(w)
	}
	if len(j.Waves) > 0 {
		fmt.Fprintln(w)
		printRolloutWaves(w, j)
	}
}

// printRolloutSpec prints a job's settings: target, devices, plan,
// failure policy and rate.
func printRolloutSpec(w io.Writer, s events.RolloutSpec) {
	fmt.Fprintf(w, "  target:   %s %s %s\n", s.Target.Version, s.Target.Checksum, s.Target.URL)
	var sel []string
	if s.DeviceType != "" {
		sel = append(sel, "type "+s.DeviceType)
	}
	if len(s.Devices) > 0 {
		sel = append(sel, fmt.Sprintf("%d listed", len(s.Devices)))
	}
	fmt.Fprintf(w, "  devices:  %s\n", strings.Join(sel, " + "))
	plan := fmt.Sprintf("waves of %d, at most %d", s.WaveSize, s.Waves)
	switch {
	case s.WaveSize == 0:
		plan = fmt.Sprintf("%d waves", s.Waves)
	case s.Waves == 0:
		plan = fmt.Sprintf("waves of %d", s.WaveSize)
	}
	fmt.Fprintf(w, "  plan:     %s; gate %g%% of online devices; soak %s\n", plan, s.Gate*100, time.Duration(s.Soak))
	fmt.Fprintf(w, "  failure:  %s when more than %g%% of a wave failed or timed out (once %d finished); device timeout %s\n",
		s.OnFailure, s.MaxFailure*100, s.MinFinished, time.Duration(s.DeviceTimeout))
	fmt.Fprintf(w, "  rate:     %g/s", s.Rate)
	if s.CELGate != "" {
		fmt.Fprintf(w, "; cel gate: %s", s.CELGate)
	}
	fmt.Fprintln(w)
}

// printRolloutWaves prints a job's waves as a table, each with its gate's
// verdict, and their sum.
func printRolloutWaves(w io.Writer, j *events.RolloutJob) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tSTATUS\tTARGETED\tQUEUED\tPENDING\tIN PROGRESS\tCOMPLETED\tFAILED\tTIMED OUT\tOFFLINE\tGATE")
	row := func(name, status string, p events.WaveProgress, gate string) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", name, status, p.Targeted, p.Queued, p.Pending,
			p.InProgress, p.Completed, p.Failed, p.TimedOut, p.Offline, gate)
	}
	for _, wv := range j.Waves {
		gate := ""
		if g := wv.Gate; g != nil {
			verdict := "waiting"
			if g.Passed {
				verdict = "passed"
			}
			gate = verdict + ": " + g.Reason
		}
		row(fmt.Sprint(wv.Wave), wv.Status, wv.Progress, gate)
	}
	row("all", "", j.Total, "")
	tw.Flush()
}
