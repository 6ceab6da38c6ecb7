package app

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/otawatch/otawatch/services/rollout"
)

const whatIfUsage = `usage: otawatch rollout what-if JOB [--gate 0.95] [--max-failure 0.05] [--min-finished N]
         [--on-failure pause|abort] [--wave-size N] [--soak 10m] [--device-timeout 30m] [--rate 100]
         [--cel-gate EXPR] [-c FILE] [--nats URL] [--json]

Runs the recorded job again through the orchestrator's decision code with the settings given
(the others as recorded), each device's reports at their recorded offsets from its send, and
prints wave by wave what would have happened beside what did. Operator commands in the
recording (pause, resume, abort, retry-failed) are left out.`

// cmdRolloutWhatIf is "otawatch rollout what-if JOB": rollout.WhatIf on
// the job's recording, printed beside what happened. It only reads the log.
func cmdRolloutWhatIf(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "rollout what-if")
	fs.Usage = func() { fmt.Fprintln(env.Stderr, whatIfUsage) }
	var (
		lf     = addLogFlags(fs, "nats.*, rollout.tick, rollout.max_batch")
		asJSON = fs.Bool("json", false, "print the result as JSON")
		o      rollout.WhatIfOptions
	)
	float := func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }
	text := func(s string) (string, error) { return s, nil }
	optional(fs, "gate", "share of a wave's online devices that must complete", &o.Gate, float)
	optional(fs, "max-failure", "share of a wave's online devices that may fail or time out", &o.MaxFailure, float)
	optional(fs, "min-finished", "finished devices before the failure policy applies", &o.MinFinished, strconv.Atoi)
	optional(fs, "on-failure", "pause or abort when the failure policy trips", &o.OnFailure, text)
	optional(fs, "wave-size", "devices per wave (the job's devices regrouped in their order)", &o.WaveSize, strconv.Atoi)
	optional(fs, "soak", "watch a gated wave this long before the next starts", &o.Soak, time.ParseDuration)
	optional(fs, "device-timeout", "a device that neither completes nor fails this long after its send times out", &o.DeviceTimeout, time.ParseDuration)
	optional(fs, "rate", "desired-state messages per second", &o.Rate, float)
	optional(fs, "cel-gate", "extra gate: a CEL `EXPR` over fleet and rollout (empty: none)", &o.CELGate, text)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintln(env.Stderr, whatIfUsage)
		return fmt.Errorf("%w: rollout what-if needs one JOB argument", ErrUsage)
	}
	if o.WaveSize != nil && *o.WaveSize < 1 {
		return fmt.Errorf("%w: --wave-size %d must be at least 1", ErrUsage, *o.WaveSize)
	}
	rec, cfg, err := readRolloutRecording(ctx, env, lf, pos[0], "rollout what-if", o.CELGate != nil && *o.CELGate != "")
	if err != nil {
		return err
	}
	o.Tick, o.MaxBatch = cfg.Rollout.Tick, cfg.Rollout.MaxBatch
	res, err := rollout.WhatIf(rec, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printWhatIf(env.Stdout, res)
	return nil
}

// optional is a flag that sets *dst only when given: a what-if changes
// only the settings named on its command line.
func optional[T any](fs *flag.FlagSet, name, usage string, dst **T, parse func(string) (T, error)) {
	fs.Func(name, usage, func(s string) error {
		v, err := parse(s)
		if err != nil {
			return err
		}
		*dst = &v
		return nil
	})
}

func printWhatIf(w io.Writer, res *rollout.WhatIfResult) {
	rel := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return "+" + t.Sub(res.StartedAt).Round(time.Millisecond).String()
	}
	changed := "nothing changed: the job's own settings"
	if len(res.Changed) > 0 {
		changed = strings.Join(res.Changed, ", ") + " (the rest as recorded)"
	}
	fmt.Fprintf(w, "what-if for job %s, %d devices: %s\ntimes from the job's start, %s\n", res.JobID, res.Devices, changed, res.StartedAt.UTC().Format(time.RFC3339Nano))
	if n := len(res.Operator); n > 0 {
		var cmds []string
		for _, d := range res.Operator {
			cmds = append(cmds, fmt.Sprintf("%s at %s", d.Event, rel(d.At)))
		}
		fmt.Fprintf(w, "left out: the recording's %d operator command(s): %s\n", n, strings.Join(cmds, ", "))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tWHAT-IF: DEVICES\tSTARTED\tGATE PASSED\tCOMPLETED\tACTUAL: DEVICES\tSTARTED\tGATE PASSED\tCOMPLETED")
	gate := func(o rollout.WaveOutcome) string {
		if o.Gated.IsZero() || o.Gate == nil {
			return rel(o.Gated)
		}
		return fmt.Sprintf("%s (%d/%d, needs %d)", rel(o.Gated), o.Gate.Completed, o.Gate.Online, o.Gate.Required)
	}
	for i := 0; i < max(len(res.Waves), len(res.ActualWaves)); i++ {
		cells := func(ws []rollout.WaveOutcome) string {
			if i >= len(ws) {
				return "\t\t\t"
			}
			o := ws[i]
			return fmt.Sprintf("%d\t%s\t%s\t%s", o.Devices, rel(o.Started), gate(o), rel(o.Completed))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", i+1, cells(res.Waves), cells(res.ActualWaves))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, l := range res.Summary() {
		fmt.Fprintln(w, l)
	}
	switch {
	case res.Reproduces && len(res.Changed) == 0:
		fmt.Fprintf(w, "the what-if reproduces the recorded decisions exactly (%d, same counts, same times)\n", len(res.Decisions))
	case res.Reproduces:
		fmt.Fprintf(w, "the what-if makes the recorded decisions (%d), the changes notwithstanding\n", len(res.Decisions))
	case len(res.Changed) == 0:
		fmt.Fprintf(w, "the what-if departs from the recording: %s\n", res.Difference)
		if len(res.Operator) == 0 {
			fmt.Fprintln(w, "(with the job's own settings this is the orchestrator's fold lagging the stream at a tick: see rollout replay)")
		}
	default:
		fmt.Fprintf(w, "first departure from the recording: %s\n", res.Difference)
	}
}
