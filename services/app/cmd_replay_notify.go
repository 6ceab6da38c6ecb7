package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/notify"
)

// cmdReplayNotify is "otawatch replay notify --from T --to T": it runs the
// recorded ALERTS (and the silences on NOTIFY) through the configured
// routes, grouping, inhibition and receivers' rendering, prints what would
// be sent, sending nothing, and compares the decisions with those NOTIFY
// records in the range. A difference exits 1.
func cmdReplayNotify(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "replay notify")
	var (
		lf       = addLogFlags(fs, "nats.*, notify.*")
		from     = fs.String("from", "", "compare decisions from `TIME` (RFC 3339, or YYYY-MM-DD in UTC)")
		to       = fs.String("to", "", "compare decisions up to `TIME`; timers run up to it (RFC 3339, or YYYY-MM-DD in UTC)")
		timeBase = fs.String("time", "stored", "`clock` of the replay: stored (when the streams stored each event, what the live service saw) or event (each event's own time)")
		jsonOut  = fs.Bool("json", false, "print the replay as one JSON object")
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
	o := notify.ReplayOptions{From: fromT, To: toT, Progress: func(s string) { fmt.Fprintln(env.Stderr, s) }}
	switch *timeBase {
	case "stored":
	case "event":
		o.EventTime = true
	default:
		return fmt.Errorf("%w: --time %q: want stored or event", ErrUsage, *timeBase)
	}
	cfg, nc, js, err := lf.connect(env, "otawatch replay notify")
	if err != nil {
		return err
	}
	defer nc.Close()
	began := time.Now()
	res, err := notify.Replay(ctx, js, cfg.Notify, newLogger(env.Stderr, cfg.Log), o)
	if err != nil {
		return fmt.Errorf("replay notify: %w", err)
	}
	fmt.Fprintf(env.Stderr, "replay notify: %d alert events (ALERTS up to seq %d), %d silences (NOTIFY up to seq %d), %d unreadable, in %s; nothing was sent\n",
		res.Alerts, res.AlertsSeq, res.Silences, res.NotifySeq, res.Unreadable, time.Since(began).Round(time.Millisecond))
	if *jsonOut {
		if err := printNotifyReplayJSON(env.Stdout, fromT, toT, res); err != nil {
			return err
		}
	} else {
		printNotifyReplay(env.Stdout, fromT, toT, *timeBase, res)
	}
	d := res.Diff
	if n := len(d.Missing) + len(d.Extra) + len(d.Different) + len(d.SuppressedMissing) + len(d.SuppressedExtra); n > 0 {
		return fmt.Errorf("replay notify: %d difference(s) from the recorded decisions", n)
	}
	return nil
}

