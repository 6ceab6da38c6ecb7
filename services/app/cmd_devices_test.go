package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/services/internal/identity"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// runDevices runs "otawatch devices args..." with environ and stdin.
func runDevices(environ []string, stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(context.Background(), append([]string{"devices"}, args...),
		&Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin), Environ: environ})
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDevicesCommand(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "devices.json")
	environ := []string{"OTAWATCH_DEVICES_REGISTRY_FILE=" + reg}
	pwFile := writeFile(t, "pw", "from-a-file\n")
	creds := writeFile(t, "creds", "# fleet\nd-10 ten\nd-11,eleven\n")
	secret := writeFile(t, "secret", "demo-secret\n")
	ids := writeFile(t, "ids", "d-00001\nd-00002\n")
	tests := []struct {
		name   string
		stdin  string
		args   []string
		code   int
		stdout []string
		// check, when set, looks at the registry after the command.
		check func(t *testing.T, r *identity.Registry)
	}{
		{name: "add, password on stdin", stdin: "from-stdin\n", args: []string{"add", "d-1", "--cost", "4"}, code: 0,
			stdout: []string{"added d-1"},
			check: func(t *testing.T, r *identity.Registry) {
				if !r.Check("d-1", "from-stdin") {
					t.Error("d-1's password from stdin does not check")
				}
			}},
		{name: "add, password file", args: []string{"add", "--cost", "4", "d-2", "--password-file", pwFile}, code: 0,
			check: func(t *testing.T, r *identity.Registry) {
				if !r.Check("d-2", "from-a-file") {
					t.Error("d-2's password from a file does not check")
				}
			}},
		{name: "add twice", stdin: "x\n", args: []string{"add", "d-1", "--cost", "4"}, code: 1,
			check: func(t *testing.T, r *identity.Registry) {
				if !r.Check("d-1", "from-stdin") {
					t.Error("a refused add changed d-1's password")
				}
			}},
		{name: "replace", stdin: "second\n", args: []string{"add", "d-1", "--replace", "--cost", "4"}, code: 0,
			check: func(t *testing.T, r *identity.Registry) {
				if r.Check("d-1", "from-stdin") || !r.Check("d-1", "second") {
					t.Error("--replace did not replace d-1's password")
				}
			}},
		{name: "no password on stdin", stdin: "", args: []string{"add", "d-3", "--cost", "4"}, code: 1},
		{name: "a password flag does not exist", args: []string{"add", "d-3", "--password", "x"}, code: 2},
		{name: "a bad id", stdin: "x\n", args: []string{"add", "d/3", "--cost", "4"}, code: 1},
		{name: "a reserved id", stdin: "x\n", args: []string{"add", "otawatch-bridge", "--cost", "4"}, code: 1},
		{name: "cost out of range", stdin: "x\n", args: []string{"add", "d-3", "--cost", "3"}, code: 1},
		{name: "import", args: []string{"import", creds, "--cost", "4"}, code: 0, stdout: []string{"imported 2 (2 added, 0 with a new password)"},
			check: func(t *testing.T, r *identity.Registry) {
				if !r.Check("d-10", "ten") || !r.Check("d-11", "eleven") {
					t.Error("imported passwords do not check")
				}
			}},
		{name: "import derived", args: []string{"import", "--password-secret-file", secret, ids, "--cost", "4"}, code: 0,
			check: func(t *testing.T, r *identity.Registry) {
				if !r.Check("d-00002", identity.DerivePassword([]byte("demo-secret"), "d-00002")) {
					t.Error("a derived password does not check")
				}
			}},
		{name: "import from stdin", stdin: "d-12 twelve\n", args: []string{"import", "-", "--cost", "4"}, code: 0,
			check: func(t *testing.T, r *identity.Registry) {
				if !r.Check("d-12", "twelve") {
					t.Error("a password imported from stdin does not check")
				}
			}},
		{name: "remove", args: []string{"remove", "d-2"}, code: 0, stdout: []string{"removed d-2"},
			check: func(t *testing.T, r *identity.Registry) {
				if r.Has("d-2") {
					t.Error("d-2 is still registered")
				}
			}},
		{name: "remove unknown", args: []string{"remove", "d-2"}, code: 1},
		{name: "list", args: []string{"list"}, code: 0, stdout: []string{"ID", "d-00001", "d-1 ", "d-12", "6 devices in " + reg}},
		{name: "no subcommand", args: nil, code: 2},
		{name: "missing id", args: []string{"remove"}, code: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runDevices(environ, tt.stdin, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out, errOut)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout does not contain %q:\n%s", s, out)
				}
			}
			if tt.check != nil {
				r, err := identity.LoadRegistry(reg)
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, r)
			}
		})
	}
	raw, err := os.ReadFile(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{"from-stdin", "second", "from-a-file", "eleven", "twelve"} {
		if bytes.Contains(raw, []byte(pw)) {
			t.Errorf("the registry holds the password %q in clear", pw)
		}
	}

	// --generate prints the password, once, on stdout.
	code, out, errOut := runDevices(environ, "", "add", "d-gen", "--generate", "--cost", "4")
	if code != 0 {
		t.Fatalf("add --generate: exit %d: %s", code, errOut)
	}
	r, _ := identity.LoadRegistry(reg)
	if pw := strings.TrimSpace(out); len(pw) < 32 || !r.Check("d-gen", pw) {
		t.Errorf("add --generate printed %q, which is not d-gen's password", out)
	}
	code, out, _ = runDevices(environ, "", "list", "--json")
	var rows []struct{ ID string }
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil || len(rows) != 7 {
		t.Errorf("list --json: exit %d, %v, %d rows:\n%s", code, err, len(rows), out)
	}
}

