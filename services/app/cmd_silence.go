package app

import (
	"context"
	"encoding/json"
	"fmt"
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
	if sub == "-h" || sub == "--help" || sub == "help" {
		fmt.Fprintln(env.Stdout, silenceUsage)
		return nil
	}
	fs := newFlagSet(env, "silence "+sub)
	fs.Usage = func() { fmt.Fprintln(env.Stderr, silenceUsage) }
	lf := addLogFlags(fs, "")
	asJSON := fs.Bool("json", false, "print JSON")
	var forDur time.Duration
	var start, end, comment, id string
	var all bool
	switch sub {
	case "add":
		fs.DurationVar(&forDur, "for", 0, "how long from the start (default 1h unless --end)")
		fs.StringVar(&start, "start", "", "start `TIME` (default now)")
		fs.StringVar(&end, "end", "", "end `TIME`")
		fs.StringVar(&comment, "comment", "", "why")
		fs.StringVar(&id, "id", "", "silence `ID` (generated when empty)")
	case "list":
		fs.BoolVar(&all, "all", false, "list expired silences too")
	case "expire":
	default:
		fmt.Fprintln(env.Stderr, silenceUsage)
		return fmt.Errorf("%w: unknown silence command %q", ErrUsage, sub)
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case sub == "add" && len(pos) == 0:
		return fmt.Errorf("%w: silence add needs at least one MATCHER", ErrUsage)
	case sub == "expire" && len(pos) != 1:
		return fmt.Errorf("%w: silence expire needs one ID", ErrUsage)
	case sub == "list" && len(pos) > 0:
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, pos[0])
	}
	now := time.Now().UTC()
	var sil events.SilenceData
	if sub == "add" {
		if sil, err = silenceFromFlags(now, pos, start, end, forDur, comment, id); err != nil {
			return err
		}
	}

	cfg, err := LoadConfig(*lf.file, env.Environ)
	if err != nil {
		return err
	}
	nc, err := connectCLI(cfg, *lf.nats, "otawatch silence")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	var user string
	for _, kv := range env.Environ {
		if u, ok := strings.CutPrefix(kv, "USER="); ok && u != "" {
			user = u
		}
	}
	author, err := events.CommandActor(events.ConnIdentity(nc), user)
	if err != nil {
		return err
	}

	switch sub {
	case "add":
		sil.CreatedBy = author
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
	case "expire":
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
		if st := found.State(now); st == "expired" {
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
	list, err := silence.Read(ctx, js)
	if err != nil {
		return err
	}
	shown := list[:0]
	for _, s := range list {
		if all || s.State(now) != "expired" {
			shown = append(shown, s)
		}
	}
	if *asJSON {
		if shown == nil {
			shown = []silence.Silence{}
		}
		return printJSON(env, shown)
	}
	if len(shown) == 0 {
		fmt.Fprintln(env.Stdout, "no silences")
		return nil
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tMATCHERS\tSTARTS\tENDS\tCREATED BY\tCOMMENT")
	for _, s := range shown {
		ends := s.EndsAt
		if s.ExpiredAt != nil && s.ExpiredAt.Before(ends) {
			ends = *s.ExpiredAt
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.State(now), silence.FormatMatchers(s.Matchers),
			s.StartsAt.Format(time.RFC3339), ends.Format(time.RFC3339), s.CreatedBy, s.Comment)
	}
	return tw.Flush()
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
