package bridge

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/identity"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// The trust boundary on Mosquitto (DESIGN.md, "Trust boundary"): a broker
// locked down as deploy/mosquitto ships it (the shipped ACL, a password_file
// written by the device registry), a bridge on its own user, and devices
// that try what they must not. Mosquitto acknowledges a refused QoS 1
// publish and grants any subscription, so nothing here can be seen from the
// attacker's side: each attempt is shown refused by what did not arrive
// (at the bridge, in SHADOW, at another device), next to a positive control
// that did arrive by the same path.

const authType = "sensor"

var authDevices = []identity.Credential{{ID: "d-1", Password: "pw-one"}, {ID: "d-2", Password: "pw-two"}, {ID: "d-3", Password: "pw-three"}}

// authEnv starts the locked-down broker, JetStream and a bridge logged in
// as otawatch-bridge.
func authEnv(t *testing.T) (*env, *testutil.AuthMosquitto, *running) {
	t.Helper()
	m := testutil.StartMosquittoAuth(t, testutil.MosquittoAuth{Devices: authDevices})
	e := &env{js: testutil.StartJetStream(t, testutil.JetStreamOptions{}), mqttURL: m.URL, mosq: m.Mosquitto}
	pw := filepath.Join(t.TempDir(), "bridge-password")
	if err := os.WriteFile(pw, []byte(testutil.BridgePassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := e.startBridge(t, Config{Username: testutil.BridgeUser, PasswordFile: pw}, hooks{})
	return e, m, b
}

// client is an MQTT client logged in as user, recording what it receives.
type client struct {
	c    mqtt.Client
	mu   sync.Mutex
	got  []mqtt.Message
	user string
}

// dial connects as user with password (none when empty).
func dial(url, clientID, user, password string) (*client, error) {
	cl := &client{user: user}
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			cl.mu.Lock()
			cl.got = append(cl.got, m)
			cl.mu.Unlock()
		})
	if user != "" {
		opts.SetUsername(user).SetPassword(password)
	}
	cl.c = mqtt.NewClient(opts)
	tok := cl.c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("no CONNACK in 10s")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return cl, nil
}

func mustDial(t *testing.T, url, user, password string) *client {
	t.Helper()
	// Mosquitto's ACL refuses everything to a client whose id has + or #
	// (a pattern on %c could match too much): keep the test name's
	// wildcards out of it.
	cl, err := dial(url, "test-"+user+"-"+strings.NewReplacer("/", "-", "+", "p", "#", "h", "$", "d").Replace(t.Name()), user, password)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(func() { cl.c.Disconnect(100) })
	return cl
}

func (cl *client) publish(t *testing.T, topic string, retained bool, payload []byte) {
	t.Helper()
	// Mosquitto acknowledges a publish the ACL refuses: no error here
	// either way.
	if tok := cl.c.Publish(topic, 1, retained, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s publish %s: %v", cl.user, topic, tok.Error())
	}
}

func (cl *client) subscribe(t *testing.T, filter string) {
	t.Helper()
	tok := cl.c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s subscribe %s: %v", cl.user, filter, tok.Error())
	}
	if codes := tok.(*mqtt.SubscribeToken).Result(); codes[filter] >= 0x80 {
		t.Fatalf("%s subscribe %s: refused (%#x); Mosquitto 2.0 was expected to grant it", cl.user, filter, codes[filter])
	}
}

// received is what the client got: topic and payload of each message.
func (cl *client) received() []string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	out := make([]string, len(cl.got))
	for i, m := range cl.got {
		out[i] = m.Topic() + " " + string(m.Payload())
	}
	return out
}

// waitFor waits until the client has received want (the control), then
// returns everything it received.
func (cl *client) waitFor(t *testing.T, want string) []string {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() bool {
		for _, r := range cl.received() {
			if r == want {
				return true
			}
		}
		return false
	}, "%s never received the control %q; got %q", cl.user, want, cl.received())
	return cl.received()
}

func authReport(deviceID string, n int) []byte {
	return reportPayload(events.Firmware{Version: "4.2.0", Status: events.StatusCompleted, PreviousVersion: "4.1.5",
		Checksum: "sha256:42", UpdateDuration: 10, Timestamp: time.Date(2026, 11, 25, 11, 0, n, 0, time.UTC)})
}

