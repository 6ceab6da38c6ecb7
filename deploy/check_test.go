package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/otawatch/otawatch/services/app"
)

// deployment is a set of containers and how they reach each other.
type deployment struct {
	name       string
	image      *dockerfile
	containers []*container
	// resolve returns the containers a client in the deployment reaches at
	// host:port and the container port it reaches them on, or why not.
	resolve func(host string, port int) ([]*container, int, error)
	// waitsFor says why from does not wait for to at start ("" when it
	// does: compose's depends_on, healthy when to has a health check; for
	// a job, completed). nil where the platform retries instead
	// (Kubernetes restarts a container until it is ready).
	waitsFor func(from, to *container, job bool) string
}

// isDevicesFile: the devices.* keys name the registry and Mosquitto's
// password file, which "otawatch devices add|import|remove" write; every
// other *_file key names a file otawatch only reads.
func isDevicesFile(key string) bool { return strings.HasPrefix(key, "devices.") }

// checkDeployment runs every check of the package comment on d.
func checkDeployment(t *testing.T, d *deployment) {
	t.Helper()
	byRole := map[string][]*container{}
	for _, c := range d.containers {
		byRole[c.role] = append(byRole[c.role], c)
	}

	// Every OTAWATCH_* variable is a key the loader reads (it ignores any
	// other, so a misspelt one would silently do nothing).
	keys := envNames()
	for _, c := range byRole["otawatch"] {
		for k := range c.env {
			if strings.HasPrefix(k, "OTAWATCH_") && keys[k] == "" {
				t.Errorf("%s: %s is not a configuration key's variable", c.where, k)
			}
		}
	}

	// Jobs first (otawatch commands other than run): what they write, such
	// as Mosquitto's password file, is what the servers then read.
	written := map[string]*container{}
	mqttPasswords := map[string]string{} // Mosquitto user -> password the job hashed
	for _, c := range byRole["otawatch"] {
		args := otawatchArgs(d, c)
		if len(args) == 0 || !app.IsCommand(args[0]) {
			t.Errorf("%s: %q is not an otawatch command", c.where, args)
			continue
		}
		if args[0] == "run" {
			continue
		}
		cfg, err := app.LoadConfig(c.rewrite(c.env["OTAWATCH_CONFIG"]), c.environ())
		if err != nil {
			t.Errorf("%s: its configuration:\n%v", c.where, err)
			continue
		}
		// A command line container (help) is there to edit the registry.
		edits := args[0] == "help" || args[0] == "devices" && len(args) > 1 && args[1] != "mosquitto-passwd" && args[1] != "list"
		checkFileKeys(t, c, cfg, edits)
		if args[0] == "help" {
			continue
		}
		mapped := make([]string, len(args))
		for i, a := range args {
			mapped[i] = c.rewrite(a)
		}
		var stdout, stderr bytes.Buffer
		code := app.Main(context.Background(), mapped, &app.Env{Stdout: &stdout, Stderr: &stderr,
			Stdin: strings.NewReader(""), Environ: c.environ()})
		if code != 0 {
			t.Errorf("%s: otawatch %s: exit %d\n%s%s", c.where, strings.Join(args, " "), code, stdout.String(), stderr.String())
			continue
		}
		for i, a := range args {
			if a == "--out" && i+1 < len(args) {
				written[c.rewrite(args[i+1])] = c
			}
		}
		for _, u := range []struct{ user, file string }{
			{cfg.MQTT.Username, cfg.MQTT.PasswordFile}, {cfg.Rollout.Username, cfg.Rollout.PasswordFile},
		} {
			if u.user != "" {
				mqttPasswords[u.user] = readSecret(t, u.file)
			}
		}
	}

	// The servers, as they read their own configuration.
	for _, c := range byRole["nats"] {
		c.nats = loadNATS(t, c, unwrapSecretEnv(t, c))
	}
	checkNATSCluster(t, d, byRole["nats"])
	for _, c := range byRole["mosquitto"] {
		if c.mqtt = loadMosquitto(t, c); c.mqtt == nil || c.mqtt.passwordFile == "" {
			continue
		}
		writer := written[c.mqtt.passwordFile]
		switch {
		case writer == nil:
			t.Errorf("%s: no otawatch job writes its password_file", c.where)
		case d.waitsFor != nil:
			if why := d.waitsFor(c, writer, true); why != "" {
				t.Errorf("%s: %s", c.where, why)
			}
		case !writer.init || writer.pod != c.pod:
			t.Errorf("%s: its password_file is written by %s, not by an init container of its pod", c.where, writer.where)
		}
		for _, p := range c.probes {
			if p.tcp != c.mqtt.port {
				t.Errorf("%s: %s probe on port %d, Mosquitto listens on %d", c.where, p.kind, p.tcp, c.mqtt.port)
			}
		}
	}
	for _, c := range byRole["clickhouse"] {
		cmd := unwrapSecretEnv(t, c)
		if len(cmd) == 0 {
			continue
		}
		if b := filepath.Base(cmd[0]); b != "entrypoint.sh" && b != "clickhouse-server" {
			t.Errorf("%s: runs %q, not the image's entrypoint or clickhouse-server", c.where, cmd)
		}
		c.click = loadClickHouse(t, c)
		for _, p := range c.probes {
			if _, port, path := probeTarget(t, c, p); port != c.click.httpPort || path != "/ping" {
				t.Errorf("%s: %s probe asks port %d %s, want ClickHouse's /ping on %d", c.where, p.kind, port, path, c.click.httpPort)
			}
		}
	}

	// The otawatch services.
	running := map[string][]*container{}
	for _, c := range byRole["otawatch"] {
		args := otawatchArgs(d, c)
		if len(args) == 0 || args[0] != "run" {
			continue
		}
		mapped := make([]string, 0, len(args)-1)
		for _, a := range args[1:] {
			mapped = append(mapped, c.rewrite(a))
		}
		plan, err := app.PlanRun(mapped, c.environ())
		if err != nil {
			t.Errorf("%s: otawatch %s:\n%v", c.where, strings.Join(args, " "), err)
			continue
		}
		c.plan = plan
		if len(plan.Services) != 1 {
			t.Errorf("%s: runs %v: one service a container, so each scales and restarts alone", c.where, plan.Services)
		}
		for _, s := range plan.Services {
			running[s] = append(running[s], c)
		}
		checkFileKeys(t, c, plan.Config, false)
		checkOps(t, d, c)
		checkClients(t, d, c, mqttPasswords)
	}
	var counts []string
	for _, role := range []string{"nats", "mosquitto", "clickhouse", "otawatch"} {
		counts = append(counts, fmt.Sprintf("%d %s", len(byRole[role]), role))
	}
	var runs []string
	for s, cs := range running {
		runs = append(runs, fmt.Sprintf("%s x%d", s, len(cs)))
	}
	sort.Strings(runs)
	t.Logf("%s: checked %s containers; services %s", d.name, strings.Join(counts, ", "), strings.Join(runs, ", "))
	for _, s := range allServices(t) {
		if len(running[s]) == 0 {
			t.Errorf("%s: no container runs the %s service", d.name, s)
		}
	}
	// The bridge with a standby: two instances with one MQTT client id
	// share a lease.
	bridges := running["bridge"]
	if len(bridges) < 2 {
		t.Errorf("%s: %d bridge(s), want an active one and a standby", d.name, len(bridges))
	}
	for _, b := range bridges {
		if b.plan.Config.MQTT.ClientID != bridges[0].plan.Config.MQTT.ClientID {
			t.Errorf("%s: bridge mqtt.client_id %q and %q differ: they would not share the lease and both would connect",
				d.name, bridges[0].plan.Config.MQTT.ClientID, b.plan.Config.MQTT.ClientID)
		}
	}
}

