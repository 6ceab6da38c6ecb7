package app

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
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
		file          = fs.String("c", os.Getenv("OTAWATCH_CONFIG"), "config `FILE` (nats.*, rollout.tick, rollout.max_batch)")
		natsURL       = fs.String("nats", "", "NATS `URL` (default: nats.url, or the embedded server's nats.listen)")
		asJSON        = fs.Bool("json", false, "print the result as JSON")
		gate          = fs.Float64("gate", 0, "share of a wave's online devices that must complete")
		maxFailure    = fs.Float64("max-failure", 0, "share of a wave's online devices that may fail or time out")
		minFinished   = fs.Int("min-finished", 0, "finished devices before the failure policy applies")
		onFailure     = fs.String("on-failure", "", "pause or abort when the failure policy trips")
		waveSize      = fs.Int("wave-size", 0, "devices per wave (the job's devices regrouped in their order)")
		soak          = fs.Duration("soak", 0, "watch a gated wave this long before the next starts")
		deviceTimeout = fs.Duration("device-timeout", 0, "a device that neither completes nor fails this long after its send times out")
		rate          = fs.Float64("rate", 0, "desired-state messages per second")
		celGate       = fs.String("cel-gate", "", "extra gate: a CEL `EXPR` over fleet and rollout (empty: none)")
	)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintln(env.Stderr, whatIfUsage)
		return fmt.Errorf("%w: rollout what-if needs one JOB argument", ErrUsage)
	}
	var o rollout.WhatIfOptions
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "gate":
			o.Gate = gate
		case "max-failure":
			o.MaxFailure = maxFailure
		case "min-finished":
			o.MinFinished = minFinished
		case "on-failure":
			o.OnFailure = onFailure
		case "wave-size":
			o.WaveSize = waveSize
		case "soak":
			o.Soak = soak
		case "device-timeout":
			o.DeviceTimeout = deviceTimeout
		case "rate":
			o.Rate = rate
		case "cel-gate":
			o.CELGate = celGate
		}
	})
	if o.WaveSize != nil && *o.WaveSize < 1 {
		return fmt.Errorf("%w: --wave-size %d must be at least 1", ErrUsage, *o.WaveSize)
	}
	rec, cfg, err := readRolloutRecording(ctx, env, *file, *natsURL, pos[0], "rollout what-if", o.CELGate != nil && *o.CELGate != "")
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