// TestMosquittoAuthConnect: a wrong or missing password, an unknown user,
// another device's password are refused at CONNECT; the right ones pass.
func TestMosquittoAuthConnect(t *testing.T) {
	m := testutil.StartMosquittoAuth(t, testutil.MosquittoAuth{Devices: authDevices})
	tests := []struct {
		name, user, password string
		ok                   bool
	}{
		{"device with its password", "d-1", "pw-one", true},
		{"bridge with its password", testutil.BridgeUser, testutil.BridgePassword, true},
		{"rollout with its password", testutil.RolloutUser, testutil.RolloutPassword, true},
		{"no username (anonymous)", "", "", false},
		{"no password", "d-1", "", false},
		{"wrong password", "d-1", "pw-onf", false},
		{"another device's password", "d-1", "pw-two", false},
		{"unknown device", "d-9", "pw-one", false},
		{"bridge with a device's password", testutil.BridgeUser, "pw-one", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl, err := dial(m.URL, "connect-test", tt.user, tt.password)
			if cl != nil {
				defer cl.c.Disconnect(0)
			}
			switch {
			case tt.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tt.ok && err == nil:
				t.Fatal("connected; want a refusal at CONNECT")
			case !tt.ok && !strings.Contains(err.Error(), "ot Authorized") && !strings.Contains(err.Error(), "bad user name or password"):
				t.Errorf("refused with %v, want not authorized", err)
			}
		})
	}
}

// TestMosquittoAuthForgedReport: a device publishing a report or presence
// on another device's topic reaches neither the bridge nor SHADOW; its own
// report does, and so does the other device's own.
func TestMosquittoAuthForgedReport(t *testing.T) {
	e, _, b := authEnv(t)
	d1 := mustDial(t, e.mqttURL, "d-1", "pw-one")
	d2 := mustDial(t, e.mqttURL, "d-2", "pw-two")
	// A second reader as the bridge's user, for presence (the bridge
	// itself does not consume presence).
	watcher := mustDial(t, e.mqttURL, testutil.BridgeUser, testutil.BridgePassword)
	watcher.subscribe(t, "iot-2/type/+/id/+/presence")

	d1.publish(t, events.ReportTopic(authType, "d-2"), false, authReport("d-2", 1)) // forged
	d1.publish(t, events.ReportTopic("other", "d-2"), false, authReport("d-2", 2))  // forged, another type
	d1.publish(t, "iot-2/type/sensor/id/d-2/presence", false, []byte("offline"))    // forged
	d1.publish(t, events.ReportTopic(authType, "d-1"), false, authReport("d-1", 3)) // control
	d1.publish(t, "iot-2/type/sensor/id/d-1/presence", false, []byte("online"))     // control
	d2.publish(t, events.ReportTopic(authType, "d-2"), false, authReport("d-2", 4)) // control

	b.settle(t, 2)
	got := readEvents(t, e, events.StreamShadow)
	var subjects []string
	for _, se := range got {
		subjects = append(subjects, se.raw.Subject)
	}
	want := map[string]bool{events.ShadowReportedSubject(authType, "d-1"): true, events.ShadowReportedSubject(authType, "d-2"): true}
	if len(got) != 2 || !want[subjects[0]] || !want[subjects[1]] || subjects[0] == subjects[1] {
		t.Errorf("SHADOW holds %v; want one report of d-1 and one of d-2 (the forged ones refused)", subjects)
	}
	var d events.ShadowReportedData
	for _, se := range got {
		if err := se.ev.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		if d.DeviceID == "d-2" && d.Firmware.Timestamp.Second() != 4 {
			t.Errorf("d-2's stored report is the forged one (second %d)", d.Firmware.Timestamp.Second())
		}
	}
	if st := b.s.Stats(); st.Accepted != 2 || st.Rejected != 0 {
		t.Errorf("bridge stats %+v, want 2 accepted: a forged report reached it", st)
	}
	if p := watcher.waitFor(t, "iot-2/type/sensor/id/d-1/presence online"); len(p) != 1 {
		t.Errorf("presence seen by the bridge's user: %q; want only d-1's own", p)
	}
}

