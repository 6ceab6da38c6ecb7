package natsd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/natsd"
)

// devices is a stand-in registry (services/internal/identity has its own
// tests): id -> password.
type devices map[string]string

func (d devices) Check(id, pw string) bool { p, ok := d[id]; return ok && p == pw }
func (d devices) Has(id string) bool       { _, ok := d[id]; return ok }

const (
	servicesPassword = "services-secret"
	cliPassword      = "cli-secret"
	bridgePassword   = "bridge-secret"
	rolloutPassword  = "rollout-secret"
)

// lockedServer is an embedded server with authentication on, as otawatch
// run starts it, with the streams created by the services' identity.
type lockedServer struct {
	srv *natsd.Server
	nc  *nats.Conn // the services' identity
	js  jetstream.JetStream
}

func startLocked(t *testing.T, mutate func(*natsd.Config)) *lockedServer {
	t.Helper()
	cfg := natsd.Config{
		StoreDir:   t.TempDir(),
		Listen:     "127.0.0.1:-1",
		MQTTListen: "127.0.0.1:-1",
		Auth: natsd.Auth{
			Passwords: map[string]string{
				events.IdentityServices: servicesPassword,
				events.IdentityCLI:      cliPassword,
				natsd.UserBridge:        bridgePassword,
				natsd.UserRollout:       rolloutPassword,
			},
			Devices: devices{"victim": "victim-pw", "attacker": "attacker-pw"},
		},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := natsd.Start(cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("services", nats.UserInfo(events.IdentityServices, servicesPassword))
	if err != nil {
		t.Fatalf("services connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{Replicas: 1}); err != nil {
		t.Fatalf("ensure streams: %v", err)
	}
	return &lockedServer{srv: srv, nc: nc, js: js}
}

// mqttClient connects to the server's MQTT listener; it returns the
// connect error instead of failing.
func (s *lockedServer) mqttClient(t *testing.T, id, user, password string) (mqtt.Client, error) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + s.srv.MQTTAddr()).SetClientID(id).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	if user != "" {
		o.SetUsername(user).SetPassword(password)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func (s *lockedServer) mustMQTT(t *testing.T, id, user, password string) mqtt.Client {
	t.Helper()
	c, err := s.mqttClient(t, id, user, password)
	if err != nil {
		t.Fatalf("mqtt connect as %q: %v", user, err)
	}
	return c
}

// inbox collects what an MQTT subscription delivers.
type inbox struct {
	mu   sync.Mutex
	msgs []string // topic + " " + payload
}

func (b *inbox) handler(_ mqtt.Client, m mqtt.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.msgs = append(b.msgs, m.Topic()+" "+string(m.Payload()))
}

func (b *inbox) has(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.msgs {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// subscribe returns the granted QoS (0x80 is a refusal).
func subscribe(t *testing.T, c mqtt.Client, topic string, b *inbox) byte {
	t.Helper()
	tok := c.Subscribe(topic, 1, b.handler)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
	return tok.(*mqtt.SubscribeToken).Result()[topic]
}

func publish(c mqtt.Client, topic, payload string, retained bool) {
	tok := c.Publish(topic, 1, retained, payload)
	tok.WaitTimeout(5 * time.Second)
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func report(typ, id string) string { return "iot-2/type/" + typ + "/id/" + id + "/update/shadow" }
func delta(typ, id string) string  { return "iot-2/type/" + typ + "/id/" + id + "/shadow/delta" }

// TestDevicesAreConfined tries, as a registered device, what an attacker
// would: forge another device's report, forge its desired firmware, read
// every topic. Each is refused, and the device's own traffic still flows
// (the positive control that shows the refusals are not a dead listener).
func TestDevicesAreConfined(t *testing.T) {
	s := startLocked(t, nil)
	bridge := s.mustMQTT(t, "bridge", natsd.UserBridge, bridgePassword)
	var reports inbox
	if q := subscribe(t, bridge, "iot-2/type/+/id/+/update/shadow", &reports); q == 0x80 {
		t.Fatal("the bridge's subscription to every report was refused")
	}
	attacker := s.mustMQTT(t, "attacker", "attacker", "attacker-pw")

	t.Run("forged report", func(t *testing.T) {
		publish(attacker, report("t", "victim"), "forged", false)
		publish(attacker, report("t", "attacker"), "own", false)
		waitFor(t, "the attacker's own report", func() bool { return reports.has("id/attacker/update/shadow own") })
		if reports.has("forged") {
			t.Error("a report on another device's topic reached the bridge")
		}
	})
	t.Run("wildcard subscription", func(t *testing.T) {
		var all inbox
		for _, topic := range []string{"#", "iot-2/#", "iot-2/type/+/id/+/update/shadow", "iot-2/type/t/id/victim/shadow/delta"} {
			if q := subscribe(t, attacker, topic, &all); q != 0x80 {
				t.Errorf("subscription to %s granted with QoS %d, want refused (0x80)", topic, q)
			}
		}
		victim := s.mustMQTT(t, "victim", "victim", "victim-pw")
		publish(victim, report("t", "victim"), "victim-report", false)
		waitFor(t, "the victim's report at the bridge", func() bool { return reports.has("victim-report") })
		if all.has("victim-report") {
			t.Error("the attacker read another device's report")
		}
	})
	t.Run("forged desired firmware", func(t *testing.T) {
		rollout := s.mustMQTT(t, "rollout", natsd.UserRollout, rolloutPassword)
		victim := s.mustMQTT(t, "victim-live", "victim", "victim-pw")
		var live inbox
		if q := subscribe(t, victim, delta("t", "victim"), &live); q == 0x80 {
			t.Fatal("the victim may not read its own delta")
		}
		publish(rollout, delta("t", "victim"), `{"url":"https://good.example/fw.bin"}`, true)
		waitFor(t, "the rollout service's delta", func() bool { return live.has("good.example") })
		// The forgery, live and retained; then a control from the rollout
		// service on the same topic, not retained.
		publish(attacker, delta("t", "victim"), `{"url":"http://evil.example/fw.bin"}`, true)
		publish(rollout, delta("t", "victim"), `{"url":"https://control.example/"}`, false)
		waitFor(t, "the control delta", func() bool { return live.has("control.example") })
		if live.has("evil.example") {
			t.Error("a device's forged delta reached another device")
		}
		// A device that connects later gets the retained delta: the
		// rollout service's, not the forgery.
		// On a loaded machine a subscriber has (1 run in 30) got no
		// retained message at all; a retained message comes only with the
		// SUBSCRIBE, so a late device that got none connects again, up to
		// five times. Whatever arrives is checked: any retained delivery
		// would carry the forgery if it had been kept.
		var retained inbox
		for i := 0; i < 5 && !retained.has("example"); i++ {
			later := s.mustMQTT(t, fmt.Sprintf("victim-later-%d", i), "victim", "victim-pw")
			subscribe(t, later, delta("t", "victim"), &retained)
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !retained.has("example"); {
				time.Sleep(20 * time.Millisecond)
			}
			later.Disconnect(0)
		}
		if !retained.has("example") {
			t.Fatal("five late subscribers got no retained delta")
		}
		if retained.has("evil.example") || !retained.has("good.example") {
			t.Errorf("retained delta is %v, want the rollout service's", retained.msgs)
		}
	})
	t.Run("bridge cannot publish deltas", func(t *testing.T) {
		publish(bridge, delta("t", "attacker"), "from-bridge", true)
		var got inbox
		subscribe(t, attacker, delta("t", "attacker"), &got)
		rollout := s.mustMQTT(t, "rollout-2", natsd.UserRollout, rolloutPassword)
		publish(rollout, delta("t", "attacker"), "from-rollout", false)
		waitFor(t, "the rollout service's delta", func() bool { return got.has("from-rollout") })
		if got.has("from-bridge") {
			t.Error("the bridge's identity published a delta")
		}
	})
}

// TestMQTTCannotReachTheLog publishes into every internal subject family
// over MQTT, anonymous where the server allows it and as a device, and
// checks nothing reached a stream, the rollout command subjects, or the
// stream list.
func TestMQTTCannotReachTheLog(t *testing.T) {
	for _, mode := range []string{"anonymous", "device"} {
		t.Run(mode, func(t *testing.T) {
			s := startLocked(t, func(c *natsd.Config) { c.Auth.AnonymousMQTT = true })
			commands := make(chan string, 16)
			sub, err := s.nc.Subscribe(events.RolloutCommandPrefix+".>", func(m *nats.Msg) { commands <- m.Subject })
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			_ = s.nc.Flush()
			user, pw := "", ""
			if mode == "device" {
				user, pw = "attacker", "attacker-pw"
			}
			c := s.mustMQTT(t, "intruder-"+mode, user, pw)
			envelope := `{"specversion":"1.0","id":"forged","source":"otawatch/bridge","type":"io.otawatch.shadow.reported.v1","subject":"t/victim","time":"2025-07-22T11:30:00Z","data":{"version":"6.6.6-forged"}}`
			for _, topic := range []string{
				"shadow/reported/probe/forged", "shadow/desired/probe/forged", "device/presence/probe/forged",
				"rollout/forgedjob/job_created", "alert/raised/critical/forged", "notify/slack/sent",
				"rejected/bridge", "otawatch/rollout/cmd/create/otawatch", "otawatch/rollout/cmd/create",
				"$JS/API/STREAM/DELETE/ALERTS", "$JS/API/STREAM/PURGE/SHADOW", "$KV/bridge_lease/x",
				"_INBOX/x", "audit/checkpoint/SHADOW",
			} {
				publish(c, topic, envelope, false)
			}
			// A positive control: the same connection's report reaches the
			// services' account through the import.
			got := make(chan struct{}, 1)
			rs, err := s.nc.Subscribe(events.DeviceTopicSubject("t", "*", events.TopicReport), func(*nats.Msg) {
				select {
				case got <- struct{}{}:
				default:
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = rs.Unsubscribe() })
			_ = s.nc.Flush()
			publish(c, report("t", "attacker"), "control", false)
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("the control report did not cross into the services account")
			}
			select {
			case subj := <-commands:
				t.Errorf("a rollout command arrived over MQTT on %s", subj)
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, name := range events.StreamNames() {
				st, err := s.js.Stream(ctx, name)
				if err != nil {
					t.Errorf("stream %s: %v", name, err)
					continue
				}
				info, err := st.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if info.State.Msgs != 0 {
					t.Errorf("stream %s holds %d messages written over MQTT", name, info.State.Msgs)
				}
			}
		})
	}
}

// TestNoIdentityDeletesStreams: the services' and the CLI's identities
// may not delete or purge a stream or a message on the NATS port, and a
// client without credentials does not get in.
func TestNoIdentityDeletesStreams(t *testing.T) {
	s := startLocked(t, nil)
	cli, err := nats.Connect(s.srv.ClientURL(), nats.UserInfo(events.IdentityCLI, cliPassword))
	if err != nil {
		t.Fatalf("cli connect: %v", err)
	}
	t.Cleanup(cli.Close)
	ctx := context.Background()
	if _, err := s.js.Publish(ctx, events.AlertSubject("raised", "critical", "r"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		nc   *nats.Conn
	}{{"services", s.nc}, {"cli", cli}} {
		js, _ := jetstream.New(c.nc)
		for _, name := range []string{events.StreamAlerts, events.StreamShadow, events.StreamNotify} {
			tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			if err := js.DeleteStream(tctx, name); err == nil {
				t.Errorf("%s deleted stream %s", c.name, name)
			}
			cancel()
			tctx, cancel = context.WithTimeout(ctx, time.Second)
			st, err := js.Stream(tctx, name)
			if err != nil {
				t.Fatalf("stream %s after %s's delete: %v", name, c.name, err)
			}
			if err := st.Purge(tctx); err == nil {
				t.Errorf("%s purged stream %s", c.name, name)
			}
			cancel()
		}
	}
	info, err := s.js.Stream(ctx, events.StreamAlerts)
	if err != nil {
		t.Fatalf("ALERTS is gone: %v", err)
	}
	if n := info.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("ALERTS holds %d messages, want 1", n)
	}
	for _, tc := range []struct {
		name string
		opts []nats.Option
	}{
		{"no credentials", nil},
		{"wrong password", []nats.Option{nats.UserInfo(events.IdentityServices, "guess")}},
		{"a device's credentials", []nats.Option{nats.UserInfo("victim", "victim-pw")}},
		{"an MQTT service identity", []nats.Option{nats.UserInfo(natsd.UserBridge, bridgePassword)}},
	} {
		nc, err := nats.Connect(s.srv.ClientURL(), append(tc.opts, nats.NoReconnect())...)
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected to the NATS port", tc.name)
		}
	}
}

// TestMQTTCredentialsRefused: a wrong or missing password, an unknown
// device, a service identity of the NATS port and a hostile user name are
// refused at CONNECT.
func TestMQTTCredentialsRefused(t *testing.T) {
	s := startLocked(t, nil)
	for _, tc := range []struct{ name, user, pw string }{
		{"missing", "", ""},
		{"wrong password", "victim", "attacker-pw"},
		{"unknown device", "stranger", "x"},
		{"services identity", events.IdentityServices, servicesPassword},
		{"bridge with the wrong password", natsd.UserBridge, "x"},
		{"hostile id", "a.b", "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.mqttClient(t, "c-"+strings.ReplaceAll(tc.name, " ", "-"), tc.user, tc.pw); err == nil {
				t.Errorf("connected as %q", tc.user)
			}
		})
	}
	if _, err := s.mqttClient(t, "ok", "victim", "victim-pw"); err != nil {
		t.Errorf("the right password: %v", err)
	}
}

// TestRolloutCommandsUnderOwnName: an identity can publish rollout
// commands only under its own name, so the subject names the sender; the
// CLI cannot write an audit checkpoint, an alert or a rule-set record.
func TestRolloutCommandsUnderOwnName(t *testing.T) {
	s := startLocked(t, nil)
	got := make(chan string, 4)
	sub, err := s.nc.Subscribe(events.RolloutCommandPrefix+".>", func(m *nats.Msg) { got <- m.Subject })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	asub, err := s.nc.Subscribe(events.SubjectAuditCheckpoint+".>", func(m *nats.Msg) { got <- m.Subject })
	if err != nil {
		t.Fatal(err)
	}
	defer asub.Unsubscribe()
	alsub, err := s.nc.Subscribe(events.SubjectAlert+".>", func(m *nats.Msg) { got <- m.Subject })
	if err != nil {
		t.Fatal(err)
	}
	defer alsub.Unsubscribe()
	cli, err := nats.Connect(s.srv.ClientURL(), nats.UserInfo(events.IdentityCLI, cliPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	_ = s.nc.Flush()
	for _, p := range []struct {
		nc      *nats.Conn
		subject string
		allowed bool
	}{
		{cli, events.RolloutCommandSubject("pause", events.IdentityServices), false},
		{cli, events.RolloutCommandSubject("pause", events.IdentityAnonymous), false},
		{s.nc, events.RolloutCommandSubject("pause", events.IdentityCLI), false},
		{cli, events.RolloutCommandSubject("pause", events.IdentityCLI), true},
		{s.nc, events.RolloutCommandSubject("pause", events.IdentityServices), true},
		{cli, events.AuditCheckpointSubject(events.StreamShadow), false},
		{cli, events.SubjectRulesLoaded, false},
		{cli, events.AlertSubject(events.AlertRaised, "critical", "device-failed"), false},
	} {
		_ = p.nc.Publish(p.subject, nil)
		_ = p.nc.Flush()
	}
	want := map[string]bool{
		events.RolloutCommandSubject("pause", events.IdentityCLI):      true,
		events.RolloutCommandSubject("pause", events.IdentityServices): true,
	}
	// Not "for range want": the loop deletes from want, and a range
	// skips an entry deleted before it is reached.
	for n := len(want); n > 0; n-- {
		select {
		case subj := <-got:
			if !want[subj] {
				t.Errorf("command on %s got through", subj)
			}
			delete(want, subj)
		case <-time.After(5 * time.Second):
			t.Fatalf("allowed commands not received: %v", want)
		}
	}
	select {
	case subj := <-got:
		t.Errorf("command on %s got through", subj)
	case <-time.After(200 * time.Millisecond):
	}
}