// labelSet is labels as {a="1",b="2"}, sorted.
func labelSet(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, m[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func indent(s, by string) string { return by + strings.ReplaceAll(s, "\n", "\n"+by) }

func suppressionLine(s notify.Suppression) string {
	cause := "silence " + s.Data.SilenceID
	if s.Data.Reason == events.SuppressedInhibited {
		cause = "inhibited by " + s.Data.InhibitedBy
	}
	return fmt.Sprintf("%s %s %s %s: %s", rfc(s.At), s.Data.Receiver, s.Data.Severity, s.Data.Key, cause)
}

func printNotifyReplay(w io.Writer, from, to time.Time, timeBase string, res *notify.ReplayResult) {
	fmt.Fprintf(w, "replay notify %s .. %s (clock: %s times; both streams read from their start, compared within the range)\n", rfc(from), rfc(to), timeBase)
	fmt.Fprintf(w, "\nwould send %d notification(s):\n", len(res.Notifications))
	for _, n := range res.Notifications {
		outcome := n.Outcome
		if outcome == "" {
			outcome = "not on NOTIFY"
		}
		fmt.Fprintf(w, "%s %s %s group %s, %d alert(s), notification %d of the group (recorded: %s)\n",
			rfc(n.Data.DecidedAt), n.Data.Receiver, n.Kind(), labelSet(n.Data.GroupLabels), len(n.Notification.Alerts), n.Data.Count+1, outcome)
		fmt.Fprintln(w, indent(n.Text, "    "))
	}
	if len(res.Suppressed) > 0 {
		fmt.Fprintf(w, "\nwould suppress %d alert(s):\n", len(res.Suppressed))
		for _, s := range res.Suppressed {
			fmt.Fprintln(w, suppressionLine(s))
		}
	}
	d := res.Diff
	if !d.Same() {
		fmt.Fprintln(w)
	}
	for _, m := range d.Missing {
		fmt.Fprintf(w, "MISSING   %s %s %s group %s (NOTIFY seq %d, %s): not decided by the replay\n",
			rfc(m.Data.DecidedAt), m.Data.Receiver, m.Data.Status, labelSet(m.Data.GroupLabels), m.Seq, m.Outcome)
	}
	for _, x := range d.Extra {
		fmt.Fprintf(w, "EXTRA     %s %s %s group %s: decided, not on NOTIFY\n", rfc(x.Data.DecidedAt), x.Data.Receiver, x.Kind(), labelSet(x.Data.GroupLabels))
	}
	for _, df := range d.Different {
		fmt.Fprintf(w, "DIFFERENT %s %s group %s notification %d (NOTIFY seq %d): %s\n", rfc(df.Recorded.Data.DecidedAt), df.Recorded.Data.Receiver,
			labelSet(df.Recorded.Data.GroupLabels), df.Recorded.Data.Count+1, df.Recorded.Seq, strings.Join(df.Fields, "; "))
	}
	for _, s := range d.SuppressedMissing {
		fmt.Fprintf(w, "MISSING   suppression %s (NOTIFY seq %d)\n", suppressionLine(s), s.Seq)
	}
	for _, s := range d.SuppressedExtra {
		fmt.Fprintf(w, "EXTRA     suppression %s\n", suppressionLine(s))
	}
	verdict := "no difference"
	if !d.Same() {
		verdict = "DIFFERENT"
	}
	fmt.Fprintf(w, "\nnotifications: %d recorded, %d decided: %d matched, %d missing, %d extra, %d different; suppressions: %d recorded, %d decided: %d matched, %d missing, %d extra: %s\n",
		len(res.Recorded), len(res.Notifications), d.Matched, len(d.Missing), len(d.Extra), len(d.Different),
		len(res.RecordedSuppressed), len(res.Suppressed), d.SuppressedMatched, len(d.SuppressedMissing), len(d.SuppressedExtra), verdict)
}

// notifyReplayJSON is the --json form of replay notify.
type notifyReplayJSON struct {
	From               time.Time                  `json:"from"`
	To                 time.Time                  `json:"to"`
	Notifications      []replayedNotificationJSON `json:"notifications"`
	Suppressed         []notify.Suppression       `json:"suppressed"`
	Recorded           int                        `json:"recorded"`
	Matched            int                        `json:"matched"`
	Missing            []events.NotificationData  `json:"missing"`
	Extra              []events.NotificationData  `json:"extra"`
	Different          []notificationDiffJSON     `json:"different"`
	RecordedSuppressed int                        `json:"recordedSuppressed"`
	SuppressedMatched  int                        `json:"suppressedMatched"`
	SuppressedMissing  []notify.Suppression       `json:"suppressedMissing"`
	SuppressedExtra    []notify.Suppression       `json:"suppressedExtra"`
	Same               bool                       `json:"same"`
}

type replayedNotificationJSON struct {
	events.NotificationData
	Kind    string             `json:"kind"`
	Alerts  []events.AlertData `json:"alerts"`
	Text    string             `json:"text"`
	Outcome string             `json:"recordedOutcome,omitempty"`
}

type notificationDiffJSON struct {
	Recorded events.NotificationData `json:"recorded"`
	Replayed events.NotificationData `json:"replayed"`
	Fields   []string                `json:"fields"`
}

func printNotifyReplayJSON(w io.Writer, from, to time.Time, res *notify.ReplayResult) error {
	d := res.Diff
	out := notifyReplayJSON{From: from, To: to, Notifications: []replayedNotificationJSON{}, Suppressed: res.Suppressed,
		Recorded: len(res.Recorded), Matched: d.Matched, Missing: []events.NotificationData{}, Extra: []events.NotificationData{},
		Different: []notificationDiffJSON{}, RecordedSuppressed: len(res.RecordedSuppressed), SuppressedMatched: d.SuppressedMatched,
		SuppressedMissing: d.SuppressedMissing, SuppressedExtra: d.SuppressedExtra, Same: d.Same()}
	for _, n := range res.Notifications {
		out.Notifications = append(out.Notifications, replayedNotificationJSON{NotificationData: n.Data, Kind: n.Kind(),
			Alerts: n.Notification.Alerts, Text: n.Text, Outcome: n.Outcome})
	}
	for _, m := range d.Missing {
		out.Missing = append(out.Missing, m.Data)
	}
	for _, x := range d.Extra {
		out.Extra = append(out.Extra, x.Data)
	}
	for _, df := range d.Different {
		out.Different = append(out.Different, notificationDiffJSON{Recorded: df.Recorded.Data, Replayed: df.Replayed.Data, Fields: df.Fields})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
