package app

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/natsd"
)

// builtinIdentities are the identities the embedded server admits besides
// devices: the services and the CLI on the NATS port, the bridge and the
// rollout service on the MQTT listener.
var builtinIdentities = []string{events.IdentityServices, events.IdentityCLI, natsd.UserBridge, natsd.UserRollout}

// credentialsDir holds one file per built-in identity with its password,
// made on the first start, readable only by the user otawatch runs as.
// otawatch run and the CLI read them, so nobody types a password; anyone
// who can read data_dir is as trusted as otawatch itself.
func credentialsDir(dataDir string) string { return filepath.Join(dataDir, "credentials") }

// credentialFile is the password file of a built-in identity.
func credentialFile(dataDir, identity string) string {
	return filepath.Join(credentialsDir(dataDir), identity)
}

// ensureCredentials reads the built-in identities' passwords, making any
// that are missing.
func ensureCredentials(dataDir string) (map[string]string, error) {
	dir := credentialsDir(dataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials dir: %w", err)
	}
	out := map[string]string{}
	for _, id := range builtinIdentities {
		path := credentialFile(dataDir, id)
		pw, err := conf.ReadSecret(path)
		if errors.Is(err, os.ErrNotExist) {
			pw, err = newPassword()
			if err == nil {
				err = writeNew(path, pw+"\n")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("credentials of %s: %w", id, err)
		}
		if pw == "" {
			return nil, fmt.Errorf("credentials of %s: %s is empty", id, path)
		}
		out[id] = pw
	}
	return out, nil
}

func newPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// writeNew writes a file that must not exist yet (two processes starting
// at once keep the first one's password).
func writeNew(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := f.WriteString(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// useEmbeddedBroker gives the bridge and the rollout service their
// built-in MQTT identities when they connect to the embedded server's MQTT
// listener without a configured user.
func useEmbeddedBroker(cfg *Config) {
	if cfg.NATS.URL != "" || cfg.NATS.MQTTListen == "" {
		return
	}
	if cfg.MQTT.Username == "" && cfg.MQTT.PasswordFile == "" && sameListener(cfg.MQTT.Broker, cfg.NATS.MQTTListen) {
		cfg.MQTT.Username, cfg.MQTT.PasswordFile = natsd.UserBridge, credentialFile(cfg.DataDir, natsd.UserBridge)
	}
	if sameListener(cfg.Rollout.Broker, cfg.NATS.MQTTListen) &&
		(cfg.Rollout.Username == "" && cfg.Rollout.PasswordFile == "" || cfg.Rollout.Username == natsd.UserBridge) {
		cfg.Rollout.Username, cfg.Rollout.PasswordFile = natsd.UserRollout, credentialFile(cfg.DataDir, natsd.UserRollout)
	}
}

// sameListener reports whether the broker URL names the listen address
// (a wildcard listen host matches a loopback broker host).
func sameListener(broker, listen string) bool {
	u, err := url.Parse(broker)
	if err != nil {
		return false
	}
	lh, lp, err := net.SplitHostPort(listen)
	if err != nil || u.Port() != lp {
		return false
	}
	bh := u.Hostname()
	return bh == lh || conf.IsLoopback(bh) && (conf.IsLoopback(lh) || isWildcardHost(lh))
}

func isWildcardHost(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }

// warnAnonymous says, at every start, which doors are open without
// credentials.
func warnAnonymous(log *slog.Logger, c NATSConfig) {
	if c.Anonymous {
		log.Warn("the NATS port admits clients without credentials (nats.anonymous): anyone on this machine can act as the services",
			"listen", c.Listen)
	}
	if c.MQTTAnonymous && c.MQTTListen != "" {
		log.Warn("the MQTT listener admits clients without credentials (nats.mqtt_anonymous): anyone on this machine can report for any device and read desired state",
			"mqtt_listen", c.MQTTListen)
	}
}

// cliAuth are the connection options of a command that talks to a running
// otawatch: toward nats.url as configured, toward the embedded server as
// the CLI's identity with the password under data_dir/credentials. With a
// URL given on the command line (explicit) and no such file, it connects
// without credentials (a server that admits anonymous clients).
func cliAuth(cfg *Config, explicit bool) ([]nats.Option, error) {
	if cfg.NATS.URL != "" {
		return externalAuth(cfg.NATS)
	}
	path := credentialFile(cfg.DataDir, events.IdentityCLI)
	pw, err := conf.ReadSecret(path)
	switch {
	case err == nil:
		return []nats.Option{nats.UserInfo(events.IdentityCLI, pw)}, nil
	case explicit && errors.Is(err, os.ErrNotExist):
		return nil, nil
	default:
		return nil, fmt.Errorf("the CLI's credentials (%s, made by otawatch run on its first start; run this command with the same data_dir or config): %w", path, err)
	}
}

// connectCLI connects a command to the running system: to url when the
// command line gave one, else to nats.url or the embedded server's client
// port (cliNATSURL), as the CLI's identity (cliAuth).
func connectCLI(cfg *Config, url, name string) (*nats.Conn, error) {
	explicit := url != ""
	if !explicit {
		url = cliNATSURL(cfg)
	}
	opts, err := cliAuth(cfg, explicit)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append(opts, nats.Name(name), nats.Timeout(5*time.Second))...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w (is otawatch running?)", url, err)
	}
	return nc, nil
}

// connectCLIJetStream is connectCLI and its JetStream context: what a
// command that reads or writes the log opens. Close the connection.
func connectCLIJetStream(cfg *Config, url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := connectCLI(cfg, url, name)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// logFlags are the -c and --nats flags of a command that talks to the
// running system through NATS.
type logFlags struct{ file, nats *string }

// addLogFlags defines -c (its help naming the config keys the command
// reads, keys) and --nats on fs.
func addLogFlags(fs *flag.FlagSet, keys string) logFlags {
	help := "config `FILE`"
	if keys != "" {
		help += " (" + keys + ")"
	}
	return logFlags{
		file: fs.String("c", os.Getenv("OTAWATCH_CONFIG"), help),
		nats: fs.String("nats", "", "NATS `URL` (default: nats.url, or the embedded server's nats.listen)"),
	}
}

// connect loads the configuration -c names and connects to NATS as the
// CLI's identity, with JetStream. Close the connection.
func (l logFlags) connect(env *Env, name string) (*Config, *nats.Conn, jetstream.JetStream, error) {
	cfg, err := LoadConfig(*l.file, env.Environ)
	if err != nil {
		return nil, nil, nil, err
	}
	nc, js, err := connectCLIJetStream(cfg, *l.nats, name)
	if err != nil {
		return nil, nil, nil, err
	}
	return cfg, nc, js, nil
}
