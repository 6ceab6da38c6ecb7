package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
)

// cmdRules is "otawatch rules check|test|backtest|vars".
func cmdRules(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: rules what? (check, test, backtest, vars)", ErrUsage)
	}
	switch args[0] {
	case "check":
		return cmdRulesCheck(env, args[1:])
	case "test":
		return cmdRulesTest(env, args[1:])
	case "backtest":
		return cmdRulesBacktest(ctx, env, args[1:])
	case "vars":
		return rules.WriteFields(env.Stdout)
	}
	return fmt.Errorf("%w: unknown rules command %q (check, test, backtest, vars)", ErrUsage, args[0])
}

// loadRulesArg loads a rule file or a directory of them.
func loadRulesArg(path string) (*rules.Set, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return rules.LoadDir(path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, ps := rules.ParseRule(path, data)
	if len(ps) > 0 {
		return nil, &rules.LoadError{Problems: ps}
	}
	return &rules.Set{Rules: []*rules.Rule{r}, Files: []string{path}}, nil
}

// cmdRulesCheck is "otawatch rules check DIR|FILE...": every rule must
// load (parse, compile, bool, under the cost limit).
func cmdRulesCheck(env *Env, args []string) error {
	fs := newFlagSet(env, "rules check")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: rules check DIR|FILE...", ErrUsage)
	}
	bad := 0
	for _, p := range fs.Args() {
		set, err := loadRulesArg(p)
		if err != nil {
			bad++
			fmt.Fprintln(env.Stdout, err)
			continue
		}
		for _, r := range set.Rules {
			min, max := r.Levels[0].Condition.EstimatedCost()
			fmt.Fprintf(env.Stdout, "ok   %s:%d: %s (%s, %s scope, %s rule, cost %d..%d)\n", r.File, r.Line, r.ID,
				severities(r), r.Scope, r.Kind, min, max)
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d arguments have rules that do not load", bad, fs.NArg())
	}
	return nil
}

func severities(r *rules.Rule) string {
	s := make([]string, len(r.Levels))
	for i, l := range r.Levels {
		s[i] = l.Severity
	}
	return strings.Join(s, "/")
}

// cmdRulesTest is "otawatch rules test [DIR]": runs every tests file of
// DIR (the built-in rules without DIR).
func cmdRulesTest(env *Env, args []string) error {
	fs := newFlagSet(env, "rules test")
	verbose := fs.Bool("v", false, "print passing cases too")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var rep *ruleeval.TestReport
	var err error
	switch fs.NArg() {
	case 0:
		rep, err = ruleeval.RunTestsFS(rules.Defaults(), ".", rules.DefaultsName+" (built in)")
	case 1:
		dir := fs.Arg(0)
		rep, err = ruleeval.RunTestsFS(os.DirFS(dir), ".", dir)
	default:
		return fmt.Errorf("%w: rules test [DIR]", ErrUsage)
	}
	if err != nil {
		return err
	}
	for _, r := range rep.Results {
		if r.Err != nil || *verbose {
			fmt.Fprintln(env.Stdout, r.String())
		}
	}
	for _, f := range rep.Untested {
		fmt.Fprintf(env.Stdout, "warn %s: no tests file (%s)\n", f, rules.TestFileFor(filepath.Base(f)))
	}
	failed := rep.Failed()
	fmt.Fprintf(env.Stdout, "%d cases, %d passed, %d failed\n", len(rep.Results), len(rep.Results)-failed, failed)
	if failed > 0 {
		return fmt.Errorf("%d test case(s) failed", failed)
	}
	return nil
}

// cmdRulesBacktest is "otawatch rules backtest FILE --from T --to T": it
// replays the recorded SHADOW and ROLLOUT history through the rules of
// FILE (a rule file or directory) and prints what would have fired,
// publishing nothing.
func cmdRulesBacktest(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "rules backtest")
	var (
		file     = fs.String("c", os.Getenv("OTAWATCH_CONFIG"), "config `FILE` (nats.*, data_dir, alerting.*)")
		from     = fs.String("from", "", "report alerts from `TIME` (RFC 3339 or YYYY-MM-DD; default: the start of the log)")
		to       = fs.String("to", "", "replay up to `TIME` (default: the end of the log)")
		tick     = fs.Duration("tick", 0, "tick `interval` (default: alerting.tick_interval)")
		warmup   = fs.Duration("warmup", time.Hour, "ticks start this long before --from; earlier history is replayed without ticks")
		jsonOut  = fs.Bool("json", false, "print one JSON object per alert event instead of a table")
		ruleArgs []string
	)
	// The rule file may come before or after the flags.
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		ruleArgs, args = args[:1], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ruleArgs = append(ruleArgs, fs.Args()...)
	if len(ruleArgs) != 1 {
		return fmt.Errorf("%w: rules backtest FILE|DIR --from TIME --to TIME", ErrUsage)
	}
	var o ruleeval.BacktestOptions
	for _, tf := range []struct {
		name string
		val  string
		dst  *time.Time
	}{{"--from", *from, &o.From}, {"--to", *to, &o.To}} {
		if tf.val == "" {
			continue
		}
		t, err := parseTime(tf.val)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrUsage, tf.name, err)
		}
		*tf.dst = t
	}
	if !o.From.IsZero() && !o.To.IsZero() && !o.To.After(o.From) {
		return fmt.Errorf("%w: --to must be after --from", ErrUsage)
	}
	set, err := loadRulesArg(ruleArgs[0])
	if err != nil {
		return err
	}
	cfg, err := LoadConfig(*file, env.Environ)
	if err != nil {
		return err
	}
	o.TickInterval, o.OfflineAfter, o.Warmup = cfg.Alerting.TickInterval, cfg.Alerting.OfflineAfter, *warmup
	if *tick > 0 {
		o.TickInterval = *tick
	}
	log := newLogger(env.Stderr, cfg.Log)
	// Only the log is read: no MQTT listener, a client port that cannot
	// clash, and nothing is published.
	infraCfg := *cfg
	infraCfg.NATS.MQTTListen = ""
	infraCfg.NATS.Listen = "127.0.0.1:-1"
	inf, err := OpenInfra(ctx, &infraCfg, log, "otawatch-backtest")
	if err != nil {
		return err
	}
	defer inf.Close()

	poison := 0
	o.OnPoison = func(ruleeval.Record, error) { poison++ }
	started := time.Now()
	trs, eng, err := ruleeval.Backtest(ctx, inf.JS, set, o)
	if err != nil {
		return fmt.Errorf("backtest: %w", err)
	}
	fmt.Fprintf(env.Stderr, "backtest: rules %s over SHADOW up to seq %d and ROLLOUT up to seq %d (%d devices, tick %s, offline after %s, %d unreadable) in %s\n",
		strings.Join(set.IDs(), ","), eng.ShadowSeq, eng.RolloutSeq, eng.Fleet().Len(), o.TickInterval, o.OfflineAfter, poison,
		time.Since(started).Round(time.Millisecond))
	if *jsonOut {
		return printBacktestJSON(env.Stdout, trs)
	}
	printBacktest(env.Stdout, trs, eng)
	return nil
}

