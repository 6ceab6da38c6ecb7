package app

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/audit"
)

const auditUsage = `usage:
  otawatch audit export --from T --to T [--device TYPE/ID] [--streams S,...] [--format jsonl|csv] --out DIR
  otawatch audit verify [--public-key FILE] [--offline] DIR
  otawatch audit keygen [--out FILE]   (writes FILE and FILE.pub; default audit.key)
  otawatch audit report --from T --to T --out FILE.html [--pdf FILE.pdf] [--chromium COMMAND]`

// cmdAudit is "otawatch audit export|verify|keygen|report".
func cmdAudit(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, auditUsage)
		return fmt.Errorf("%w: audit what? (export, verify, keygen, report)", ErrUsage)
	}
	switch args[0] {
	case "export":
		return cmdAuditExport(ctx, env, args[1:])
	case "verify":
		return cmdAuditVerify(ctx, env, args[1:])
	case "keygen":
		return cmdAuditKeygen(env, args[1:])
	case "report":
		return cmdAuditReport(ctx, env, args[1:])
	}
	fmt.Fprintln(env.Stderr, auditUsage)
	return fmt.Errorf("%w: unknown audit command %q", ErrUsage, args[0])
}

func cmdAuditExport(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "audit export")
	var (
		lf      = addLogFlags(fs, "nats.*, audit.signing_key_file")
		from    = fs.String("from", "", "first stored `TIME` (RFC 3339, or YYYY-MM-DD in UTC)")
		to      = fs.String("to", "", "last stored `TIME` (RFC 3339, or YYYY-MM-DD in UTC)")
		device  = fs.String("device", "", "keep only this device's SHADOW events (`TYPE/ID`)")
		streams = fs.String("streams", "", "comma-separated `streams` (default: "+strings.Join(events.ChainedStreams(), ",")+")")
		format  = fs.String("format", "jsonl", "file `format`: jsonl or csv")
		out     = fs.String("out", "", "export `DIR` (created)")
		every   = fs.Duration("progress", time.Second, "print a progress line this often on stderr")
	)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	o := audit.ExportOptions{Device: *device, Format: *format, Dir: *out, ProgressEvery: *every,
		Progress: func(s string) { fmt.Fprintln(env.Stderr, s) }}
	var err error
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	case *out == "":
		return fmt.Errorf("%w: --out DIR is required", ErrUsage)
	}
	if o.From, o.To, err = parseRange(*from, *to); err != nil {
		return err
	}
	if o.Streams, err = auditStreams(*streams, *device); err != nil {
		return err
	}
	cfg, err := LoadConfig(*lf.file, env.Environ)
	if err != nil {
		return err
	}
	if cfg.Audit.SigningKeyFile != "" {
		if o.Key, err = audit.LoadPrivateKey(cfg.Audit.SigningKeyFile); err != nil {
			return err
		}
	}
	nc, js, err := connectCLIJetStream(cfg, *lf.nats, "otawatch audit export")
	if err != nil {
		return err
	}
	defer nc.Close()
	began := time.Now()
	m, err := audit.Export(ctx, js, o)
	if err != nil {
		return err
	}
	var n uint64
	for _, s := range m.Streams {
		n += s.Count
		fmt.Fprintf(env.Stdout, "%-9s seq %d..%d  %d events  head %s\n", s.Stream, s.FirstSeq, s.LastSeq, s.Count, s.HeadAfter)
	}
	el := time.Since(began)
	signed := "unsigned (set audit.signing_key_file to sign)"
	if o.Key != nil {
		signed = "signed"
	}
	fmt.Fprintf(env.Stdout, "exported %d events to %s in %s (%.0f events/s), manifest %s\n", n, *out, el.Round(time.Millisecond), float64(n)/el.Seconds(), signed)
	return nil
}

