package app

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/silence"
)

// silenceUsage is the help of "otawatch silence".
const silenceUsage = `usage: otawatch silence COMMAND [flags] [ARGS]

commands:
  add [--for 2h | --end TIME] [--start TIME] [--comment C] [--id ID] MATCHER...
                 silence the alerts every MATCHER selects: name="value",
                 name!="value", name=~"regex", name!~"regex" (labels: severity,
                 rule, job, wave, device_type, device and the rules' labels)
  list [--all]   active and pending silences (--all: expired ones too)
  expire ID      end a silence now

every command: [-c FILE] [--nats URL] [--json]
TIME is RFC 3339 (2026-11-30T18:00:00Z). Silences are events on NOTIFY
(notify.silence.created, notify.silence.expired): they survive restarts and
replays. The author is the identity this command connects as and $USER.`

// cmdSilence is "otawatch silence add|list|expire".
func cmdSilence(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, silenceUsage)
		return fmt.Errorf("%w: which silence command?", ErrUsage)
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "-h", "--help", "help":
		fmt.Fprintln(env.Stdout, silenceUsage)
		return nil
	case "add":
		return cmdSilenceAdd(ctx, env, args)
	case "list":
		return cmdSilenceList(ctx, env, args)
	case "expire":
		return cmdSilenceExpire(ctx, env, args)
	}
	fmt.Fprintln(env.Stderr, silenceUsage)
	return fmt.Errorf("%w: unknown silence command %q", ErrUsage, sub)
}

// silenceFlags is the flag set of "silence sub" with the flags every
// silence command takes: -c, --nats and --json.
func silenceFlags(env *Env, sub string) (fs *flag.FlagSet, lf logFlags, asJSON *bool) {
	fs = newFlagSet(env, "silence "+sub)
	fs.Usage = func() { fmt.Fprintln(env.Stderr, silenceUsage) }
	return fs, addLogFlags(fs, ""), fs.Bool("json", false, "print JSON")
}

// cmdSilenceAdd is "otawatch silence add MATCHER...": it records the
// silence on NOTIFY (notify.silence.created), by this connection's
// identity and $USER.
func cmdSilenceAdd(ctx context.Context, env *Env, args []string) error {
	fs, lf, asJSON := silenceFlags(env, "add")
	forDur := fs.Duration("for", 0, "how long from the start (default 1h unless --end)")
	start := fs.String("start", "", "start `TIME` (default now)")
	end := fs.String("end", "", "end `TIME`")
	comment := fs.String("comment", "", "why")
	id := fs.String("id", "", "silence `ID` (generated when empty)")
	matchers, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(matchers) == 0 {
		return fmt.Errorf("%w: silence add needs at least one MATCHER", ErrUsage)
	}
	now := time.Now().UTC()
	sil, err := silenceFromFlags(now, matchers, *start, *end, *forDur, *comment, *id)
	if err != nil {
		return err
	}
	_, nc, js, err := lf.connect(env, "otawatch silence")
	if err != nil {
		return err
	}
	defer nc.Close()
	if sil.CreatedBy, err = events.CommandActor(events.ConnIdentity(nc), envUser(env)); err != nil {
		return err
	}
	ev, err := silence.CreatedEvent(sil, now)
	if err != nil {
		return err
	}
	if err := publishEvent(ctx, js, events.SilenceSubject(events.SilenceCreated), ev); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, sil)
	}
	fmt.Fprintf(env.Stdout, "silence %s: %s from %s until %s, by %s\n", sil.ID, silence.FormatMatchers(sil.Matchers),
		sil.StartsAt.Format(time.RFC3339), sil.EndsAt.Format(time.RFC3339), sil.CreatedBy)
	return nil
}

// cmdSilenceExpire is "otawatch silence expire ID": it ends a silence
// that has not expired (notify.silence.expired).
func cmdSilenceExpire(ctx context.Context, env *Env, args []string) error {
	fs, lf, _ := silenceFlags(env, "expire")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: silence expire needs one ID", ErrUsage)
	}
	now := time.Now().UTC()
	_, nc, js, err := lf.connect(env, "otawatch silence")
	if err != nil {
		return err
	}
	defer nc.Close()
	author, err := events.CommandActor(events.ConnIdentity(nc), envUser(env))
	if err != nil {
		return err
	}
	list, err := silence.Read(ctx, js)
	if err != nil {
		return err
	}
	var found *silence.Silence
	for i := range list {
		if list[i].ID == pos[0] {
			found = &list[i]
		}
	}
	if found == nil {
		return fmt.Errorf("no silence %q", pos[0])
	}
	if found.State(now) == "expired" {
		return fmt.Errorf("silence %s has already expired", found.ID)
	}
	ev, err := silence.ExpiredEvent(events.SilenceExpiredData{ID: found.ID, At: now, By: author})
	if err != nil {
		return err
	}
	if err := publishEvent(ctx, js, events.SilenceSubject(events.SilenceExpired), ev); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "silence %s expired\n", found.ID)
	return nil
}