// otawatchArgs are an otawatch container's arguments: its command, or the
// image's CMD.
func otawatchArgs(d *deployment, c *container) []string {
	if len(c.command) > 0 {
		return c.command
	}
	return d.image.final.cmd
}

// checkFileKeys: every *_file key of cfg names a file the container
// mounts; one otawatch only reads (a password, a token) must exist, and
// with edits the devices files must be on a volume. A service (run) does
// not use the devices files with nats.url: the embedded server reads them.
func checkFileKeys(t *testing.T, c *container, cfg *app.Config, edits bool) {
	t.Helper()
	for key, file := range fileKeys(cfg) {
		if isDevicesFile(key) && c.plan != nil && cfg.NATS.URL != "" {
			continue
		}
		var m *mount
		for i := range c.mounts {
			if file == c.mounts[i].source || strings.HasPrefix(file, c.mounts[i].source+string(os.PathSeparator)) {
				m = &c.mounts[i]
			}
		}
		switch {
		case m == nil:
			t.Errorf("%s: %s %s is not in any file or volume the container mounts", c.where, key, file)
		case isDevicesFile(key) && edits && !m.volume:
			t.Errorf("%s: %s is on %s, not a volume: what the devices commands write would be lost", c.where, key, m.what)
		case isDevicesFile(key):
			// May not exist yet: no device registered.
		default:
			if _, err := os.Stat(file); err != nil {
				t.Errorf("%s: %s: %v", c.where, key, err)
			}
		}
	}
}

