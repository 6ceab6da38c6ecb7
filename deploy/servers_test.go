package deploy_test

import (
	"encoding/xml"
	"flag"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// natsNode is a NATS server's options as nats-server itself reads its
// command line and config file.
type natsNode struct {
	opts  *server.Options
	users map[string]*server.User
}

// loadNATS parses a NATS container's command line (program first) with
// server.ConfigureOptions, the function nats-server's main calls, in the
// container's environment (cluster.conf's $VARIABLES).
func loadNATS(t *testing.T, c *container, cmd []string) *natsNode {
	t.Helper()
	if len(cmd) == 0 || filepath.Base(cmd[0]) != "nats-server" {
		t.Errorf("%s: runs %q, not nats-server", c.where, cmd)
		return nil
	}
	for k, v := range c.env {
		t.Setenv(k, v)
	}
	args := make([]string, 0, len(cmd)-1)
	for _, a := range cmd[1:] {
		args = append(args, c.rewrite(a))
	}
	fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	nop := func() {}
	opts, err := server.ConfigureOptions(fs, args, nop, nop, nop)
	if err != nil {
		t.Errorf("%s: nats-server %s: %v", c.where, strings.Join(cmd[1:], " "), err)
		return nil
	}
	n := &natsNode{opts: opts, users: map[string]*server.User{}}
	for _, u := range opts.Users {
		n.users[u.Username] = u
	}
	if !opts.JetStream {
		t.Errorf("%s: JetStream is not enabled", c.where)
	}
	if opts.ServerName == "" {
		t.Errorf("%s: no server_name (JetStream in a cluster needs one per node)", c.where)
	}
	if _, m, ok := c.hostPath(opts.StoreDir); !ok || !m.volume {
		t.Errorf("%s: the JetStream store_dir %s is not on a volume: the streams would not outlive the container", c.where, opts.StoreDir)
	}
	// The users deploy/nats/cluster.conf promises: neither the services nor
	// the command line may delete or purge a stream.
	for _, name := range []string{"otawatch", "otawatch-cli"} {
		u := n.users[name]
		if u == nil {
			t.Errorf("%s: no NATS user %s", c.where, name)
			continue
		}
		if u.Password == "" {
			t.Errorf("%s: NATS user %s has no password", c.where, name)
		}
		var deny []string
		if u.Permissions != nil && u.Permissions.Publish != nil {
			deny = u.Permissions.Publish.Deny
		}
		for _, s := range []string{"$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.PURGE.>", "$JS.API.STREAM.MSG.DELETE.>"} {
			if !slices.Contains(deny, s) {
				t.Errorf("%s: NATS user %s may publish %s", c.where, name, s)
			}
		}
	}
	return n
}

// mosquittoConf is a Mosquitto configuration as far as otawatch needs it.
type mosquittoConf struct {
	port         int
	passwordFile string // here
	aclFile      string // here
}

// loadMosquitto reads the config file a Mosquitto container starts with
// and checks it is deploy/mosquitto/mosquitto.conf's broker: the same
// directives and limits, except the listener and the paths.
func loadMosquitto(t *testing.T, c *container) *mosquittoConf {
	t.Helper()
	cmd := c.command
	if len(cmd) != 3 || filepath.Base(cmd[0]) != "mosquitto" || cmd[1] != "-c" {
		t.Errorf("%s: runs %q, want mosquitto -c FILE", c.where, cmd)
		return nil
	}
	file, m, ok := c.hostPath(cmd[2])
	if !ok || m.what != "repo file" {
		t.Errorf("%s: its config %s is not a file of this repository", c.where, cmd[2])
		return nil
	}
	local := map[string]bool{"listener": true, "password_file": true, "acl_file": true, "persistence_location": true}
	directives := func(lines [][2]string) map[string][]string {
		out := map[string][]string{}
		for _, l := range lines {
			if !local[l[0]] {
				out[l[0]] = append(out[l[0]], l[1])
			}
		}
		return out
	}
	lines := confLines(t, file)
	got, want := directives(lines), directives(confLines(t, repoPath("deploy/mosquitto/mosquitto.conf")))
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("%s: %s: %s is %q, deploy/mosquitto/mosquitto.conf has %q", c.where, cmd[2], k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %s: %s %q is not in deploy/mosquitto/mosquitto.conf", c.where, cmd[2], k, v)
		}
	}
	mc := &mosquittoConf{}
	for _, l := range lines {
		switch l[0] {
		case "listener":
			f := strings.Fields(l[1])
			if len(f) != 1 {
				t.Errorf("%s: listener %q is bound to an address: other containers could not reach it", c.where, l[1])
				continue
			}
			mc.port, _ = strconv.Atoi(f[0])
		case "password_file", "acl_file", "persistence_location":
			host, mm, ok := c.hostPath(l[1])
			switch {
			case !ok:
				t.Errorf("%s: %s %s is not mounted", c.where, l[0], l[1])
			case l[0] == "persistence_location" && !mm.volume:
				t.Errorf("%s: persistence_location %s is not on a volume: the bridge's session would not outlive the container", c.where, l[1])
			case l[0] == "password_file":
				mc.passwordFile = host
			case l[0] == "acl_file":
				if real, _ := filepath.EvalSymlinks(host); real != repoPath("deploy/mosquitto/acl") {
					t.Errorf("%s: acl_file %s is %s, not deploy/mosquitto/acl", c.where, l[1], host)
				}
				mc.aclFile = host
			}
		}
	}
	if mc.port == 0 {
		t.Errorf("%s: no listener port", c.where)
	}
	if mc.passwordFile != "" {
		if _, err := os.Stat(mc.passwordFile); err != nil {
			t.Errorf("%s: password_file: nothing wrote it before the broker starts: %v", c.where, err)
		}
	}
	return mc
}

