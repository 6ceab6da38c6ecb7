package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/alerting"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
)

// cmdReplayAlerting is "otawatch replay alerting --from T --to T": it runs
// the recorded SHADOW and ROLLOUT history through the rules in force then
// (the rule sets the alerting service recorded on ALERTS) or through
// --rules DIR, and compares the alert events it computes with those ALERTS
// holds in the range. It publishes nothing; a difference exits 1.
func cmdReplayAlerting(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "replay alerting")
	var (
		lf       = addLogFlags(fs, "nats.*, alerting.tick_interval, alerting.offline_after")
		from     = fs.String("from", "", "compare alert events from `TIME` (RFC 3339, or YYYY-MM-DD in UTC)")
		to       = fs.String("to", "", "compare alert events up to `TIME` (RFC 3339, or YYYY-MM-DD in UTC)")
		rulesDir = fs.String("rules", "", "replay these rules (a rules `DIR`) instead of the ones recorded as in force")
		warmup   = fs.Duration("warmup", 0, "start ticks this long before --from (0: tick over the whole history, as the service did)")
		jsonOut  = fs.Bool("json", false, "print the comparison as one JSON object")
		every    = fs.Duration("progress", time.Second, "print a progress line this often on stderr")
	)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	fromT, toT, err := parseRange(*from, *to)
	if err != nil {
		return err
	}
	if *rulesDir != "" {
		if fi, err := os.Stat(*rulesDir); err != nil || !fi.IsDir() {
			return fmt.Errorf("%w: --rules %q is not a directory", ErrUsage, *rulesDir)
		}
	}
	if *warmup < 0 {
		return fmt.Errorf("%w: --warmup %s is negative", ErrUsage, *warmup)
	}
	cfg, nc, js, err := lf.connect(env, "otawatch replay alerting")
	if err != nil {
		return err
	}
	defer nc.Close()
	poison := 0
	o := alerting.ReplayOptions{From: fromT, To: toT, RulesDir: *rulesDir, Warmup: *warmup,
		OnPoison: func(ruleeval.Record, error) { poison++ }}
	if *every > 0 {
		o.Progress = func(p ruleeval.BacktestProgress) {
			if !p.Done {
				fmt.Fprintf(env.Stderr, "replay alerting: %s SHADOW %d/%d ROLLOUT %d/%d\n",
					p.Elapsed.Round(100*time.Millisecond), p.ShadowSeq, p.ShadowLast, p.RolloutSeq, p.RolloutLast)
			}
		}
	}
	began := time.Now()
	c, err := alerting.Replay(ctx, js, cfg.Alerting, o)
	if errors.Is(err, ruleeval.ErrNoRecordedRules) {
		return fmt.Errorf("%w (--rules DIR)", err)
	}
	if err != nil {
		return fmt.Errorf("replay alerting: %w", err)
	}
	fmt.Fprintf(env.Stderr, "replay alerting: SHADOW up to seq %d, ROLLOUT up to seq %d, %d devices, %d unreadable, in %s\n",
		c.Engine.ShadowSeq, c.Engine.RolloutSeq, c.Engine.Fleet().Len(), poison, time.Since(began).Round(time.Millisecond))
	if *jsonOut {
		if err := printAlertReplayJSON(env.Stdout, fromT, toT, *rulesDir, c); err != nil {
			return err
		}
	} else {
		printAlertReplay(env.Stdout, fromT, toT, *rulesDir, cfg.Alerting, *warmup, c)
	}
	if n := len(c.Diff.Missing) + len(c.Diff.Extra) + len(c.Diff.Different); n > 0 {
		return fmt.Errorf("replay alerting: %d difference(s) from the recorded alerts", n)
	}
	return nil
}

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// alertLine is one alert event in a line: time, state, severity, key and
// message.
func alertLine(at time.Time, a events.AlertData) string {
	state := a.State
	if a.Reason != "" && a.Reason != events.ResolvedCleared {
		state += " (" + a.Reason + ")"
	}
	line := fmt.Sprintf("%s %s %s %s", rfc(at), state, a.Severity, a.Key)
	if a.Message != "" && a.State == events.AlertRaised {
		line += ": " + a.Message
	}
	return line
}

