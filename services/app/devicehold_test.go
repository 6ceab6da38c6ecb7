package app

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/identity"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestFirstStartKeepsTheEarliestReports: on a fresh data dir, a device
// that connects to the embedded MQTT listener the moment it opens, before
// the bridge's first subscription exists, and reports at once has every
// report it got acknowledged stored on SHADOW: the listener holds its
// CONNECT until the bridge has subscribed.
func TestFirstStartKeepsTheEarliestReports(t *testing.T) {
	const reports = 50
	dataDir := t.TempDir()
	if err := identity.Add(filepath.Join(dataDir, "devices.json"), "dev-early", "dev-early-password", 4); err != nil {
		t.Fatal(err)
	}
	o := newOneProcess(t, dataDir)
	env, natsPort, mqttPort := o.env, o.natsPort, o.mqttPort

	// The device tries to connect every 2 ms from before otawatch starts.
	acked := make(chan int, 1)
	failed := make(chan error, 1)
	go func() {
		opts := mqtt.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)).SetClientID("dev-early").
			SetUsername("dev-early").SetPassword("dev-early-password").SetConnectTimeout(20 * time.Second).SetAutoReconnect(false)
		var dev mqtt.Client
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			dev = mqtt.NewClient(opts)
			tok := dev.Connect()
			if tok.Wait() && tok.Error() == nil {
				break
			}
			if time.Now().After(deadline) {
				failed <- fmt.Errorf("device never connected: %v", tok.Error())
				return
			}
		}
		defer dev.Disconnect(100)
		at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
		for i := 0; i < reports; i++ {
			payload := fmt.Sprintf(`{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":%q,"status":"in_progress","checksum":"sha256:abc","previousVersion":"4.1.5"}}}}`,
				at.Add(time.Duration(i)*time.Second).Format(time.RFC3339))
			tok := dev.Publish(events.ReportTopic("gw", "dev-early"), 1, false, payload)
			if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
				failed <- fmt.Errorf("report %d not acknowledged: %v", i, tok.Error())
				return
			}
		}
		acked <- reports
	}()

	p := startOtawatch(t, env, "run", "bridge")
	select {
	case n := <-acked:
		t.Logf("the device had %d reports acknowledged", n)
	case err := <-failed:
		t.Fatalf("%v\n%s", err, p.stderr)
	case <-time.After(90 * time.Second):
		t.Fatalf("the device did not finish reporting\n%s", p.stderr)
	}

	pw, err := os.ReadFile(filepath.Join(dataDir, "credentials", events.IdentityCLI))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), nats.UserInfo(events.IdentityCLI, strings.TrimSpace(string(pw))))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stored := testutil.StreamMsgs(js, events.StreamShadow)
	for deadline := time.Now().Add(30 * time.Second); stored < reports && time.Now().Before(deadline); stored = testutil.StreamMsgs(js, events.StreamShadow) {
		time.Sleep(20 * time.Millisecond)
	}
	if stored != reports {
		t.Fatalf("SHADOW holds %d of the %d acknowledged reports\n%s", stored, reports, p.stderr)
	}
	if m := regexp.MustCompile(`MQTT listener admits devices.*held_for=(\S+)`).FindStringSubmatch(p.stderr.String()); m != nil {
		t.Logf("devices were held for %s after the embedded server started", m[1])
	}
	if err := p.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.stderr)
	}
}
