package alerting

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
)

// ReplayOptions tune Replay.
type ReplayOptions struct {
	// From and To bound the comparison by event time (inclusive). The
	// history before From is replayed too, from the start of the log, to
	// build the state at From; only alert events within the range are
	// compared.
	From, To time.Time
	// RulesDir, when set, replays these rules over the whole history
	// instead of the rule sets recorded on ALERTS.
	RulesDir string
	// Warmup: ticks start this long before From (0: ticks over the whole
	// history, as the live service ran them; long histories run faster
	// with a bound).
	Warmup time.Duration
	// Progress, if set, hears how far the replay has read, about once a
	// second.
	Progress func(ruleeval.BacktestProgress)
	// OnPoison hears SHADOW and ROLLOUT records the engine refused.
	OnPoison func(ruleeval.Record, error)
}

// Replay runs the recorded SHADOW and ROLLOUT history through the rules
// the service ran (the rule sets recorded on ALERTS, each from where it
// took over) or through o.RulesDir, with the service's tick_interval and
// offline_after from cfg, and compares the alert events it computes with
// those ALERTS holds in the range. The stream-full alerts are not the
// rules' and are left out. It publishes nothing.
func Replay(ctx context.Context, js jetstream.JetStream, cfg Config, o ReplayOptions) (*ruleeval.Comparison, error) {
	cfg.RulesDir = "" // the replay's rules are o.RulesDir or the recorded ones
	if err := conf.Check("alerting", &cfg); err != nil {
		return nil, err
	}
	co := ruleeval.CompareOptions{
		From: o.From, To: o.To, TickInterval: cfg.TickInterval, OfflineAfter: cfg.OfflineAfter, Warmup: o.Warmup,
		Ignore:   func(a events.AlertData) bool { return a.RuleID == StreamFullRule },
		OnPoison: o.OnPoison, Progress: o.Progress,
	}
	if o.Warmup <= 0 {
		co.Warmup = -1
	}
	if o.RulesDir != "" {
		files, err := ruleeval.ReadRuleFiles(o.RulesDir)
		if err != nil {
			return nil, err
		}
		if co.Rules, err = ruleeval.LoadRuleFiles(o.RulesDir, files); err != nil {
			return nil, fmt.Errorf("rules %s: %w", o.RulesDir, err)
		}
	}
	return ruleeval.Compare(ctx, js, co)
}
