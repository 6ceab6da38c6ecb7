package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ClusterConfFile is the shipped cluster configuration, relative to the
// repository root. StartCluster runs it, so the file users deploy is the
// one the tests exercise.
const ClusterConfFile = "deploy/nats/cluster.conf"

// The account and users ClusterConfFile defines.
const (
	ClusterAccount      = "OTAWATCH"
	ClusterUserServices = "otawatch"
	ClusterUserCLI      = "otawatch-cli"
	ClusterUserAdmin    = "admin"
)

// clusterConfVars are the variables ClusterConfFile takes from the
// environment, by the user whose password each one is ("" for the node's
// name).
var clusterConfVars = map[string]string{
	"NODE_NAME":                    "",
	"OTAWATCH_NATS_PASSWORD":       ClusterUserServices,
	"OTAWATCH_NATS_CLI_PASSWORD":   ClusterUserCLI,
	"OTAWATCH_NATS_ADMIN_PASSWORD": ClusterUserAdmin,
}

// Cluster is a three-node NATS cluster with JetStream on loopback, each
// node an in-process server.Server configured from ClusterConfFile: its
// accounts, users and permissions, JetStream and cluster name as shipped;
// its addresses, routes and store directories replaced by free loopback
// ports and temporary directories (monitoring too, when the file turns it
// on). Nodes can be killed and restarted (on
// the same ports and store) while the others run.
type Cluster struct {
	// Passwords are the users' passwords, by user name.
	Passwords map[string]string

	conf  string
	nodes []*clusterNode
}

type clusterNode struct {
	name        string
	port        int
	clusterPort int
	monitorPort int
	storeDir    string

	mu  sync.Mutex
	srv *server.Server // nil while the node is down
	log *nodeLog
}

// nodeLog keeps a node's warnings and errors, for a failure message.
type nodeLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *nodeLog) add(level, format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, level+" "+fmt.Sprintf(format, v...))
	if len(l.lines) > 50 {
		l.lines = l.lines[len(l.lines)-50:]
	}
}

func (l *nodeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *nodeLog) Noticef(string, ...any)         {}
func (l *nodeLog) Warnf(format string, v ...any)  { l.add("[WRN]", format, v...) }
func (l *nodeLog) Fatalf(format string, v ...any) { l.add("[FTL]", format, v...) }
func (l *nodeLog) Errorf(format string, v ...any) { l.add("[ERR]", format, v...) }
func (l *nodeLog) Debugf(string, ...any)          {}
func (l *nodeLog) Tracef(string, ...any)          {}

// StartCluster starts the three nodes (n1, n2, n3) and waits until
// JetStream has a meta leader that every node follows. t.Cleanup shuts the
// nodes down.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(root, ClusterConfFile))
	if err != nil {
		t.Fatalf("read the shipped cluster configuration: %v", err)
	}
	c := &Cluster{Passwords: map[string]string{}, conf: string(conf)}
	for _, user := range clusterConfVars {
		if user != "" {
			c.Passwords[user] = randomPassword(t)
		}
	}
	for i := 1; i <= 3; i++ {
		c.nodes = append(c.nodes, &clusterNode{name: fmt.Sprintf("n%d", i), port: FreePort(t), clusterPort: FreePort(t),
			monitorPort: FreePort(t), storeDir: t.TempDir()})
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.shutdown()
		}
	})
	for _, n := range c.nodes {
		if err := c.start(n); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, 60*time.Second, func() bool { return c.metaReady() }, "the cluster elected no JetStream meta leader that every node follows")
	return c
}

func randomPassword(t testing.TB) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// options parses the shipped configuration for node n, its variables
// defined in front of it, and puts the node on its loopback ports and
// store directory.
func (c *Cluster) options(n *clusterNode) (*server.Options, error) {
	var defs strings.Builder
	for name, user := range clusterConfVars {
		v := n.name
		if user != "" {
			v = c.Passwords[user]
		}
		fmt.Fprintf(&defs, "%s: %q\n", name, v)
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(defs.String() + c.conf); err != nil {
		return nil, fmt.Errorf("%s: %w", ClusterConfFile, err)
	}
	if opts.Cluster.Name == "" || len(opts.Routes) != len(c.nodes) || !opts.JetStream {
		return nil, fmt.Errorf("%s: want a named cluster with %d routes and JetStream, got cluster %q, %d routes, jetstream %v",
			ClusterConfFile, len(c.nodes), opts.Cluster.Name, len(opts.Routes), opts.JetStream)
	}
	opts.Host, opts.Port = "127.0.0.1", n.port
	opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", n.clusterPort
	if opts.HTTPPort != 0 || opts.HTTPSPort != 0 {
		// Monitoring as shipped, on the node's own port.
		opts.HTTPHost, opts.HTTPPort, opts.HTTPSPort = "127.0.0.1", n.monitorPort, 0
	}
	var routes []string
	for _, o := range c.nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.clusterPort))
	}
	opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
	opts.StoreDir = n.storeDir
	opts.NoSigs = true
	return opts, nil
}