// mosquittoUsers are the users of a Mosquitto password file.
func mosquittoUsers(t *testing.T, file string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Errorf("mosquitto password file: %v", err)
		return nil
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if u, _, ok := strings.Cut(line, ":"); ok {
			out[u] = true
		}
	}
	return out
}

// aclUsers are the "user" sections of a Mosquitto ACL file.
func aclUsers(t *testing.T, file string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, l := range confLines(t, file) {
		if l[0] == "user" {
			out[l[1]] = true
		}
	}
	return out
}

// clickhouseConf is what the deployment's ClickHouse server answers on and
// whom it lets in.
type clickhouseConf struct {
	tcpPort, httpPort int
	users             map[string]string // user -> password, "" when it has none
}

// xmlNode is a generic XML element.
type xmlNode struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Text    string     `xml:",chardata"`
	Nodes   []xmlNode  `xml:",any"`
}

func (n *xmlNode) child(name string) *xmlNode {
	for i := range n.Nodes {
		if n.Nodes[i].XMLName.Local == name {
			return &n.Nodes[i]
		}
	}
	return nil
}

func (n *xmlNode) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func readXML(t *testing.T, file string) *xmlNode {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var n xmlNode
	if err := xml.Unmarshal(b, &n); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &n
}

// loadClickHouse reads the override files a ClickHouse container mounts
// into config.d and users.d: its ports (the image's 9000 and 8123 unless
// they change them) and its users, each password from the variable its
// from_env names.
func loadClickHouse(t *testing.T, c *container) *clickhouseConf {
	t.Helper()
	cc := &clickhouseConf{tcpPort: 9000, httpPort: 8123, users: map[string]string{}}
	seen := map[string]bool{}
	for _, m := range c.mounts {
		dir := filepath.Dir(m.target)
		if dir != "/etc/clickhouse-server/config.d" && dir != "/etc/clickhouse-server/users.d" {
			continue
		}
		seen[dir] = true
		root := readXML(t, m.source)
		if root.XMLName.Local != "clickhouse" {
			t.Errorf("%s: %s: root element <%s>, want <clickhouse>", c.where, m.target, root.XMLName.Local)
		}
		for key, port := range map[string]*int{"tcp_port": &cc.tcpPort, "http_port": &cc.httpPort} {
			if n := root.child(key); n != nil {
				*port, _ = strconv.Atoi(strings.TrimSpace(n.Text))
			}
		}
		users := root.child("users")
		if users == nil {
			continue
		}
		for _, u := range users.Nodes {
			if u.attr("remove") != "" {
				continue
			}
			pw := u.child("password")
			switch {
			case pw == nil:
				t.Errorf("%s: ClickHouse user %s has no password", c.where, u.XMLName.Local)
			case pw.attr("from_env") != "":
				v, ok := c.env[pw.attr("from_env")]
				if !ok || v == "" {
					t.Errorf("%s: ClickHouse user %s's password is $%s, which the container does not set", c.where, u.XMLName.Local, pw.attr("from_env"))
				}
				cc.users[u.XMLName.Local] = v
			default:
				t.Errorf("%s: ClickHouse user %s's password is written in %s; it belongs in a secret", c.where, u.XMLName.Local, m.target)
			}
		}
		if d := users.child("default"); d == nil || d.attr("remove") == "" {
			t.Errorf("%s: %s keeps ClickHouse's user default, which has no password", c.where, m.target)
		}
	}
	if !seen["/etc/clickhouse-server/users.d"] {
		t.Errorf("%s: no users.d file: ClickHouse keeps its password-less default user", c.where)
	}
	return cc
}

// hostPort splits an address's host and port (default when it has none).
func hostPort(addr string, def int) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, def, nil
	}
	port, err := strconv.Atoi(p)
	return host, port, err
}

// urlHostPort is a URL's host and port.
func urlHostPort(raw string) (string, int, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", 0, err
	}
	def := 0
	switch u.Scheme {
	case "nats":
		def = 4222
	case "nats-route":
		def = 6222
	case "tcp", "mqtt":
		def = 1883
	case "http":
		def = 80
	}
	return hostPort(u.Host, def)
}