// parseRange reads --from and --to, both required, --to after --from.
func parseRange(from, to string) (f, t time.Time, err error) {
	if from == "" || to == "" {
		return f, t, fmt.Errorf("%w: --from and --to are required", ErrUsage)
	}
	if f, err = parseTime(from); err != nil {
		return f, t, fmt.Errorf("%w: --from: %v", ErrUsage, err)
	}
	if t, err = parseTime(to); err != nil {
		return f, t, fmt.Errorf("%w: --to: %v", ErrUsage, err)
	}
	if !t.After(f) {
		return f, t, fmt.Errorf("%w: --to %s is not after --from %s", ErrUsage, to, from)
	}
	return f, t, nil
}

// auditStreams is --streams, checked; with --device the default is SHADOW.
func auditStreams(s, device string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.ToUpper(strings.TrimSpace(p)); p == "" {
			continue
		}
		known := false
		for _, n := range events.ChainedStreams() {
			known = known || n == p
		}
		if !known {
			return nil, fmt.Errorf("%w: --streams: %q is not a chained stream (%s)", ErrUsage, p, strings.Join(events.ChainedStreams(), ", "))
		}
		out = append(out, p)
	}
	if len(out) == 0 && device != "" {
		out = []string{events.StreamShadow}
	}
	return out, nil
}

func cmdAuditVerify(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "audit verify")
	var (
		lf      = addLogFlags(fs, "nats.*")
		pubFile = fs.String("public-key", "", "the `FILE` (PEM) the manifest must be signed with")
		offline = fs.Bool("offline", false, "check the export alone, without the live streams")
	)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: audit verify needs one DIR", ErrUsage)
	}
	var o audit.VerifyOptions
	if *pubFile != "" {
		if o.PublicKey, err = audit.LoadPublicKey(*pubFile); err != nil {
			return err
		}
	}
	if !*offline {
		cfg, err := LoadConfig(*lf.file, env.Environ)
		if err != nil {
			return err
		}
		nc, js, err := connectCLIJetStream(cfg, *lf.nats, "otawatch audit verify")
		if err != nil {
			fmt.Fprintf(env.Stderr, "audit verify: live streams not reachable (%v): checking the export alone\n", err)
		} else {
			defer nc.Close()
			o.JS = js
		}
	}
	began := time.Now()
	rep, err := audit.Verify(ctx, pos[0], o)
	if err != nil {
		return err
	}
	el := time.Since(began)
	fmt.Fprintf(env.Stdout, "checked %d events in %s (%.0f events/s)", rep.Events, el.Round(time.Millisecond), float64(rep.Events)/el.Seconds())
	if rep.Live {
		fmt.Fprint(env.Stdout, ", against the live streams")
	}
	fmt.Fprintln(env.Stdout)
	switch {
	case rep.Signed && o.PublicKey != nil:
		fmt.Fprintf(env.Stdout, "signature: good, by the given key\n")
	case rep.Signed:
		fmt.Fprintf(env.Stdout, "signature: good, by the manifest's own key %s (pass --public-key to pin it)\n", rep.SignedBy)
	default:
		fmt.Fprintln(env.Stdout, "signature: none")
	}
	if p, ok := rep.FirstBadEvent(); ok {
		fmt.Fprintf(env.Stdout, "first bad event: %s\n", p)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(env.Stdout, "problem: %s\n", p)
	}
	if len(rep.Problems) > 0 {
		return fmt.Errorf("%s does not verify: %d problem(s)", pos[0], len(rep.Problems))
	}
	fmt.Fprintf(env.Stdout, "%s: ok\n", pos[0])
	return nil
}

func cmdAuditKeygen(env *Env, args []string) error {
	fs := newFlagSet(env, "audit keygen")
	out := fs.String("out", "audit.key", "private key `FILE`; the public key goes to FILE.pub")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	pk, err := audit.WriteKeyPair(*out, *out+".pub")
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s or %s.pub exists: not overwriting a key", *out, *out)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "wrote %s (private, set audit.signing_key_file to it) and %s.pub (public key %x)\n", *out, *out, []byte(ed25519.PublicKey(pk)))
	return nil
}