// TestMosquittoAuthForgedDelta: desired state from anyone but the rollout
// service's user is dropped. A device's retained delta for another device,
// or for itself, and the bridge's, never reach a device that subscribes
// later; the rollout service's does.
func TestMosquittoAuthForgedDelta(t *testing.T) {
	e, _, _ := authEnv(t)
	d1 := mustDial(t, e.mqttURL, "d-1", "pw-one")
	bridgeUser := mustDial(t, e.mqttURL, testutil.BridgeUser, testutil.BridgePassword)
	ro := mustDial(t, e.mqttURL, testutil.RolloutUser, testutil.RolloutPassword)

	d1.publish(t, events.DeltaTopic(authType, "d-2"), true, []byte("forged by d-1"))
	d1.publish(t, events.DeltaTopic(authType, "d-3"), true, []byte("forged by d-1"))
	d1.publish(t, events.DeltaTopic(authType, "d-1"), true, []byte("forged by d-1 for itself"))
	bridgeUser.publish(t, events.DeltaTopic(authType, "d-3"), true, []byte("forged by the bridge"))
	ro.publish(t, events.DeltaTopic(authType, "d-2"), true, []byte("genuine"))

	tests := []struct {
		name, device, password string
		// want is every message the device gets, control last.
		want []string
	}{
		{"retained genuine delta replaces nothing forged", "d-2", "pw-two", []string{"genuine", "control"}},
		{"device with only forged deltas", "d-3", "pw-three", []string{"control"}},
		{"device that forged its own", "d-1", "pw-one", []string{"control"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := mustDial(t, e.mqttURL, tt.device, tt.password)
			topic := events.DeltaTopic(authType, tt.device)
			dev.subscribe(t, topic)
			ro.publish(t, topic, false, []byte("control"))
			got := dev.waitFor(t, topic+" control")
			var payloads []string
			for _, g := range got {
				payloads = append(payloads, strings.TrimPrefix(g, topic+" "))
			}
			if strings.Join(payloads, "|") != strings.Join(tt.want, "|") {
				t.Errorf("%s received %q, want %q", tt.device, payloads, tt.want)
			}
		})
	}
}

// TestMosquittoAuthWildcardSubscription: a device's "#" (or report
// wildcard) subscription is granted but delivers only what the device may
// read: its own desired state, not other devices' reports or deltas.
func TestMosquittoAuthWildcardSubscription(t *testing.T) {
	e, _, b := authEnv(t)
	ro := mustDial(t, e.mqttURL, testutil.RolloutUser, testutil.RolloutPassword)
	d2 := mustDial(t, e.mqttURL, "d-2", "pw-two")
	for _, filter := range []string{"#", events.ReportTopicFilter, "iot-2/type/+/id/+/shadow/delta", "$SYS/#"} {
		t.Run(filter, func(t *testing.T) {
			spy := mustDial(t, e.mqttURL, "d-1", "pw-one")
			spy.subscribe(t, filter)
			before := b.s.Stats().Accepted
			d2.publish(t, events.ReportTopic(authType, "d-2"), false, authReport("d-2", int(before)))
			ro.publish(t, events.DeltaTopic(authType, "d-2"), false, []byte("for d-2"))
			b.settle(t, before+1) // the report was there to be seen
			ro.publish(t, events.DeltaTopic(authType, "d-1"), false, []byte("control"))
			own := events.DeltaTopic(authType, "d-1") + " control"
			var got []string
			if filter == "#" || filter == "iot-2/type/+/id/+/shadow/delta" {
				got = spy.waitFor(t, own)
				if len(got) != 1 {
					t.Errorf("d-1 subscribed to %s received %q; want only its own delta", filter, got)
				}
				return
			}
			// Filters that do not match the device's own delta: a second
			// subscription carries the control.
			spy.subscribe(t, events.DeltaTopic(authType, "d-1"))
			ro.publish(t, events.DeltaTopic(authType, "d-1"), false, []byte("control"))
			got = spy.waitFor(t, own)
			if len(got) != 1 {
				t.Errorf("d-1 subscribed to %s received %q; want only its own delta", filter, got)
			}
		})
	}
}

// TestShippedMosquittoAuth: the shipped broker configuration locks the
// broker down, and the tests' locked-down broker uses the same settings
// and the shipped ACL.
func TestShippedMosquittoAuth(t *testing.T) {
	b, err := os.ReadFile("../../deploy/mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	shipped := confValues(string(b))
	tested := confValues(testutil.MosquittoAuthConfig("P", "A"))
	if shipped["allow_anonymous"] != "false" || tested["allow_anonymous"] != "false" {
		t.Errorf("allow_anonymous: deploy/mosquitto has %q, the tests' locked-down broker %q; want false",
			shipped["allow_anonymous"], tested["allow_anonymous"])
	}
	for _, key := range []string{"password_file", "acl_file"} {
		if shipped[key] == "" || tested[key] == "" {
			t.Errorf("%s: deploy/mosquitto has %q, the tests' locked-down broker %q; both must set it", key, shipped[key], tested[key])
		}
	}
	if filepath.Base(shipped["acl_file"]) != filepath.Base(testutil.ShippedACL()) {
		t.Errorf("deploy/mosquitto's acl_file %q is not named after the shipped deploy/mosquitto/acl", shipped["acl_file"])
	}
}