// TestDevicesMosquittoPasswd: mosquitto-passwd writes every device and the
// services' users; a service user that is also a device is refused.
func TestDevicesMosquittoPasswd(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "devices.json")
	if err := identity.Add(reg, "d-1", "pw-one", identity.MinCost); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "passwd")
	environ := []string{
		"OTAWATCH_DEVICES_REGISTRY_FILE=" + reg,
		"OTAWATCH_MQTT_USERNAME=otawatch-bridge", "OTAWATCH_MQTT_PASSWORD_FILE=" + writeFile(t, "b", "bridge-pw\n"),
		"OTAWATCH_ROLLOUT_USERNAME=otawatch-rollout", "OTAWATCH_ROLLOUT_PASSWORD_FILE=" + writeFile(t, "r", "rollout-pw\n"),
	}
	if code, _, errOut := runDevices(environ, "", "mosquitto-passwd", "--out", out); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	hashes := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		user, h, _ := strings.Cut(line, ":")
		hashes[user] = h
	}
	for user, pw := range map[string]string{"d-1": "pw-one", "otawatch-bridge": "bridge-pw", "otawatch-rollout": "rollout-pw"} {
		if ok, err := identity.VerifyMosquittoHash(hashes[user], pw); !ok || err != nil {
			t.Errorf("%s: hash %q does not verify: %v", user, hashes[user], err)
		}
	}
	if len(hashes) != 3 {
		t.Errorf("password file has %d users, want 3:\n%s", len(hashes), b)
	}
	clash := append(environ[:0:0], environ...)
	clash[1] = "OTAWATCH_MQTT_USERNAME=d-1"
	if code, _, errOut := runDevices(clash, "", "mosquitto-passwd", "--out", out); code != 1 || !strings.Contains(errOut, "also a registered device") {
		t.Errorf("a service user named like a device: exit %d, %s", code, errOut)
	}
}