// start starts node n (on its ports and store) and waits until it accepts
// clients.
func (c *Cluster) start(n *clusterNode) error {
	opts, err := c.options(n)
	if err != nil {
		return err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	n.log = &nodeLog{}
	srv.SetLoggerV2(n.log, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("node %s did not accept clients on port %d within 30s; its log:\n%s", n.name, n.port, n.log)
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
	return nil
}

func (n *clusterNode) server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

func (n *clusterNode) shutdown() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

func (c *Cluster) node(t testing.TB, name string) *clusterNode {
	t.Helper()
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	t.Fatalf("no cluster node %q (nodes: %v)", name, c.Names())
	return nil
}

// metaReady says whether one node leads JetStream's meta group, every
// running node is current with it, and the leader sees each of them online
// with its stats (until then it refuses to place replicas: "no suitable
// peers for placement").
func (c *Cluster) metaReady() bool {
	leaders, running, peers := 0, 0, 0
	for _, n := range c.nodes {
		srv := n.server()
		if srv == nil {
			continue
		}
		running++
		if !srv.JetStreamIsCurrent() {
			return false
		}
		if srv.JetStreamIsLeader() {
			leaders++
			peers = len(srv.JetStreamClusterPeers())
		}
	}
	return leaders == 1 && peers == running
}

// Names are the nodes' server names.
func (c *Cluster) Names() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.name)
	}
	return out
}

// URLs are the nodes' client URLs, comma-separated (a nats.url).
func (c *Cluster) URLs() string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, fmt.Sprintf("nats://127.0.0.1:%d", n.port))
	}
	return strings.Join(out, ",")
}

// Connect connects to the cluster as user (one of the Cluster users),
// reconnecting to another node when its node goes down. t.Cleanup closes
// the connection.
func (c *Cluster) Connect(t testing.TB, user string, extra ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	pw, ok := c.Passwords[user]
	if !ok {
		t.Fatalf("no cluster user %q", user)
	}
	opts := append([]nats.Option{nats.Name(t.Name() + " as " + user), nats.UserInfo(user, pw),
		nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, extra...)
	nc, err := nats.Connect(c.URLs(), opts...)
	if err != nil {
		t.Fatalf("connect to the cluster as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Kill stops node name at once (its clients lose their connection, its
// store stays), as a crashed or powered-off node.
func (c *Cluster) Kill(t testing.TB, name string) {
	t.Helper()
	n := c.node(t, name)
	if n.server() == nil {
		t.Fatalf("kill: node %s is already down", name)
	}
	n.shutdown()
}

// Restart starts a killed node again on its ports and store; it rejoins
// the cluster and catches up.
func (c *Cluster) Restart(t testing.TB, name string) {
	t.Helper()
	n := c.node(t, name)
	if n.server() != nil {
		t.Fatalf("restart: node %s is running", name)
	}
	if err := c.start(n); err != nil {
		t.Fatal(err)
	}
}

// StreamLeader returns the name of the node leading stream (of
// ClusterAccount) as the running nodes see it, waiting up to 30 s for an
// election.
func (c *Cluster) StreamLeader(t testing.TB, stream string) string {
	t.Helper()
	var leader string
	Eventually(t, 30*time.Second, func() bool {
		for _, n := range c.nodes {
			if srv := n.server(); srv != nil && srv.JetStreamIsStreamLeader(ClusterAccount, stream) {
				leader = n.name
				return true
			}
		}
		return false
	}, "stream %s has no leader among the running nodes", stream)
	return leader
}

// ConnectedNode returns the node that the client connection named
// clientName (nats.Name) is connected to, waiting up to 30 s for it.
func (c *Cluster) ConnectedNode(t testing.TB, clientName string) string {
	t.Helper()
	var node string
	Eventually(t, 30*time.Second, func() bool {
		for _, n := range c.nodes {
			srv := n.server()
			if srv == nil {
				continue
			}
			cz, err := srv.Connz(&server.ConnzOptions{Limit: 1 << 16})
			if err != nil {
				continue
			}
			for _, ci := range cz.Conns {
				if ci.Name == clientName {
					node = n.name
					return true
				}
			}
		}
		return false
	}, "no client named %q is connected to the cluster", clientName)
	return node
}

// MoveStreamLeader makes node the leader of stream: the current leader
// steps down in its favour (JetStream's stream leader step-down with a
// preferred placement). nc is a connection of the stream's account.
func (c *Cluster) MoveStreamLeader(t testing.TB, nc *nats.Conn, stream, node string) {
	t.Helper()
	c.node(t, node)
	if c.StreamLeader(t, stream) == node {
		return
	}
	req := []byte(fmt.Sprintf(`{"placement":{"preferred":%q}}`, node))
	msg, err := nc.Request(fmt.Sprintf("$JS.API.STREAM.LEADER.STEPDOWN.%s", stream), req, 10*time.Second)
	if err != nil {
		t.Fatalf("step down the leader of %s for %s: %v", stream, node, err)
	}
	var resp struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil || !resp.Success {
		t.Fatalf("step down the leader of %s for %s: %s", stream, node, msg.Data)
	}
	Eventually(t, 30*time.Second, func() bool { return c.StreamLeader(t, stream) == node },
		"%s did not become the leader of %s", node, stream)
}

// StreamCurrent returns nil once stream has a leader and every replica is
// current with it (a restarted node has caught up), else why not.
func StreamCurrent(js jetstream.JetStream, stream string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s info: %w", stream, err)
	}
	ci := info.Cluster
	switch {
	case ci == nil:
		return fmt.Errorf("stream %s is not clustered", stream)
	case ci.Leader == "":
		return fmt.Errorf("stream %s has no leader", stream)
	case len(ci.Replicas)+1 < info.Config.Replicas:
		return fmt.Errorf("stream %s: %d of %d replicas known", stream, len(ci.Replicas)+1, info.Config.Replicas)
	}
	var behind []error
	for _, r := range ci.Replicas {
		if !r.Current || r.Offline {
			behind = append(behind, fmt.Errorf("replica %s current=%v offline=%v lag=%d", r.Name, r.Current, r.Offline, r.Lag))
		}
	}
	return errors.Join(behind...)
}