// checkOps: the process has an ops listener every deployment can reach,
// on a port the image exposes, and every probe asks it a path it serves.
func checkOps(t *testing.T, d *deployment, c *container) {
	t.Helper()
	cfg := c.plan.Config
	if c.plan.OpsListen == "" {
		t.Errorf("%s: no ops listener (ops.listen): /healthz and /readyz would be only where the api runs", c.where)
		return
	}
	host, opsPort, _ := hostPort(c.plan.OpsListen, 0)
	if host != "0.0.0.0" && host != "" && host != "::" {
		t.Errorf("%s: ops.listen %s is not on every address: probes from outside the container could not reach it", c.where, c.plan.OpsListen)
	}
	listens := map[int]string{opsPort: "ops.listen"}
	if slices.Contains(c.plan.Services, "api") {
		h, p, _ := hostPort(cfg.HTTP.Listen, 0)
		if h == "127.0.0.1" || h == "localhost" || h == "::1" {
			t.Errorf("%s: http.listen %s is on loopback: nothing outside the container reaches the api", c.where, cfg.HTTP.Listen)
		}
		listens[p] = "http.listen"
		if !slices.Contains(c.ports, p) {
			t.Errorf("%s: the api listens on %d (http.listen), which the deployment does not expose", c.where, p)
		}
	}
	for p, key := range listens {
		if !d.image.final.expose[p] {
			t.Errorf("%s: %s port %d is not EXPOSEd by the Dockerfile", c.where, key, p)
		}
	}
	for _, p := range c.ports {
		if listens[p] == "" {
			t.Errorf("%s: the deployment sends traffic to port %d, where otawatch does not listen (%v)", c.where, p, listens)
		}
	}
	ready := false
	for _, p := range c.probes {
		_, port, path := probeTarget(t, c, p)
		want := "/readyz"
		if p.kind == "liveness" {
			want = "/healthz"
		}
		switch {
		case port != opsPort:
			t.Errorf("%s: %s probe asks port %d, the ops listener is on %d", c.where, p.kind, port, opsPort)
		case path != want:
			t.Errorf("%s: %s probe asks %s, want %s", c.where, p.kind, path, want)
		case !opsPathServed(path):
			t.Errorf("%s: %s probe asks %s, which the ops listener does not serve", c.where, p.kind, path)
		}
		ready = ready || p.kind != "liveness"
	}
	if !ready {
		t.Errorf("%s: no health check or readiness probe on /readyz", c.where)
	}
}

// probeTarget is the host, port and path an HTTP probe asks.
func probeTarget(t *testing.T, c *container, p probe) (string, int, string) {
	t.Helper()
	if p.url == "" {
		return "", p.tcp, ""
	}
	u, err := url.Parse(p.url)
	if err != nil {
		t.Errorf("%s: %s probe %q: %v", c.where, p.kind, p.url, err)
		return "", 0, ""
	}
	host, port, _ := urlHostPort(p.url)
	return host, port, u.Path
}

