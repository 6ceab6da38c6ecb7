package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
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

// cmdRollout is "otawatch rollout ...": it sends a request on the rollout
// command subjects of the running system and prints the reply.
func cmdRollout(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, rolloutUsage)
		return fmt.Errorf("%w: which rollout command?", ErrUsage)
	}
	sub, args := args[0], args[1:]
	if sub == "-h" || sub == "--help" || sub == "help" {
		fmt.Fprintln(env.Stdout, rolloutUsage)
		return nil
	}
	if sub == "what-if" {
		return cmdRolloutWhatIf(ctx, env, args)
	}
	fs := newFlagSet(env, "rollout "+sub)
	fs.Usage = func() { fmt.Fprintln(env.Stderr, rolloutUsage) }
	lf := addLogFlags(fs, "")
	timeout := fs.Duration("timeout", 10*time.Second, "wait this long for the reply")
	asJSON := fs.Bool("json", false, "print the reply as JSON")
	var req events.RolloutRequest
	var spec events.RolloutSpec
	var devicesFile string
	var deviceTimeout, soak time.Duration
	needJob := true
	switch sub {
	case "create":
		needJob = false
		fs.StringVar(&spec.ID, "id", "", "job `ID` (generated when empty)")
		fs.StringVar(&spec.Target.Version, "target-version", "", "target firmware `VERSION`")
		fs.StringVar(&spec.Target.Checksum, "checksum", "", "target firmware checksum (sha256:...)")
		fs.StringVar(&spec.Target.URL, "url", "", "target firmware download `URL`")
		fs.StringVar(&spec.DeviceType, "type", "", "every known device of this `TYPE`")
		fs.Func("devices", "devices, comma-separated (typeId/deviceId or deviceId)", func(s string) error {
			spec.Devices = append(spec.Devices, rolloutSplit(s)...)
			return nil
		})
		fs.StringVar(&devicesFile, "devices-file", "", "`FILE` with one device per line (# comments)")
		fs.IntVar(&spec.Waves, "waves", 0, "number of waves")
		fs.IntVar(&spec.WaveSize, "wave-size", 0, "devices per wave")
		fs.Float64Var(&spec.Gate, "gate", 0, "share of a wave's online devices that must complete (default 0.9)")
		fs.Float64Var(&spec.MaxFailure, "max-failure", 0, "share of a wave's online devices that may fail or time out (default 0.1)")
		fs.IntVar(&spec.MinFinished, "min-finished", 0, "finished devices before the failure policy applies (default 10)")
		fs.StringVar(&spec.OnFailure, "on-failure", "", "pause or abort when the failure policy trips (default pause)")
		fs.DurationVar(&deviceTimeout, "device-timeout", 0, "a device that neither completes nor fails this long after its desired state was sent times out (default 30m)")
		fs.Float64Var(&spec.Rate, "rate", 0, "desired-state messages per second (default 100)")
		fs.DurationVar(&soak, "soak", 0, "watch a gated wave this long before the next starts")
		fs.StringVar(&spec.CELGate, "cel-gate", "", "extra gate: a CEL `EXPR` over fleet and rollout that must hold")
		fs.BoolVar(&req.Start, "start", false, "start the job at once")
	case "list":
		needJob = false
	case "start", "show", "resume", "retry-failed":
	case "pause", "abort":
		fs.StringVar(&req.Reason, "reason", "", "why, recorded on the event")
	default:
		fmt.Fprintln(env.Stderr, rolloutUsage)
		return fmt.Errorf("%w: unknown rollout command %q", ErrUsage, sub)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case needJob && len(pos) != 1:
		return fmt.Errorf("%w: rollout %s needs one JOB argument", ErrUsage, sub)
	case !needJob && len(pos) > 0:
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, pos[0])
	case needJob:
		req.JobID = pos[0]
	}
	if sub == "create" {
		if spec.Waves > 0 && spec.WaveSize > 0 {
			return fmt.Errorf("%w: give --waves or --wave-size, not both", ErrUsage)
		}
		if devicesFile != "" {
			devs, err := rolloutDevicesFile(devicesFile)
			if err != nil {
				return err
			}
			spec.Devices = append(spec.Devices, devs...)
		}
		if spec.DeviceType == "" && len(spec.Devices) == 0 {
			return fmt.Errorf("%w: name the devices: --type, --devices or --devices-file", ErrUsage)
		}
		spec.DeviceTimeout, spec.Soak = events.Duration(deviceTimeout), events.Duration(soak)
		req.Spec = &spec
	}

	cfg, err := LoadConfig(*lf.file, env.Environ)
	if err != nil {
		return err
	}
	nc, err := connectCLI(cfg, *lf.nats, "otawatch rollout")
	if err != nil {
		return err
	}
	defer nc.Close()
	for _, kv := range env.Environ {
		if u, ok := strings.CutPrefix(kv, "USER="); ok && u != "" {
			req.Actor = u // sent as the actor header; recorded as cli:USER
		}
	}
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rep, err := events.RolloutRequestDo(rctx, nc, sub, req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("rollout %s: no reply within %s", sub, *timeout)
		}
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
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

func rolloutSplit(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

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
		out = append(out, rolloutSplit(line)...)
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

func printRolloutJob(w io.Writer, j *events.RolloutJob) {
	if j == nil {
		return
	}
	s := j.Spec
	fmt.Fprintf(w, "job %s: %s", j.ID, j.Status)
	if j.WaveCount > 0 {
		fmt.Fprintf(w, ", wave %d of %d", j.Wave, j.WaveCount)
	}
	fmt.Fprintln(w)
	if j.Reason != "" {
		fmt.Fprintf(w, "  why:      %s (%s)\n", j.Reason, j.By)
	}
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
	if len(j.Waves) == 0 {
		return
	}
	fmt.Fprintln(w)
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
