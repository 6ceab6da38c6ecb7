package simulator

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// rawPublish is the baseline: conns paho clients publishing n pre-built
// QoS 1 reports as fast as the broker acknowledges, window in flight at
// most, no simulation. It returns reports per second.
func rawPublish(b *testing.B, url string, conns, n, window int) float64 {
	b.Helper()
	payload := encodeReport(events.Firmware{Version: "4.2.0", Timestamp: time.Now().UTC(), Status: statusInProgress,
		Checksum: Checksum("4.2.0"), PreviousVersion: "4.1.5"})
	clients := make([]mqtt.Client, conns)
	for i := range clients {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("raw-" + strconv.Itoa(i)).SetOrderMatters(false))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("raw connect: %v", tok.Error())
		}
		defer c.Disconnect(100)
		clients[i] = c
	}
	slots := make(chan struct{}, window)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		slots <- struct{}{}
		wg.Add(1)
		tok := clients[i%conns].Publish(events.ReportTopic("sensor", DeviceID(i%1500+1, 5)), 1, false, payload)
		go func() {
			tok.Wait()
			if tok.Error() != nil {
				b.Errorf("raw publish: %v", tok.Error())
			}
			<-slots
			wg.Done()
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkStandalone measures a standalone fleet of 1500 devices
// publishing as fast as the broker acknowledges, against the raw paho
// baseline on the same broker in the same run, and prints both and their
// ratio. Nothing subscribes: this is the simulator's own ceiling.
//
//	go test -run '^$' -bench Standalone -benchtime 1x ./services/simulator
func BenchmarkStandalone(b *testing.B) {
	const reports = 200000
	for _, br := range []struct {
		name  string
		start func(b *testing.B) string
	}{
		{"mosquitto", func(b *testing.B) string { return testutil.StartMosquitto(b).URL }},
		{"nats-mqtt", func(b *testing.B) string {
			return "tcp://" + testutil.StartJetStream(b, testutil.JetStreamOptions{MQTT: true, NoStreams: true}).Server.MQTTAddr()
		}},
	} {
		for _, conns := range []int{0, 8} {
			b.Run(fmt.Sprintf("%s/connections=%d", br.name, conns), func(b *testing.B) {
				url := br.start(b)
				for i := 0; i < b.N; i++ {
					rawConns := conns
					if rawConns == 0 {
						rawConns = 1500
					}
					raw := rawPublish(b, url, rawConns, reports, DefaultMaxInFlight)
					f, err := NewFleet(FleetConfig{
						Broker: url, Devices: 1500, Connections: conns, Count: reports, Rate: 0,
						TimeScale: 1e6, Seed: 1, FailureRate: 0.04, ClientIDPrefix: "bench" + strconv.Itoa(i),
					}, nil)
					if err != nil {
						b.Fatal(err)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
					t0 := time.Now()
					// The clock runs from Ready to the last PUBACK, polled.
					timing := make(chan [2]time.Duration, 1)
					go func() {
						<-f.Ready()
						ready := time.Since(t0)
						for f.Stats().Sent()+f.Stats().PublishErrors < reports && ctx.Err() == nil {
							time.Sleep(2 * time.Millisecond)
						}
						timing <- [2]time.Duration{ready, time.Since(t0) - ready}
					}()
					if err := f.Run(ctx); err != nil || ctx.Err() != nil {
						cancel()
						b.Fatalf("run: %v %v", err, ctx.Err())
					}
					cancel()
					tm := <-timing
					setup := tm[0]
					rate := float64(reports) / tm[1].Seconds()
					if s := f.Stats(); s.Sent() != reports || s.PublishErrors != 0 {
						b.Fatalf("sent %d of %d, %d errors", s.Sent(), reports, s.PublishErrors)
					}
					b.ReportMetric(rate, "reports/s")
					b.ReportMetric(raw, "raw/s")
					b.ReportMetric(rate/raw, "ratio")
					b.Logf("%s: simulator %.0f reports/s, raw paho %.0f msg/s, ratio %.2f; %d connections set up in %s",
						b.Name(), rate, raw, rate/raw, len(f.conns), setup.Round(time.Millisecond))
				}
			})
		}
	}
}

// BenchmarkFleetUpdate measures a fleet-mode fleet end to end on one
// broker: connect and subscribe every device, publish a retained desired
// state to each (one publisher, as the rollout service), and wait until
// every device has reported in_progress and its outcome. It prints the
// connection setup time and the report rate of the update phase.
//
//	go test -run '^$' -bench FleetUpdate -benchtime 1x ./services/simulator
func BenchmarkFleetUpdate(b *testing.B) {
	for _, br := range []struct {
		name  string
		start func(b *testing.B) string
	}{
		{"mosquitto", func(b *testing.B) string { return testutil.StartMosquitto(b).URL }},
		{"nats-mqtt", func(b *testing.B) string {
			return "tcp://" + testutil.StartJetStream(b, testutil.JetStreamOptions{MQTT: true, NoStreams: true}).Server.MQTTAddr()
		}},
	} {
		for _, sz := range []struct {
			devices, conns int
			wildcard       bool
		}{{1500, 0, false}, {5000, 0, false}, {20000, 400, false}, {20000, 16, true}} {
			b.Run(fmt.Sprintf("%s/devices=%d/connections=%d/wildcard=%v", br.name, sz.devices, sz.conns, sz.wildcard), func(b *testing.B) {
				url := br.start(b)
				for i := 0; i < b.N; i++ {
					f, err := NewFleet(FleetConfig{
						Broker: url, Mode: ModeFleet, Devices: sz.devices, Connections: sz.conns, Wildcard: sz.wildcard,
						TimeScale: 1000, DurationMean: 10 * time.Second, FailureRate: 0.05, Seed: 1,
						ClientIDPrefix: "bench" + strconv.Itoa(i),
					}, nil)
					if err != nil {
						b.Fatal(err)
					}
					ctx, cancel := context.WithCancel(context.Background())
					done := make(chan error, 1)
					t0 := time.Now()
					go func() { done <- f.Run(ctx) }()
					select {
					case <-f.Ready():
					case err := <-done:
						b.Fatalf("fleet stopped: %v", err)
					case <-time.After(5 * time.Minute):
						b.Fatal("fleet not connected in 5 min")
					}
					setup := time.Since(t0)
					pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("bench-rollout-" + strconv.Itoa(i)).SetOrderMatters(false))
					if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
						b.Fatal(tok.Error())
					}
					delta := []byte(`{"state":{"firmware":{"version":"4.2.0","checksum":"` + Checksum("4.2.0") + `","url":"https://fw/4.2.0","jobId":"bench"}},"timestamp":"2026-11-25T11:00:00Z"}`)
					t1 := time.Now()
					var last mqtt.Token
					for _, id := range f.DeviceIDs() {
						last = pub.Publish(events.DeltaTopic(DefaultType, id), 1, true, delta)
					}
					last.Wait()
					want := int64(2 * sz.devices)
					deadline := time.Now().Add(2 * time.Minute)
					for f.Stats().Sent() < want && time.Now().Before(deadline) {
						time.Sleep(5 * time.Millisecond)
					}
					took := time.Since(t1)
					s := f.Stats()
					pub.Disconnect(100)
					cancel()
					<-done
					if s.Sent() < want {
						// A broker past its limit: say so, with what it did.
						b.Logf("%s: NOT DONE after %s: %d of %d reports; %s", b.Name(), took.Round(time.Second), s.Sent(), want, s)
						b.ReportMetric(float64(s.Sent())/float64(want), "done")
						continue
					}
					if s.Installs != int64(sz.devices) {
						b.Fatalf("%d installs for %d devices: %s", s.Installs, sz.devices, s)
					}
					b.ReportMetric(setup.Seconds(), "setup-s")
					b.ReportMetric(float64(want)/took.Seconds(), "reports/s")
					b.Logf("%s: %d devices on %d connections set up in %s; %d desired states -> %d reports in %s (%.0f reports/s)",
						b.Name(), sz.devices, len(f.conns), setup.Round(time.Millisecond), sz.devices, want, took.Round(time.Millisecond), float64(want)/took.Seconds())
				}
			})
		}
	}
}