// cmdSilenceList is "otawatch silence list": the active and pending
// silences, with --all the expired ones too.
func cmdSilenceList(ctx context.Context, env *Env, args []string) error {
	fs, lf, asJSON := silenceFlags(env, "list")
	all := fs.Bool("all", false, "list expired silences too")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, pos[0])
	}
	now := time.Now().UTC()
	_, nc, js, err := lf.connect(env, "otawatch silence")
	if err != nil {
		return err
	}
	defer nc.Close()
	list, err := silence.Read(ctx, js)
	if err != nil {
		return err
	}
	shown := list[:0]
	for _, s := range list {
		if *all || s.State(now) != "expired" {
			shown = append(shown, s)
		}
	}
	if *asJSON {
		if shown == nil {
			shown = []silence.Silence{}
		}
		return printJSON(env, shown)
	}
	return printSilences(env.Stdout, shown, now)
}

// printSilences prints list as a table, an expired silence ending when it
// was expired.
func printSilences(w io.Writer, list []silence.Silence, now time.Time) error {
	if len(list) == 0 {
		fmt.Fprintln(w, "no silences")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tMATCHERS\tSTARTS\tENDS\tCREATED BY\tCOMMENT")
	for _, s := range list {
		ends := s.EndsAt
		if s.ExpiredAt != nil && s.ExpiredAt.Before(ends) {
			ends = *s.ExpiredAt
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.State(now), silence.FormatMatchers(s.Matchers),
			s.StartsAt.Format(time.RFC3339), ends.Format(time.RFC3339), s.CreatedBy, s.Comment)
	}
	return tw.Flush()
}

// envUser is $USER in env.Environ ("" without one): the person a command
// names beside its connection's identity (events.CommandActor).
func envUser(env *Env) string {
	var user string
	for _, kv := range env.Environ {
		if u, ok := strings.CutPrefix(kv, "USER="); ok && u != "" {
			user = u
		}
	}
	return user
}

// silenceFromFlags builds the silence "silence add" creates (without its
// author), checking it as the service will.
func silenceFromFlags(now time.Time, matchers []string, start, end string, forDur time.Duration, comment, id string) (events.SilenceData, error) {
	s := events.SilenceData{ID: id, Matchers: matchers, StartsAt: now, Comment: comment}
	if s.ID == "" {
		s.ID = silence.NewID()
	}
	var err error
	if start != "" {
		if s.StartsAt, err = time.Parse(time.RFC3339, start); err != nil {
			return s, fmt.Errorf("%w: --start %q is not an RFC 3339 time", ErrUsage, start)
		}
	}
	switch {
	case end != "" && forDur != 0:
		return s, fmt.Errorf("%w: give --for or --end, not both", ErrUsage)
	case end != "":
		if s.EndsAt, err = time.Parse(time.RFC3339, end); err != nil {
			return s, fmt.Errorf("%w: --end %q is not an RFC 3339 time", ErrUsage, end)
		}
	case forDur != 0:
		s.EndsAt = s.StartsAt.Add(forDur)
	default:
		s.EndsAt = s.StartsAt.Add(time.Hour)
	}
	s.CreatedBy = "-" // checked here; the connection's identity replaces it
	if err := silence.Check(s); err != nil {
		return s, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	s.CreatedBy = ""
	return s, nil
}

// publishEvent stores ev on subject with its id as Nats-Msg-Id.
func publishEvent(ctx context.Context, js jetstream.JetStream, subject string, ev events.Event) error {
	b, err := ev.Marshal()
	if err != nil {
		return fmt.Errorf("marshal %s event: %w", ev.Type, err)
	}
	err = events.Retry(ctx, 3, func(ctx context.Context) error {
		_, err := js.Publish(ctx, subject, b, jetstream.WithMsgID(ev.ID))
		return err
	})
	if err != nil {
		return fmt.Errorf("publish to %s: %w", subject, err)
	}
	return nil
}

func printJSON(env *Env, v any) error {
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
