package simulator

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// presenceLog subscribes to every device's presence topic, as the bridge
// does, and keeps "device word" in arrival order.
type presenceLog struct {
	mu  sync.Mutex
	got []string
}

func watchPresence(t *testing.T, url string) *presenceLog {
	t.Helper()
	l := &presenceLog{}
	handler := func(_ mqtt.Client, m mqtt.Message) {
		_, dev, err := events.ParsePresenceTopic(m.Topic())
		if err != nil {
			t.Errorf("presence topic: %v", err)
			return
		}
		l.mu.Lock()
		l.got = append(l.got, dev+" "+string(m.Payload()))
		l.mu.Unlock()
	}
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID("test-presence").SetCleanSession(true).
		SetOrderMatters(true).SetDefaultPublishHandler(handler)
	cl := mqtt.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("presence watcher connect: %v", tok.Error())
	}
	if tok := cl.Subscribe(events.PresenceTopicFilter, 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("presence watcher subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	return l
}

func (l *presenceLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.got, ", ")
}

func (l *presenceLog) count(word string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, g := range l.got {
		if strings.HasSuffix(g, " "+word) {
			n++
		}
	}
	return n
}

// A fleet-mode device says "online" when it connects; its outage drops
// the connection and the broker publishes its will, "offline"; back, it
// says "online" again. The fleet stopping takes every device offline the
// same way. With NoPresence nothing is said.
func TestFleetPresence(t *testing.T) {
	brokers := []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"mosquitto", func(t *testing.T) string { return testutil.StartMosquitto(t).URL }},
		{"nats-mqtt", func(t *testing.T) string {
			js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: true, NoStreams: true})
			return "tcp://" + js.Server.MQTTAddr()
		}},
	}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			url := b.url(t)
			l := watchPresence(t, url)
			f, err := NewFleet(FleetConfig{Broker: url, Mode: ModeFleet, Devices: 3, Seed: 1}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- f.Run(ctx) }()
			<-f.Ready()
			testutil.Eventually(t, 10*time.Second, func() bool { return l.count("online") == 3 }, "presence: %s", l)
			if s := f.Stats(); s.OnlineSent != 3 {
				t.Errorf("OnlineSent = %d, want 3", s.OnlineSent)
			}

			if err := f.SetOffline("d-00002"); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 10*time.Second, func() bool { return l.count("offline") == 1 }, "no will after the outage: %s", l)
			if err := f.SetOnline("d-00002"); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 10*time.Second, func() bool { return l.count("online") == 4 }, "no online after the outage: %s", l)
			if got := l.String(); !strings.HasSuffix(got, "d-00002 offline, d-00002 online") {
				t.Errorf("presence %s, want d-00002 offline then online last", got)
			}

			cancel()
			if err := <-done; err != nil {
				t.Fatalf("fleet run: %v", err)
			}
			testutil.Eventually(t, 10*time.Second, func() bool { return l.count("offline") == 4 }, "not every device offline after the fleet stopped: %s", l)
		})
	}

	t.Run("off", func(t *testing.T) {
		url := testutil.StartMosquitto(t).URL
		l := watchPresence(t, url)
		f, err := NewFleet(FleetConfig{Broker: url, Mode: ModeFleet, Devices: 2, Seed: 1, NoPresence: true}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		runFleet(t, f)
		if err := f.SetOffline("d-00001"); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 10*time.Second, func() bool { return f.Stats().Offline == 1 }, "outage: %s", f.Stats())
		// A marker published after the outage: once it is here, what the
		// devices or the broker said before it is here too.
		mc := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("test-marker"))
		if tok := mc.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("marker connect: %v", tok.Error())
		}
		defer mc.Disconnect(100)
		if tok := mc.Publish(events.PresenceTopic(DefaultType, "marker"), 1, false, "online"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("marker publish: %v", tok.Error())
		}
		testutil.Eventually(t, 10*time.Second, func() bool { return l.count("online") >= 1 }, "no marker: %s", l)
		if got := l.String(); got != "marker online" || f.Stats().OnlineSent != 0 {
			t.Errorf("presence with NoPresence: %q (online sent %d), want only the marker", got, f.Stats().OnlineSent)
		}
	})
}