func printAlertReplay(w io.Writer, from, to time.Time, rulesDir string, cfg alerting.Config, warmup time.Duration, c *ruleeval.Comparison) {
	fmt.Fprintf(w, "replay alerting %s .. %s\n", rfc(from), rfc(to))
	if rulesDir != "" {
		fmt.Fprintf(w, "rules: %s (given), over the whole history\n", rulesDir)
	} else {
		fmt.Fprintf(w, "rules: as recorded on ALERTS, %d set(s):\n", len(c.RuleSets))
		for _, rs := range c.RuleSets {
			d := rs.Data
			fmt.Fprintf(w, "  ALERTS seq %d %s %s %s sha256 %.12s (%s) from SHADOW seq %d, ROLLOUT seq %d\n",
				rs.Seq, rfc(rs.Time), d.Reason, d.Dir, d.SHA256, strings.Join(d.Rules, ", "), d.ShadowSeq+1, d.RolloutSeq+1)
		}
	}
	ticks := "over the whole history"
	if warmup > 0 {
		ticks = "from " + rfc(from.Add(-warmup))
	}
	fmt.Fprintf(w, "history: folded from the start of the log (the state at --from needs it); ticks every %s %s, offline after %s; compared within the range\n",
		cfg.TickInterval, ticks, cfg.OfflineAfter)
	d := c.Diff
	for _, m := range d.Missing {
		fmt.Fprintf(w, "MISSING   %s (recorded at ALERTS seq %d, not replayed)\n", alertLine(m.Time, m.Alert), m.Seq)
	}
	for _, x := range d.Extra {
		fmt.Fprintf(w, "EXTRA     %s (replayed, not recorded)\n", alertLine(x.At, x.Alert))
	}
	for _, df := range d.Different {
		fmt.Fprintf(w, "DIFFERENT %s %s %s (ALERTS seq %d): %s\n", rfc(df.Recorded.Time), df.Recorded.Alert.State,
			df.Recorded.Alert.Key, df.Recorded.Seq, strings.Join(df.Fields, "; "))
	}
	verdict := "no difference"
	if !d.Same() {
		verdict = "DIFFERENT"
	}
	fmt.Fprintf(w, "alert events: %d recorded, %d replayed: %d matched, %d missing, %d extra, %d different: %s\n",
		len(c.Recorded), len(c.Replayed), d.Matched, len(d.Missing), len(d.Extra), len(d.Different), verdict)
}

// alertReplayJSON is the --json form of replay alerting.
type alertReplayJSON struct {
	From     time.Time                `json:"from"`
	To       time.Time                `json:"to"`
	Rules    string                   `json:"rules,omitempty"`
	RuleSets []ruleSetJSON            `json:"ruleSets,omitempty"`
	Recorded int                      `json:"recorded"`
	Replayed int                      `json:"replayed"`
	Matched  int                      `json:"matched"`
	Missing  []alertEventJSON         `json:"missing"`
	Extra    []alertEventJSON         `json:"extra"`
	Differ   []alertDifferenceJSON    `json:"different"`
	Same     bool                     `json:"same"`
	Active   []events.AlertData       `json:"activeAtEnd"`
	Stats    map[string]ruleStatsJSON `json:"ruleStats,omitempty"`
}

type ruleSetJSON struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Reason     string    `json:"reason"`
	Dir        string    `json:"dir"`
	SHA256     string    `json:"sha256"`
	Rules      []string  `json:"rules"`
	ShadowSeq  uint64    `json:"shadowSeq"`
	RolloutSeq uint64    `json:"rolloutSeq"`
}

type alertEventJSON struct {
	Seq uint64    `json:"seq,omitempty"`
	At  time.Time `json:"at"`
	events.AlertData
}

type alertDifferenceJSON struct {
	Recorded alertEventJSON `json:"recorded"`
	Replayed alertEventJSON `json:"replayed"`
	Fields   []string       `json:"fields"`
}

type ruleStatsJSON struct {
	Evaluations uint64 `json:"evaluations"`
	Errors      uint64 `json:"errors"`
}

func printAlertReplayJSON(w io.Writer, from, to time.Time, rulesDir string, c *ruleeval.Comparison) error {
	d := c.Diff
	out := alertReplayJSON{From: from, To: to, Rules: rulesDir, Recorded: len(c.Recorded), Replayed: len(c.Replayed),
		Matched: d.Matched, Missing: []alertEventJSON{}, Extra: []alertEventJSON{}, Differ: []alertDifferenceJSON{},
		Same: d.Same(), Active: c.Engine.Active(), Stats: map[string]ruleStatsJSON{}}
	for _, rs := range c.RuleSets {
		out.RuleSets = append(out.RuleSets, ruleSetJSON{Seq: rs.Seq, Time: rs.Time, Reason: rs.Data.Reason, Dir: rs.Data.Dir,
			SHA256: rs.Data.SHA256, Rules: rs.Data.Rules, ShadowSeq: rs.Data.ShadowSeq, RolloutSeq: rs.Data.RolloutSeq})
	}
	for _, m := range d.Missing {
		out.Missing = append(out.Missing, alertEventJSON{Seq: m.Seq, At: m.Time, AlertData: m.Alert})
	}
	for _, x := range d.Extra {
		out.Extra = append(out.Extra, alertEventJSON{At: x.At, AlertData: x.Alert})
	}
	for _, df := range d.Different {
		out.Differ = append(out.Differ, alertDifferenceJSON{
			Recorded: alertEventJSON{Seq: df.Recorded.Seq, At: df.Recorded.Time, AlertData: df.Recorded.Alert},
			Replayed: alertEventJSON{At: df.Replayed.At, AlertData: df.Replayed.Alert}, Fields: df.Fields})
	}
	for id, s := range c.Engine.Stats() {
		out.Stats[id] = ruleStatsJSON{Evaluations: s.Evaluations, Errors: s.Errors}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
