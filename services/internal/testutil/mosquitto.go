package testutil

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// MosquittoBinary is where the Debian package installs the broker.
const MosquittoBinary = "/usr/sbin/mosquitto"

// Mosquitto is a broker started by a test.
type Mosquitto struct {
	// URL is the broker's address, tcp://127.0.0.1:PORT.
	URL  string
	Port int
	cmd  *exec.Cmd
	log  *bytes.Buffer
	conf string
}

// MosquittoConfig is the broker configuration tests use: the limits the
// project ships in deploy/mosquitto/ (so a subscriber that falls behind is not
// silently dropped), on loopback only. Its placeholders are the port and the
// persistence directory. "user root" matters when tests run as root:
// Mosquitto would otherwise drop to user mosquitto, which cannot write the
// test's temporary directory, and persistent sessions, subscriptions and
// retained messages would silently not survive Restart (ignored when not
// root).
const MosquittoConfig = `listener %d 127.0.0.1
user root
allow_anonymous true
persistence true
persistence_location %s/
autosave_interval 1
max_inflight_messages 1000
max_queued_messages 1000000
max_queued_bytes 0
max_packet_size 20480
message_size_limit 0
log_dest stderr
log_type error
log_type warning
`

// StartMosquitto starts Mosquitto on a free loopback port with
// MosquittoConfig and stops it (by its PID) in t.Cleanup. It skips the test
// when the broker is not installed and CI is unset; under CI a missing broker
// fails the test.
func StartMosquitto(t testing.TB) *Mosquitto {
	t.Helper()
	return startMosquitto(t, "")
}

func startMosquitto(t testing.TB, auth string) *Mosquitto {
	t.Helper()
	if _, err := os.Stat(MosquittoBinary); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mosquitto not installed at %s (scripts/test installs it)", MosquittoBinary)
		}
		t.Skipf("mosquitto not installed at %s; run scripts/test", MosquittoBinary)
	}
	dir := t.TempDir()
	port := FreePort(t)
	m := &Mosquitto{Port: port, URL: fmt.Sprintf("tcp://127.0.0.1:%d", port), conf: filepath.Join(dir, "mosquitto.conf")}
	conf := fmt.Sprintf(MosquittoConfig, port, dir)
	if auth != "" {
		conf = strings.Replace(conf, "allow_anonymous true\n", auth, 1)
	}
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.start(t)
	t.Cleanup(func() { m.Stop(t) })
	return m
}

func (m *Mosquitto) start(t testing.TB) {
	t.Helper()
	m.log = &bytes.Buffer{}
	m.cmd = exec.Command(MosquittoBinary, "-c", m.conf)
	m.cmd.Stdout = m.log
	m.cmd.Stderr = m.log
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(m.Port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			m.Stop(t)
			t.Fatalf("mosquitto did not listen on %s: %v\n%s", addr, err, m.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Reload makes the broker reread its password and ACL files (SIGHUP), as
// "systemctl reload mosquitto" does.
func (m *Mosquitto) Reload(t testing.TB) {
	t.Helper()
	if m.cmd == nil || m.cmd.Process == nil {
		t.Fatal("reload: mosquitto is not running")
	}
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("reload mosquitto: %v", err)
	}
}

// PID is the broker's process id (0 when stopped).
func (m *Mosquitto) PID() int {
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Log is what the broker has logged so far.
func (m *Mosquitto) Log() string { return m.log.String() }

// Stop stops the broker by its PID (SIGTERM, then SIGKILL after 5 s).
func (m *Mosquitto) Stop(t testing.TB) {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-done
	}
	m.cmd = nil
}

// Restart stops the broker and starts it again on the same port and
// persistence directory, so persistent sessions survive.
func (m *Mosquitto) Restart(t testing.TB) {
	t.Helper()
	m.Stop(t)
	m.start(t)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
