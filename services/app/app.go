// Package app is otawatch's command line: the subcommand registry, config
// loading, and the oklog/run group that runs the services in one process.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/otawatch/otawatch/services/internal/conf"
)

// Env is what a command runs with.
type Env struct {
	Stdout, Stderr io.Writer
	// Stdin is where a command reads a password from ("devices add");
	// nil is os.Stdin.
	Stdin io.Reader
	// Environ is the process environment (os.Environ()).
	Environ []string
	// reload receives SIGHUP for a command that reloads (run); Main sets it.
	reload <-chan os.Signal
}

// command is one subcommand.
type command struct {
	usage   string // one line: the arguments
	summary string
	run     func(ctx context.Context, env *Env, args []string) error
	// reloads: the command reloads on SIGHUP (Env.reload) instead of
	// being stopped by it.
	reloads bool
}

// commands is the registry of subcommands; a command with words
// ("rules check") is registered under its first word and dispatches itself.
func commands() map[string]command {
	return map[string]command{
		"run":      {"[-c FILE] [service...]", "run the services (all by default: " + strings.Join(serviceNames(), ", ") + ")", cmdRun, true},
		"check":    {"config [-c FILE]", "validate a configuration and print every problem", cmdCheck, false},
		"simulate": {"[--devices N] [--broker URL] ...", "run a simulated device fleet that speaks the device contract", cmdSimulate, false},
		"replay":   {"projector|verify|alerting|rollout|notify ...", "re-project the log into ClickHouse, compare two databases, or re-run a consumer over the log and diff it against what it recorded", cmdReplay, false},
		"rules":    {"check|test|backtest ...", "check, test and backtest alert rules", cmdRules, false},
		"rollout":  {"create|list|show|pause|resume|abort|retry-failed ...", "drive rollout jobs on the running system", cmdRollout, false},
		"notify":   {"test [-c FILE] [--resolved] RECEIVER", "send a sample notification through a configured receiver and print its answer", cmdNotify, false},
		"silence":  {"add|list|expire ...", "silence alerts' notifications (matchers, start, end, author, comment)", cmdSilence, false},
		"devices":  {"add|remove|list|import|mosquitto-passwd ...", "manage device identities (MQTT username = device id, and a password)", cmdDevices, false},
		"audit":    {"export|verify|keygen|report ...", "export a time range with its hash-chain evidence, verify an export, make a signing key, write a compliance report", cmdAudit, false},
		"fleet":    {"at TIME [-c FILE] [--nats URL] [--json] [--device TYPE/ID] [--no-snapshots]", "the fleet as the live system showed it at TIME, from the log", cmdFleet, false},
	}
}

// ErrUsage marks a command line that is wrong; Main prints usage for it.
var ErrUsage = errors.New("usage")

// Main runs the command line args (without the program name) and returns
// the process exit code: 0 ok, 1 failure, 2 usage.
func Main(ctx context.Context, args []string, env *Env) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.Stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(env.Stderr, "otawatch: unknown command %q\n\n", args[0])
		usage(env.Stderr, cmds)
		return 2
	}
	// Signals are handled here, once, for every command: SIGINT and
	// SIGTERM end ctx (each command stops cleanly and returns), and a
	// command that reloads gets SIGHUP. They are caught from the start, so
	// a signal during start-up (opening the store) still stops cleanly.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cmd.reloads {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		e := *env
		e.reload = hup
		env = &e
	}
	err := cmd.run(ctx, env, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(env.Stderr, "otawatch %s: %v\nusage: otawatch %s %s\n", args[0], err, args[0], cmd.usage)
		return 2
	default:
		fmt.Fprintf(env.Stderr, "otawatch %s: %v\n", args[0], err)
		return 1
	}
}

func usage(w io.Writer, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: otawatch COMMAND [ARGS]")
	fmt.Fprintln(w, "\ncommands:")
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n            %s\n", n, cmds[n].usage, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nEvery command takes -c FILE (a YAML config); every key is also settable as OTAWATCH_<KEY_PATH>.")
}

// newFlagSet returns a flag set for a command that reports errors as usage
// errors instead of exiting.
func newFlagSet(env *Env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet("otawatch "+name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	return fs
}

// parseFlags parses args, turning a flag error into ErrUsage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return nil
}

// newLogger builds the process logger from the log section.
func newLogger(w io.Writer, c LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// cmdCheck is "otawatch check config".
func cmdCheck(_ context.Context, env *Env, args []string) error {
	if len(args) == 0 || args[0] != "config" {
		return fmt.Errorf("%w: what to check? (config)", ErrUsage)
	}
	fs := newFlagSet(env, "check config")
	file := fs.String("c", os.Getenv("OTAWATCH_CONFIG"), "config `FILE`")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if _, err := LoadConfig(*file, env.Environ); err != nil {
		var ce *conf.Error
		if !errors.As(err, &ce) {
			return err
		}
		fmt.Fprintln(env.Stdout, ce)
		return fmt.Errorf("configuration is not valid: %d problem(s)", len(ce.Problems))
	}
	name := *file
	if name == "" {
		name = "(defaults and environment)"
	}
	fmt.Fprintf(env.Stdout, "%s: ok\n", name)
	return nil
}