// checkClients: every server the service talks to is in the deployment,
// on the port it listens on, and knows the service's user with the
// password the service sends.
func checkClients(t *testing.T, d *deployment, c *container, mqttPasswords map[string]string) {
	t.Helper()
	cfg := c.plan.Config
	reach := func(what, addr string, host string, port int, role string) []*container {
		targets, tport, err := d.resolve(host, port)
		if err != nil {
			t.Errorf("%s: %s %s: %v", c.where, what, addr, err)
			return nil
		}
		for _, s := range targets {
			if s.role != role {
				t.Errorf("%s: %s %s reaches %s, not %s", c.where, what, addr, s.where, role)
				return nil
			}
			if d.waitsFor != nil {
				if why := d.waitsFor(c, s, false); why != "" {
					t.Errorf("%s: %s", c.where, why)
				}
			}
		}
		for _, s := range targets {
			var listen int
			switch {
			case s.nats != nil:
				listen = s.nats.opts.Port
			case s.mqtt != nil:
				listen = s.mqtt.port
			case s.click != nil:
				listen = s.click.tcpPort
			}
			if listen != 0 && tport != listen {
				t.Errorf("%s: %s %s reaches %s on port %d; it listens on %d", c.where, what, addr, s.where, tport, listen)
			}
		}
		return targets
	}

	if cfg.NATS.URL == "" {
		t.Errorf("%s: nats.url is empty: the service would run its own embedded NATS server, alone", c.where)
	}
	nodes := map[*container]bool{}
	for _, u := range strings.Split(cfg.NATS.URL, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		host, port, err := urlHostPort(u)
		if err != nil {
			t.Errorf("%s: nats.url %q: %v", c.where, u, err)
			continue
		}
		for _, n := range reach("nats.url", u, host, port, "nats") {
			nodes[n] = true
		}
	}
	if n := len(d.byRole("nats")); cfg.NATS.Replicas != n {
		t.Errorf("%s: nats.replicas %d on a cluster of %d nodes", c.where, cfg.NATS.Replicas, n)
	}
	for n := range nodes {
		if n.nats == nil {
			continue
		}
		u := n.nats.users[cfg.NATS.Username]
		switch {
		case cfg.NATS.Username == "":
			t.Errorf("%s: nats.username is empty", c.where)
		case u == nil:
			t.Errorf("%s: nats.username %q is not a user of %s", c.where, cfg.NATS.Username, n.where)
		case u.Password != readSecret(t, cfg.NATS.PasswordFile):
			t.Errorf("%s: nats.password_file is not the password %s has for %s", c.where, n.where, cfg.NATS.Username)
		}
	}

	brokers := []struct{ key, broker, user, file string }{}
	if slices.Contains(c.plan.Services, "bridge") {
		brokers = append(brokers, struct{ key, broker, user, file string }{"mqtt", cfg.MQTT.Broker, cfg.MQTT.Username, cfg.MQTT.PasswordFile})
	}
	if slices.Contains(c.plan.Services, "rollout") {
		brokers = append(brokers, struct{ key, broker, user, file string }{"rollout", cfg.Rollout.Broker, cfg.Rollout.Username, cfg.Rollout.PasswordFile})
	}
	for _, b := range brokers {
		host, port, err := urlHostPort(b.broker)
		if err != nil {
			t.Errorf("%s: %s.broker %q: %v", c.where, b.key, b.broker, err)
			continue
		}
		for _, m := range reach(b.key+".broker", b.broker, host, port, "mosquitto") {
			if m.mqtt == nil {
				continue
			}
			if !aclUsers(t, m.mqtt.aclFile)[b.user] {
				t.Errorf("%s: %s.username %q has no section in %s's ACL", c.where, b.key, b.user, m.where)
			}
			if m.mqtt.passwordFile != "" && !mosquittoUsers(t, m.mqtt.passwordFile)[b.user] {
				t.Errorf("%s: %s.username %q is not in %s's password file", c.where, b.key, b.user, m.where)
			}
			if pw, ok := mqttPasswords[b.user]; !ok || pw != readSecret(t, b.file) {
				t.Errorf("%s: %s.password_file is not the password the password-file job gave %s", c.where, b.key, b.user)
			}
		}
	}

	if slices.Contains(c.plan.Services, "projector") {
		host, port, err := hostPort(cfg.ClickHouse.Addr, 9000)
		if err != nil {
			t.Errorf("%s: clickhouse.addr %q: %v", c.where, cfg.ClickHouse.Addr, err)
			return
		}
		for _, s := range reach("clickhouse.addr", cfg.ClickHouse.Addr, host, port, "clickhouse") {
			if s.click == nil {
				continue
			}
			pw, ok := s.click.users[cfg.ClickHouse.Username]
			switch {
			case !ok:
				t.Errorf("%s: clickhouse.username %q is not a user of %s", c.where, cfg.ClickHouse.Username, s.where)
			case pw != readSecret(t, cfg.ClickHouse.PasswordFile):
				t.Errorf("%s: clickhouse.password_file is not the password %s has for %s", c.where, s.where, cfg.ClickHouse.Username)
			}
		}
	}
}