func printBacktestJSON(w io.Writer, trs []ruleeval.Transition) error {
	enc := json.NewEncoder(w)
	for _, t := range trs {
		if err := enc.Encode(struct {
			At time.Time `json:"at"`
			events.AlertData
		}{t.At, t.Alert}); err != nil {
			return err
		}
	}
	return nil
}

func printBacktest(w io.Writer, trs []ruleeval.Transition, eng *ruleeval.Engine) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSTATE\tSEVERITY\tRULE\tDEVICE\tMESSAGE")
	type count struct {
		raised, resolved int
		devices          map[string]bool
	}
	per := map[string]*count{}
	for _, t := range trs {
		a := t.Alert
		dev := "-"
		if a.DeviceID != "" {
			dev = a.TypeID + "/" + a.DeviceID
		}
		state := a.State
		if a.Reason != "" && a.Reason != events.ResolvedCleared {
			state += " (" + a.Reason + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.At.UTC().Format(time.RFC3339), state, a.Severity, a.RuleID, dev, a.Message)
		c := per[a.RuleID]
		if c == nil {
			c = &count{devices: map[string]bool{}}
			per[a.RuleID] = c
		}
		if a.State == events.AlertRaised {
			c.raised++
			if a.DeviceID != "" {
				c.devices[dev] = true
			}
		} else {
			c.resolved++
		}
	}
	tw.Flush()
	active := map[string]int{}
	for _, a := range eng.Active() {
		active[a.RuleID]++
	}
	ids := make([]string, 0, len(per))
	for id := range per {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	fmt.Fprintf(w, "\n%d alert events\n", len(trs))
	for _, id := range ids {
		c := per[id]
		fmt.Fprintf(w, "%s: %d raised, %d resolved, %d active at the end", id, c.raised, c.resolved, active[id])
		if len(c.devices) > 0 {
			fmt.Fprintf(w, ", %d devices", len(c.devices))
		}
		fmt.Fprintln(w)
	}
}