// TestDevicesOnMosquitto: with devices.mosquitto_password_file and
// mosquitto_pid_file set, "devices add" lets a new device onto a running
// Mosquitto and "devices remove" takes it off, without a restart.
func TestDevicesOnMosquitto(t *testing.T) {
	m := testutil.StartMosquittoAuth(t, testutil.MosquittoAuth{})
	pidFile := writeFile(t, "mosquitto.pid", strconv.Itoa(m.PID())+"\n")
	environ := []string{
		"OTAWATCH_DEVICES_REGISTRY_FILE=" + m.Registry,
		"OTAWATCH_DEVICES_MOSQUITTO_PASSWORD_FILE=" + m.PasswordFile,
		"OTAWATCH_DEVICES_MOSQUITTO_PID_FILE=" + pidFile,
		"OTAWATCH_MQTT_USERNAME=" + testutil.BridgeUser, "OTAWATCH_MQTT_PASSWORD_FILE=" + writeFile(t, "b", testutil.BridgePassword),
		"OTAWATCH_ROLLOUT_USERNAME=" + testutil.RolloutUser, "OTAWATCH_ROLLOUT_PASSWORD_FILE=" + writeFile(t, "r", testutil.RolloutPassword),
	}
	connect := func() error {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(m.URL).SetClientID("new-device").
			SetUsername("d-new").SetPassword("new-pw").SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return errors.New("no CONNACK")
		}
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return tok.Error()
	}
	if connect() == nil {
		t.Fatal("an unregistered device connected")
	}
	code, out, errOut := runDevices(environ, "new-pw\n", "add", "d-new", "--cost", "4")
	if code != 0 || !strings.Contains(out, "SIGHUP") {
		t.Fatalf("add: exit %d\n%s%s", code, out, errOut)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return connect() == nil }, "the added device cannot connect: %v", connect())
	// The services' users survive the rewrite.
	for user, pw := range map[string]string{testutil.BridgeUser: testutil.BridgePassword, testutil.RolloutUser: testutil.RolloutPassword} {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(m.URL).SetClientID("svc-" + user).SetUsername(user).SetPassword(pw))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Errorf("%s cannot connect after the rewrite: %v", user, tok.Error())
		} else {
			c.Disconnect(0)
		}
	}
	// A device connected when it is removed is disconnected by the reload.
	lost := make(chan error, 1)
	held := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(m.URL).SetClientID("held").SetUsername("d-new").SetPassword("new-pw").
		SetAutoReconnect(false).SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err }))
	if tok := held.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("d-new connect: %v", tok.Error())
	}
	defer held.Disconnect(0)
	if code, out, errOut := runDevices(environ, "", "remove", "d-new"); code != 0 {
		t.Fatalf("remove: exit %d\n%s%s", code, out, errOut)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return connect() != nil }, "the removed device still connects")
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Error("the removed device's open connection was not closed")
	}
}

// TestDevicesSimulateConsistent: the demo's flow. Devices registered by
// "devices import --password-secret-file" and written to a running
// Mosquitto's password file are the ones "simulate --password-secret-file"
// connects as; with another secret the simulator is refused.
func TestDevicesSimulateConsistent(t *testing.T) {
	m := testutil.StartMosquittoAuth(t, testutil.MosquittoAuth{})
	secret := writeFile(t, "secret", "the-demo-secret\n")
	var ids strings.Builder
	for i := 1; i <= 5; i++ {
		ids.WriteString("d-0000" + strconv.Itoa(i) + "\n")
	}
	environ := []string{
		"OTAWATCH_DEVICES_REGISTRY_FILE=" + m.Registry,
		"OTAWATCH_DEVICES_MOSQUITTO_PASSWORD_FILE=" + m.PasswordFile,
		"OTAWATCH_DEVICES_MOSQUITTO_PID_FILE=" + writeFile(t, "pid", strconv.Itoa(m.PID())),
	}
	if code, out, errOut := runDevices(environ, ids.String(), "import", "-", "--password-secret-file", secret, "--cost", "4"); code != 0 {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	simulate := func(secretFile string) (int, string, string) {
		var out, errb bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		code := Main(ctx, []string{"simulate", "--devices", "5", "--broker", m.URL, "--rate", "0", "--count", "10",
			"--time-scale", "10000", "--progress", "0", "--password-secret-file", secretFile}, &Env{Stdout: &out, Stderr: &errb})
		return code, out.String(), errb.String()
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, out, _ := simulate(secret)
		return code == 0 && strings.Contains(out, "sent=10 ")
	}, "the simulator's devices were not let in")
	code, out, errOut := simulate(writeFile(t, "wrong", "another-secret\n"))
	if code != 1 || !strings.Contains(errOut, "refused the credentials") {
		t.Errorf("simulate with another secret: exit %d, want 1 and a refusal\n%s%s", code, out, errOut)
	}
}