func (d *deployment) byRole(role string) []*container {
	var out []*container
	for _, c := range d.containers {
		if c.role == role {
			out = append(out, c)
		}
	}
	return out
}

// checkNATSCluster: the nodes form one cluster: distinct names, one
// cluster name, and each node's routes reach every node on its cluster
// port; each health check asks the node's monitoring port.
func checkNATSCluster(t *testing.T, d *deployment, nodes []*container) {
	t.Helper()
	if len(nodes) != 3 {
		t.Errorf("%s: %d NATS node(s), want 3 (streams with three replicas)", d.name, len(nodes))
	}
	names := map[string]string{}
	for _, n := range nodes {
		if n.nats == nil {
			continue
		}
		o := n.nats.opts
		if prev, dup := names[o.ServerName]; dup {
			t.Errorf("%s and %s: both server_name %q", prev, n.where, o.ServerName)
		}
		names[o.ServerName] = n.where
		if first := nodes[0].nats; o.Cluster.Name == "" || first != nil && o.Cluster.Name != first.opts.Cluster.Name {
			t.Errorf("%s: cluster name %q, %s's is not the same", n.where, o.Cluster.Name, nodes[0].where)
		}
		routed := map[*container]bool{}
		for _, r := range o.Routes {
			host, port, _ := hostPort(r.Host, 6222)
			targets, tport, err := d.resolve(host, port)
			if err != nil {
				t.Errorf("%s: route %s: %v", n.where, r, err)
				continue
			}
			for _, target := range targets {
				if target.role != "nats" || target.nats == nil {
					t.Errorf("%s: route %s reaches %s, not a NATS node", n.where, r, target.where)
					continue
				}
				if tport != target.nats.opts.Cluster.Port {
					t.Errorf("%s: route %s reaches %s on port %d; its cluster port is %d", n.where, r, target.where, tport, target.nats.opts.Cluster.Port)
				}
				routed[target] = true
			}
		}
		if len(routed) != len(nodes) {
			var got []string
			for r := range routed {
				got = append(got, r.where)
			}
			sort.Strings(got)
			t.Errorf("%s: its routes reach %d of the %d nodes: %v", n.where, len(routed), len(nodes), got)
		}
		for _, p := range n.probes {
			host, port, path := probeTarget(t, n, p)
			if host != "127.0.0.1" || port != o.HTTPPort || !strings.HasPrefix(path, "/healthz") {
				t.Errorf("%s: %s probe %s, want /healthz on the monitoring port 127.0.0.1:%d", n.where, p.kind, p.url, o.HTTPPort)
			}
		}
		if len(n.probes) == 0 {
			t.Errorf("%s: no health check", n.where)
		}
	}
}

// wgetURL is the URL of a health check "wget -q -O /dev/null URL".
func wgetURL(cmd []string) (string, error) {
	if len(cmd) < 2 || cmd[0] != "wget" {
		return "", fmt.Errorf("%q is not wget URL", cmd)
	}
	return cmd[len(cmd)-1], nil
}
