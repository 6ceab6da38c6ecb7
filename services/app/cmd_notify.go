package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/notify/email"
	"github.com/otawatch/otawatch/services/notify/pagerduty"
	"github.com/otawatch/otawatch/services/notify/slack"
	"github.com/otawatch/otawatch/services/notify/webhook"
)

// NotifyConfig is the "notify" section: the route tree and settings of
// services/notify, with the receivers this binary has.
type NotifyConfig = notify.Config[*NotifyReceiver]

// NotifyReceiver is one entry of notify.receivers: a name and exactly one
// receiver block. The blocks are the receiver packages' configurations;
// they live here, not in services/notify, because those packages import
// it.
type NotifyReceiver struct {
	Name      string            `yaml:"name"`
	PagerDuty *pagerduty.Config `yaml:"pagerduty"`
	Slack     *slack.Config     `yaml:"slack"`
	Email     *email.Config     `yaml:"email"`
	Webhook   *webhook.Config   `yaml:"webhook"`
}

// ReceiverName is the entry's name.
func (r *NotifyReceiver) ReceiverName() string {
	if r == nil {
		return ""
	}
	return r.Name
}

// ReceiverKind is the kind of the entry's block ("" when it has none or
// several: Validate says so).
func (r *NotifyReceiver) ReceiverKind() string {
	kinds := r.kinds()
	if len(kinds) != 1 {
		return ""
	}
	return kinds[0]
}

func (r *NotifyReceiver) kinds() []string {
	var out []string
	if r == nil {
		return nil
	}
	if r.PagerDuty != nil {
		out = append(out, notify.KindPagerDuty)
	}
	if r.Slack != nil {
		out = append(out, notify.KindSlack)
	}
	if r.Email != nil {
		out = append(out, notify.KindEmail)
	}
	if r.Webhook != nil {
		out = append(out, notify.KindWebhook)
	}
	return out
}

// SetDefaults fills in the block's unset keys.
func (r *NotifyReceiver) SetDefaults() {
	switch {
	case r == nil:
	case r.PagerDuty != nil:
		r.PagerDuty.SetDefaults()
	case r.Slack != nil:
		r.Slack.SetDefaults()
	case r.Email != nil:
		r.Email.SetDefaults()
	case r.Webhook != nil:
		r.Webhook.SetDefaults()
	}
}

// Validate reports the entry's problems: not exactly one block, and the
// block's own (its secret file among them).
func (r *NotifyReceiver) Validate(p conf.Problems) {
	if r == nil {
		p.Addf("", "is empty: give a name and one receiver block")
		return
	}
	switch kinds := r.kinds(); len(kinds) {
	case 0:
		p.Addf("", "receiver %q has no block: give one of pagerduty, slack, email, webhook", r.Name)
		return
	case 1:
	default:
		p.Addf("", "receiver %q has %d blocks (%s): give one", r.Name, len(kinds), strings.Join(kinds, ", "))
		return
	}
	switch {
	case r.PagerDuty != nil:
		r.PagerDuty.Validate(p.Sub("pagerduty"))
	case r.Slack != nil:
		r.Slack.Validate(p.Sub("slack"))
	case r.Email != nil:
		r.Email.Validate(p.Sub("email"))
	case r.Webhook != nil:
		r.Webhook.Validate(p.Sub("webhook"))
	}
}

// Notifier builds the entry's receiver.
func (r *NotifyReceiver) Notifier(*slog.Logger) (notify.Notifier, error) {
	switch {
	case r.PagerDuty != nil:
		return pagerduty.New(*r.PagerDuty)
	case r.Slack != nil:
		return slack.New(*r.Slack)
	case r.Email != nil:
		// Immediate mail through Notify; a digest_at route's group as a
		// digest through NotifyDigest (notify.DigestNotifier).
		return email.New(*r.Email)
	case r.Webhook != nil:
		return webhook.New(*r.Webhook)
	}
	return nil, fmt.Errorf("receiver %q has no block", r.Name)
}

// notifyUsage is the help of "otawatch notify".
const notifyUsage = `usage: otawatch notify test [-c FILE] [--resolved] [--timeout 30s] RECEIVER

Sends a sample notification (three failed devices of job "otawatch-test")
through the configured receiver and prints its answer. --resolved sends the
same group's resolved notification (PagerDuty: resolves the test incident).`

// cmdNotify is "otawatch notify test RECEIVER".
func cmdNotify(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 || args[0] != "test" {
		fmt.Fprintln(env.Stderr, notifyUsage)
		return fmt.Errorf("%w: what to do? (test)", ErrUsage)
	}
	fs := newFlagSet(env, "notify test")
	fs.Usage = func() { fmt.Fprintln(env.Stderr, notifyUsage) }
	file := fs.String("c", os.Getenv("OTAWATCH_CONFIG"), "config `FILE`")
	resolved := fs.Bool("resolved", false, "send the resolved notification of the test group")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: notify test needs one RECEIVER", ErrUsage)
	}
	cfg, err := LoadConfig(*file, env.Environ)
	if err != nil {
		return err
	}
	var rc *NotifyReceiver
	var names []string
	for _, r := range cfg.Notify.Receivers {
		names = append(names, r.Name)
		if r.Name == pos[0] {
			rc = r
		}
	}
	if rc == nil {
		return fmt.Errorf("no receiver %q in the configuration (receivers: %s)", pos[0], strings.Join(names, ", "))
	}
	n, err := rc.Notifier(nil)
	if err != nil {
		return fmt.Errorf("build receiver %q: %w", rc.Name, err)
	}
	sample := notify.SampleNotification(rc.Name, cfg.Notify.ExternalURL, time.Now(), *resolved)
	tctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, nerr := n.Notify(tctx, sample)
	if *asJSON {
		out := struct {
			Receiver   string `json:"receiver"`
			GroupKey   string `json:"groupKey"`
			Status     int    `json:"status,omitempty"`
			Answer     string `json:"answer,omitempty"`
			Retry      bool   `json:"retry,omitempty"`
			RetryAfter string `json:"retryAfter,omitempty"`
			Error      string `json:"error,omitempty"`
		}{Receiver: rc.Name, GroupKey: sample.GroupKey, Status: res.Status, Answer: res.Answer, Retry: res.Retry}
		if res.RetryAfter > 0 {
			out.RetryAfter = res.RetryAfter.String()
		}
		if nerr != nil {
			out.Error = nerr.Error()
		}
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(env.Stdout, "receiver: %s (%s)\ngroup:    %s\nstatus:   %d\nanswer:   %s\n",
			rc.Name, rc.ReceiverKind(), sample.GroupKey, res.Status, res.Answer)
		if nerr != nil {
			fmt.Fprintf(env.Stdout, "retry:    %v", res.Retry)
			if res.RetryAfter > 0 {
				fmt.Fprintf(env.Stdout, " (after %s)", res.RetryAfter)
			}
			fmt.Fprintln(env.Stdout)
		}
	}
	if nerr != nil {
		return fmt.Errorf("receiver %q: %w", rc.Name, nerr)
	}
	return nil
}
