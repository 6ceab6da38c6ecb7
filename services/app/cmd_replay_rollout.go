package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/otawatch/otawatch/services/rollout"
)

// cmdReplayRollout is "otawatch replay rollout JOB": it re-derives every
// decision of the job from the log with the orchestrator's decision code
// and checks it against the recorded ROLLOUT events (rollout.Replay). It
// only reads the log. A difference exits 1.
func cmdReplayRollout(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "replay rollout")
	var (
		lf     = addLogFlags(fs, "nats.*, rollout.tick")
		asJSON = fs.Bool("json", false, "print the result as JSON")
		lag    = fs.Duration("lag", rollout.DefaultReplayLag, "how far the orchestrator's fleet view may lag the stream, and how late a due decision may be recorded")
	)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: replay rollout needs one JOB argument", ErrUsage)
	}
	if *lag <= 0 {
		return fmt.Errorf("%w: --lag %s must be positive", ErrUsage, *lag)
	}
	rec, cfg, err := readRolloutRecording(ctx, env, lf, pos[0], "replay rollout", false)
	if err != nil {
		return err
	}
	res, err := rollout.Replay(rec, rollout.ReplayOptions{Lag: *lag, Tick: cfg.Rollout.Tick})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		printReplayRollout(env.Stdout, rec, res, *lag)
	}
	if n := len(res.Differences); n > 0 {
		return fmt.Errorf("job %s: %d difference(s) between the recording and the decision code (the first: %s)", res.JobID, n, res.Differences[0].What)
	}
	return nil
}

// readRolloutRecording loads the config, connects and reads a job's
// recording, with progress lines on stderr.
func readRolloutRecording(ctx context.Context, env *Env, lf logFlags, job, what string, allDevices bool) (*rollout.Recording, *Config, error) {
	cfg, nc, js, err := lf.connect(env, "otawatch "+what)
	if err != nil {
		return nil, nil, err
	}
	defer nc.Close()
	began := time.Now()
	rec, err := rollout.ReadRecording(ctx, js, job, rollout.ReadOptions{AllDevices: allDevices,
		Progress: func(s string) { fmt.Fprintf(env.Stderr, "%s: %s\n", what, s) }})
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(env.Stderr, "%s: read job %s: %d ROLLOUT events, %d SHADOW events since its creation, in %s\n",
		what, job, len(rec.Job), len(rec.Shadow), time.Since(began).Round(time.Millisecond))
	if rec.Undecodable > 0 {
		fmt.Fprintf(env.Stderr, "%s: %d SHADOW message(s) are no event and were left out, as the live fold left them out\n", what, rec.Undecodable)
	}
	return rec, cfg, nil
}

func printReplayRollout(w io.Writer, rec *rollout.Recording, res *rollout.ReplayResult, lag time.Duration) {
	start := rec.Job[0].Event.Time
	rel := func(t time.Time) string { return "+" + t.Sub(start).Round(time.Millisecond).String() }
	fmt.Fprintf(w, "job %s: %s; %d decision(s) checked, %d other event(s) applied, %d SHADOW event(s) folded (times from its creation, %s)\n\n",
		res.JobID, res.Status, len(res.Decisions), res.Facts, res.ShadowEvents, start.UTC().Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSEQ\tDECISION\tCHECK")
	for _, c := range res.Decisions {
		for i, d := range c.Recorded {
			check := ""
			if i == 0 {
				switch {
				case c.Same && c.Partial:
					check = fmt.Sprintf("same, first part (fleet to SHADOW seq %d)", c.ShadowSeq)
				case c.Same:
					check = fmt.Sprintf("same (fleet to SHADOW seq %d)", c.ShadowSeq)
				default:
					check = "DIFFERENT"
				}
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", rel(d.At), d.Seq, d, check)
		}
	}
	tw.Flush()
	if len(res.Differences) == 0 {
		fmt.Fprintf(w, "\nno difference: every recorded decision is what the decision code gives, and none came more than %s after it was due\n", lag)
		return
	}
	fmt.Fprintf(w, "\n%d difference(s); the first:\n  %s\n", len(res.Differences), res.Differences[0].What)
	for _, d := range res.Differences[1:] {
		fmt.Fprintf(w, "  then: %s\n", d.What)
	}
}
