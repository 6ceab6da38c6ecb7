package testutil

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// ClickHouseAddrEnv names a running ClickHouse server (host:port, native
// protocol) for every test of a run; scripts/test starts one and sets it.
// Without it, a test package starts its own server (see ClickHouseMain).
const ClickHouseAddrEnv = "OTAWATCH_TEST_CLICKHOUSE_ADDR"

// ClickHouseDB is a database name no other test uses, on a ClickHouse server.
// The database does not exist yet (the projector creates it); it is dropped
// when the test passes and kept, for a look, when it fails.
type ClickHouseDB struct {
	// Addr is the server's native-protocol address, host:port.
	Addr     string
	Database string
}

var (
	sharedMu     sync.Mutex
	sharedServer *ClickHouseServer
	sharedErr    error
	dbCounter    atomic.Uint64
)

// ClickHouse returns a fresh database on the run's server: the one
// OTAWATCH_TEST_CLICKHOUSE_ADDR names, or else one clickhouse-server this
// test process starts on first use (on a free port and a temporary
// directory) and ClickHouseMain stops. It skips the test when neither is
// available and CI is unset.
func ClickHouse(t testing.TB) ClickHouseDB {
	t.Helper()
	addr := os.Getenv(ClickHouseAddrEnv)
	if addr == "" {
		sharedMu.Lock()
		if sharedServer == nil && sharedErr == nil {
			sharedServer, sharedErr = startClickHouse()
		}
		srv, err := sharedServer, sharedErr
		sharedMu.Unlock()
		if err != nil {
			skipOrFail(t, err)
		}
		addr = srv.Addr
	}
	db := ClickHouseDB{Addr: addr, Database: fmt.Sprintf("t_%s_%d_%d", sanitize(t.Name()), os.Getpid(), dbCounter.Add(1))}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("clickhouse database %s on %s kept for inspection", db.Database, db.Addr)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := clickhouseExec(ctx, db.Addr, "DROP DATABASE IF EXISTS `"+db.Database+"`"); err != nil {
			t.Logf("drop clickhouse database %s: %v", db.Database, err)
		}
	})
	return db
}

// ClickHouseMain runs a test package's tests and then stops the
// clickhouse-server ClickHouse started for them, if any:
//
//	func TestMain(m *testing.M) { testutil.ClickHouseMain(m) }
//
// (The server is also killed if the test process dies first.)
func ClickHouseMain(m *testing.M) {
	// testing's main exits with m.Run's result once TestMain returns.
	m.Run()
	sharedMu.Lock()
	if sharedServer != nil {
		sharedServer.stop()
		_ = os.RemoveAll(sharedServer.Dir)
		sharedServer = nil
	}
	sharedMu.Unlock()
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_]+`)

func sanitize(name string) string {
	s := unsafeChars.ReplaceAllString(name, "_")
	if len(s) > 30 {
		s = s[:30]
	}
	return strings.Trim(s, "_")
}

func skipOrFail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("clickhouse: %v (scripts/test installs and starts it)", err)
	}
	t.Skipf("clickhouse: %v; run scripts/test or set %s", err, ClickHouseAddrEnv)
}

// ClickHouseServer is a clickhouse-server a test started, with the project's
// configuration (deploy/clickhouse/) on loopback, a private port and data
// directory.
type ClickHouseServer struct {
	// Addr is the native-protocol address, 127.0.0.1:PORT.
	Addr string
	// Dir holds its configuration, data and logs.
	Dir  string
	port int
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

// ClickHouseBinaries are where the Debian packages put the server.
var ClickHouseBinaries = []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"}

// StartClickHouse starts a server for this test alone (one it may stop and
// start again), stopped by its PID in t.Cleanup.
func StartClickHouse(t testing.TB) *ClickHouseServer {
	t.Helper()
	s, err := startClickHouse()
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(func() {
		s.stop()
		if !t.Failed() {
			_ = os.RemoveAll(s.Dir)
		} else {
			t.Logf("clickhouse server directory kept: %s", s.Dir)
		}
	})
	return s
}

// Stop stops the server by its PID (SIGTERM, then SIGKILL after 30 s). A
// server with open client connections takes several seconds to stop.
func (s *ClickHouseServer) Stop(t testing.TB) {
	t.Helper()
	s.stop()
}

// Kill kills the server by its PID (SIGKILL), as a crash or a power cut
// would; Start brings it back on the same data.
func (s *ClickHouseServer) Kill(t testing.TB) {
	t.Helper()
	if s.done == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.done = nil
}

// Start starts a stopped server again, on the same port and data.
func (s *ClickHouseServer) Start(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatalf("restart clickhouse: %v", err)
	}
}

func startClickHouse() (*ClickHouseServer, error) {
	var bin string
	for _, b := range ClickHouseBinaries {
		if _, err := os.Stat(b); err == nil {
			bin = b
			break
		}
	}
	if bin == "" {
		return nil, fmt.Errorf("clickhouse-server is not installed (%s)", strings.Join(ClickHouseBinaries, ", "))
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "otawatch-clickhouse-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	for _, sub := range []string{"etc", "log", "data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	for _, f := range []string{"config.xml", "users.xml"} {
		b, err := os.ReadFile(filepath.Join(root, "deploy", "clickhouse", f))
		if err != nil {
			return nil, fmt.Errorf("clickhouse config template: %w", err)
		}
		b = bytes.ReplaceAll(b, []byte("@DIR@"), []byte(dir))
		b = bytes.ReplaceAll(b, []byte("@PORT@"), []byte(strconv.Itoa(port)))
		if err := os.WriteFile(filepath.Join(dir, "etc", f), b, 0o644); err != nil {
			return nil, err
		}
	}
	s := &ClickHouseServer{Addr: "127.0.0.1:" + strconv.Itoa(port), Dir: dir, port: port}
	s.cmd = exec.Command(bin, "--config-file="+filepath.Join(dir, "etc", "config.xml"))
	if err := s.start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

func (s *ClickHouseServer) start() error {
	if s.done != nil {
		return fmt.Errorf("clickhouse on %s is already running", s.Addr)
	}
	s.out = &bytes.Buffer{}
	s.cmd = exec.Command(s.cmd.Path, s.cmd.Args[1:]...)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	// Killed with the test process, whatever way that ends.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start clickhouse-server: %w", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := clickhouseExec(ctx, s.Addr, "SELECT 1")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			s.done = nil
			log, _ := os.ReadFile(filepath.Join(s.Dir, "log", "clickhouse-server.err.log"))
			return fmt.Errorf("clickhouse-server exited during start: %s\n%s", s.out.String(), tail(log, 2000))
		default:
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("clickhouse-server did not answer on %s within 60s: %v", s.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *ClickHouseServer) stop() {
	if s.done == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.done = nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func clickhouseExec(ctx context.Context, addr, query string) error {
	conn, err := clickhouse.Open(&clickhouse.Options{Protocol: clickhouse.Native, Addr: []string{addr}, DialTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Exec(ctx, query)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// repoRoot finds the module's root (where go.mod is) from the working
// directory, which go test sets to the package's directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
