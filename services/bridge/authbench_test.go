package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/identity"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/natsd"
)

// BenchmarkIngestAuth measures what authentication costs the ingest path:
// a fleet of devices, each on its own connection, publishing reports
// through the broker and the bridge into SHADOW, anonymous against
// authenticated (each device as itself, the bridge as otawatch-bridge),
// on Mosquitto (the shipped ACL and a password file from the registry) and
// on the embedded NATS listener (the device registry behind it). Each
// round runs the four setups back to back; the metrics are medians over
// the rounds, and auth/anon_% the ratios of those medians per broker.
//
// Knobs: OTAWATCH_BENCH_DEVICES (default 100), OTAWATCH_BENCH_MSGS
// (reports per setup, default 50000).
func BenchmarkIngestAuth(b *testing.B) {
	devices := benchEnvInt(b, "OTAWATCH_BENCH_DEVICES", 100)
	n := benchEnvInt(b, "OTAWATCH_BENCH_MSGS", 50000)
	perDevice := n / devices
	setups := []string{"mosquitto-anon", "mosquitto-auth", "nats-anon", "nats-auth"}
	rates := map[string][]float64{}
	b.ResetTimer()
	for round := 0; round < b.N; round++ {
		for _, setup := range setups {
			b.StopTimer()
			rate := benchAuthSetup(b, setup, round, devices, perDevice)
			b.StartTimer()
			rates[setup] = append(rates[setup], rate)
		}
		b.Logf("round %d: %s", round+1, func() string {
			var parts []string
			for _, s := range setups {
				parts = append(parts, fmt.Sprintf("%s %.0f msg/s", s, rates[s][round]))
			}
			return strings.Join(parts, ", ")
		}())
	}
	for _, s := range setups {
		b.ReportMetric(median(rates[s]), s+"_msg/s")
	}
	b.ReportMetric(100*median(rates["mosquitto-auth"])/median(rates["mosquitto-anon"]), "mosquitto_auth/anon_%")
	b.ReportMetric(100*median(rates["nats-auth"])/median(rates["nats-anon"]), "nats_auth/anon_%")
}

// benchAuthSetup starts the setup's broker, JetStream and bridge, connects
// the devices, and times their reports into SHADOW (it stops and restarts
// the benchmark timer itself around the timed part only).
func benchAuthSetup(b *testing.B, setup string, round, devices, perDevice int) float64 {
	auth := strings.HasSuffix(setup, "-auth")
	ids := make([]string, devices)
	creds := make([]identity.Credential, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("r%d-%s-%04d", round, strings.ReplaceAll(setup, "-", ""), i)
		creds[i] = identity.Credential{ID: ids[i], Password: "pw-" + ids[i]}
	}
	var (
		url        string
		js         *testutil.JetStream
		bridgeUser string
		bridgePW   string
		stop       []func()
	)
	defer func() {
		for i := len(stop) - 1; i >= 0; i-- {
			stop[i]()
		}
	}()
	switch setup {
	case "mosquitto-anon":
		url = testutil.StartMosquitto(b).URL
		js = testutil.StartJetStream(b, testutil.JetStreamOptions{})
	case "mosquitto-auth":
		m := testutil.StartMosquittoAuth(b, testutil.MosquittoAuth{Devices: creds})
		url, bridgeUser, bridgePW = m.URL, testutil.BridgeUser, testutil.BridgePassword
		js = testutil.StartJetStream(b, testutil.JetStreamOptions{})
	case "nats-anon":
		js = testutil.StartJetStream(b, testutil.JetStreamOptions{MQTT: true})
		url = "tcp://" + js.Server.MQTTAddr()
	case "nats-auth":
		reg := filepath.Join(b.TempDir(), "devices.json")
		if _, err := identity.ImportCredentials(reg, creds, identity.MinCost, nil); err != nil {
			b.Fatal(err)
		}
		store, err := identity.OpenStore(reg, nil)
		if err != nil {
			b.Fatal(err)
		}
		stop = append(stop, store.Close)
		js = testutil.StartJetStream(b, testutil.JetStreamOptions{MQTT: true, User: events.IdentityServices, Password: "svc",
			Auth: &natsd.Auth{Devices: store, Passwords: map[string]string{events.IdentityServices: "svc", natsd.UserBridge: "bridge"}}})
		url, bridgeUser, bridgePW = "tcp://"+js.Server.MQTTAddr(), natsd.UserBridge, "bridge"
	}
	pwFile := ""
	if bridgeUser != "" {
		pwFile = filepath.Join(b.TempDir(), "bridge-password")
		writeBenchFile(b, pwFile, bridgePW)
	}
	health := svc.NewHealth()
	s, err := New(Config{Broker: url, ClientID: "bench-bridge", Username: bridgeUser, PasswordFile: pwFile},
		svc.Deps{Log: slog.New(slog.DiscardHandler), NC: js.NC, JS: js.JS, Health: health})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- s.Run(ctx) }()
	stop = append(stop, func() { cancel(); <-runDone })
	testutil.Eventually(b, 20*time.Second, health.Ready, "bridge not ready: %v", health.Status())

	clients := make([]mqtt.Client, devices)
	msgs := make([][]msg, devices)
	for i, id := range ids {
		opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).SetAutoReconnect(false)
		if auth {
			opts.SetUsername(id).SetPassword("pw-" + id)
		}
		clients[i] = mqtt.NewClient(opts)
		if tok := clients[i].Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("%s: device %s connect: %v", setup, id, tok.Error())
		}
		stop = append(stop, func() { clients[i].Disconnect(50) })
		for k := range perDevice {
			d, _ := report(k)
			fw := d.Firmware
			fw.Timestamp = fw.Timestamp.Add(time.Duration(i) * time.Millisecond)
			msgs[i] = append(msgs[i], msg{topic: events.ReportTopic("bench", id), payload: reportPayload(fw)})
		}
	}
	total := uint64(devices * perDevice)
	before := js.Count(b, events.StreamShadow)

	b.StartTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); benchPublish(b, clients[i], msgs[i]) }()
	}
	wg.Wait()
	testutil.Eventually(b, 3*time.Minute, func() bool { st := s.Stats(); return st.Accepted+st.Duplicates >= total },
		"%s: bridge stored fewer than %d reports: %+v", setup, total, s.Stats())
	elapsed := time.Since(start)
	b.StopTimer()

	if st := s.Stats(); st.Accepted != total || st.Rejected != 0 {
		b.Errorf("%s: bridge stats %+v, want %d accepted, none rejected", setup, st, total)
	}
	if got := js.Count(b, events.StreamShadow) - before; got != total {
		b.Errorf("%s: SHADOW gained %d events, want %d", setup, got, total)
	}
	return float64(total) / elapsed.Seconds()
}

func writeBenchFile(b *testing.B, path, content string) {
	b.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		b.Fatal(err)
	}
}
