package app

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/identity"
)

// devicesUsage is the help of "otawatch devices".
const devicesUsage = `usage: otawatch devices COMMAND [flags] [ARG]

commands:
  add ID [--password-file F | --generate] [--replace] [--cost N]
                       register a device; without --password-file or --generate
                       the password is the first line of standard input
  remove ID            unregister a device
  list [--json]        the registered devices (ids and when they were added)
  import FILE [--password-secret-file F] [--cost N]
                       register every device of FILE ("-" is standard input):
                       lines "id password" or "id,password"; with
                       --password-secret-file, lines "id" and each password is
                       hex HMAC-SHA256(secret, id), as "otawatch simulate
                       --password-secret-file" derives it. Ids already
                       registered get the new password.
  mosquitto-passwd --out FILE
                       write Mosquitto's password_file: every device, and the
                       services' users (mqtt.username, rollout.username with
                       their password_file)

every command: [-c FILE]
Passwords never come from flags. Each device connects with username = its id.
The registry is devices.registry_file (default data_dir/devices.json); a running
otawatch sees changes within a second. With devices.mosquitto_password_file set,
add, import and remove also rewrite Mosquitto's password file (and, with
devices.mosquitto_pid_file, make Mosquitto reread it).

--cost is bcrypt's (4..14, default 10). At 10 a hash takes ~50-80 ms on a
2-core machine: 1500 devices take about a minute to import, and the embedded
server pays the same once per device when the fleet first connects. Use 4 for
test fleets and demos.`

// cmdDevices is "otawatch devices add|remove|list|import|mosquitto-passwd".
func cmdDevices(_ context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, devicesUsage)
		return fmt.Errorf("%w: which devices command?", ErrUsage)
	}
	sub, args := args[0], args[1:]
	if sub == "-h" || sub == "--help" || sub == "help" {
		fmt.Fprintln(env.Stdout, devicesUsage)
		return nil
	}
	var f devicesFlags
	fs, nargs, err := f.define(env, sub)
	if err != nil {
		return err
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != nargs {
		return fmt.Errorf("%w: devices %s takes %d argument(s), got %q", ErrUsage, sub, nargs, pos)
	}
	cfg, err := LoadConfig(f.file, env.Environ)
	if err != nil {
		return err
	}
	reg := cfg.Devices.RegistryFile
	switch sub {
	case "add":
		err = f.add(env, reg, pos[0])
	case "remove":
		if err = identity.Remove(reg, pos[0]); err == nil {
			fmt.Fprintf(env.Stdout, "devices: removed %s\n", pos[0])
		}
	case "list":
		return listDevices(env.Stdout, reg, f.asJSON)
	case "import":
		var st identity.ImportStats
		if st, err = importDevices(env, reg, pos[0], f.secretFile, f.cost); err == nil {
			fmt.Fprintf(env.Stdout, "devices: imported %d (%d added, %d with a new password) into %s\n",
				st.Added+st.Replaced, st.Added, st.Replaced, reg)
		}
	case "mosquitto-passwd":
		if f.out == "" {
			return fmt.Errorf("%w: mosquitto-passwd needs --out FILE", ErrUsage)
		}
		return writeMosquitto(env, cfg, f.out, false)
	}
	if err != nil {
		return err
	}
	// A change to the registry rewrites Mosquitto's password file too,
	// when the configuration names one.
	if cfg.Devices.MosquittoPasswordFile != "" {
		return writeMosquitto(env, cfg, cfg.Devices.MosquittoPasswordFile, true)
	}
	return nil
}

// devicesFlags are the flags of every devices subcommand.
type devicesFlags struct {
	file, passwordFile, secretFile, out string
	generate, replace, asJSON           bool
	cost                                int
}

// define declares sub's flags on a new flag set and says how many
// arguments sub takes.
func (f *devicesFlags) define(env *Env, sub string) (fs *flag.FlagSet, nargs int, err error) {
	fs = newFlagSet(env, "devices "+sub)
	fs.Usage = func() { fmt.Fprintln(env.Stderr, devicesUsage) }
	fs.StringVar(&f.file, "c", os.Getenv("OTAWATCH_CONFIG"), "config `FILE`")
	switch sub {
	case "add":
		nargs = 1
		fs.StringVar(&f.passwordFile, "password-file", "", "read the password from `FILE`")
		fs.BoolVar(&f.generate, "generate", false, "generate a random password and print it")
		fs.BoolVar(&f.replace, "replace", false, "replace the password of a registered device")
		fs.IntVar(&f.cost, "cost", identity.DefaultCost, "bcrypt cost, 4..14")
	case "remove":
		nargs = 1
	case "list":
		fs.BoolVar(&f.asJSON, "json", false, "print JSON")
	case "import":
		nargs = 1
		fs.StringVar(&f.secretFile, "password-secret-file", "", "derive each password from the secret in `FILE`")
		fs.IntVar(&f.cost, "cost", identity.DefaultCost, "bcrypt cost, 4..14")
	case "mosquitto-passwd":
		fs.StringVar(&f.out, "out", "", "write Mosquitto's password file to `FILE`")
	default:
		fmt.Fprintln(env.Stderr, devicesUsage)
		return nil, 0, fmt.Errorf("%w: unknown devices command %q", ErrUsage, sub)
	}
	return fs, nargs, nil
}

// add registers device id in the registry reg, or with --replace gives it
// a new password.
func (f *devicesFlags) add(env *Env, reg, id string) error {
	if f.passwordFile != "" && f.generate {
		return fmt.Errorf("%w: --password-file and --generate exclude each other", ErrUsage)
	}
	pw, err := devicePassword(env, f.passwordFile, f.generate)
	if err != nil {
		return err
	}
	put := identity.Add
	if f.replace {
		put = identity.Replace
	}
	if err := put(reg, id, pw, f.cost); err != nil {
		if errors.Is(err, identity.ErrExists) {
			return fmt.Errorf("%w (--replace gives it a new password)", err)
		}
		return err
	}
	if f.generate {
		fmt.Fprintln(env.Stdout, pw)
		fmt.Fprintf(env.Stderr, "devices: added %s; its password is above, and is stored nowhere\n", id)
	} else {
		fmt.Fprintf(env.Stdout, "devices: added %s\n", id)
	}
	return nil
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments ("devices add d-1 --generate"), and returns the
// positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// devicePassword is the password of "devices add": generated, from a
// file, or the first line of standard input.
func devicePassword(env *Env, file string, generate bool) (string, error) {
	var pw string
	switch {
	case generate:
		return identity.GeneratePassword()
	case file != "":
		s, err := conf.ReadSecret(file)
		if err != nil {
			return "", fmt.Errorf("--password-file: %w", err)
		}
		pw = s
	default:
		in := env.Stdin
		if in == nil {
			in = os.Stdin
		}
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read the password from standard input: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	if err := identity.CheckPassword(pw); err != nil {
		return "", err
	}
	return pw, nil
}

func listDevices(w io.Writer, reg string, asJSON bool) error {
	devs, err := identity.List(reg)
	if err != nil {
		return err
	}
	if asJSON {
		type row struct {
			ID    string    `json:"id"`
			Added time.Time `json:"added"`
		}
		rows := make([]row, len(devs))
		for i, d := range devs {
			rows[i] = row{d.ID, d.Added}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDED")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\n", d.ID, d.Added.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d devices in %s\n", len(devs), reg)
	return nil
}

// importProgressEvery is how often a long import prints how far it is.
const importProgressEvery = 2 * time.Second

func importDevices(env *Env, reg, file, secretFile string, cost int) (identity.ImportStats, error) {
	var in io.Reader
	if file == "-" {
		in = env.Stdin
		if in == nil {
			in = os.Stdin
		}
	} else {
		f, err := os.Open(file)
		if err != nil {
			return identity.ImportStats{}, fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		in = f
	}
	var creds []identity.Credential
	if secretFile != "" {
		secret, err := conf.ReadSecret(secretFile)
		if err != nil {
			return identity.ImportStats{}, fmt.Errorf("--password-secret-file: %w", err)
		}
		if secret == "" {
			return identity.ImportStats{}, fmt.Errorf("--password-secret-file %s is empty", secretFile)
		}
		ids, err := identity.ReadIDs(in)
		if err != nil {
			return identity.ImportStats{}, fmt.Errorf("import %s: %w", file, err)
		}
		for _, id := range ids {
			creds = append(creds, identity.Credential{ID: id, Password: identity.DerivePassword([]byte(secret), id)})
		}
	} else {
		var err error
		if creds, err = identity.ReadCredentials(in); err != nil {
			return identity.ImportStats{}, fmt.Errorf("import %s: %w", file, err)
		}
	}
	start := time.Now()
	last := start
	progress := func(done int) {
		if now := time.Now(); now.Sub(last) >= importProgressEvery {
			last = now
			fmt.Fprintf(env.Stderr, "devices: hashed %d of %d passwords (%s)\n", done, len(creds), now.Sub(start).Round(time.Second))
		}
	}
	return identity.ImportCredentials(reg, creds, cost, progress)
}

// writeMosquitto writes Mosquitto's password file at out from the registry
// and the services' MQTT users, and with reload signals the Mosquitto of
// devices.mosquitto_pid_file.
func writeMosquitto(env *Env, cfg *Config, out string, reload bool) error {
	var services []identity.Credential
	for _, s := range []struct{ key, user, pwFile string }{
		{"mqtt", cfg.MQTT.Username, cfg.MQTT.PasswordFile},
		{"rollout", cfg.Rollout.Username, cfg.Rollout.PasswordFile},
	} {
		if s.user == "" {
			continue
		}
		pw, err := conf.ReadSecret(s.pwFile)
		if err != nil {
			return fmt.Errorf("%s.password_file: %w", s.key, err)
		}
		if pw == "" {
			return fmt.Errorf("%s.username is %q but %s.password_file gives no password", s.key, s.user, s.key)
		}
		services = append(services, identity.Credential{ID: s.user, Password: pw})
	}
	if err := identity.WriteMosquittoPasswordFile(cfg.Devices.RegistryFile, out, services...); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "devices: wrote Mosquitto's password file %s (%d service users)\n", out, len(services))
	if !reload {
		return nil
	}
	if cfg.Devices.MosquittoPIDFile == "" {
		fmt.Fprintln(env.Stdout, "devices: Mosquitto applies it when it rereads its files: systemctl reload mosquitto (or kill -HUP its pid)")
		return nil
	}
	b, err := os.ReadFile(cfg.Devices.MosquittoPIDFile)
	if err != nil {
		return fmt.Errorf("devices.mosquitto_pid_file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid < 2 {
		return fmt.Errorf("devices.mosquitto_pid_file %s: %q is not a process id", cfg.Devices.MosquittoPIDFile, strings.TrimSpace(string(b)))
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload mosquitto (pid %d from %s): %w", pid, cfg.Devices.MosquittoPIDFile, err)
	}
	fmt.Fprintf(env.Stdout, "devices: sent Mosquitto (pid %d) SIGHUP to reread it\n", pid)
	return nil
}
