package alerting_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/alerting"
	"github.com/otawatch/otawatch/services/bridge"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// BenchmarkDetectionLatency measures the time from a device's MQTT
// publish (QoS 1) of status failed to the device-failed alert on ALERTS,
// with the whole pipeline in one process: the embedded NATS server and its
// MQTT listener, the bridge, and the alerting service with the default
// rules over a fleet of 10,000 devices (ticks on the wall clock, as in
// production). Each iteration is one sample, one device at a time; the
// baseline, in the same run, is the same MQTT publish to a plain NATS
// subscriber on the report's subject (the broker alone).
//
//	go test -run x -bench DetectionLatency -benchtime 1000x ./services/alerting
func BenchmarkDetectionLatency(b *testing.B) {
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{MQTT: true})
	broker := "tcp://" + js.Server.MQTTAddr()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	deps := svc.Deps{Log: log, NC: js.NC, JS: js.JS, Streams: events.StreamOptions{Replicas: 1}}
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan error
	b.Cleanup(func() {
		cancel()
		for _, d := range done {
			<-d
		}
	})
	start := func(s svc.Service) {
		d := make(chan error, 1)
		done = append(done, d)
		go func() { d <- s.Run(ctx) }()
	}

	// The fleet the rules see: 10,000 devices that completed an update.
	testutil.PreloadReports(b, js.JS, 10000)
	al, err := alerting.New(alerting.Config{}, deps)
	if err != nil {
		b.Fatal(err)
	}
	start(al)
	testutil.Eventually(b, 60*time.Second, func() bool { st := al.Status(); return st.CaughtUp && st.Devices >= 10000 }, "alerting did not load the fleet")
	br, err := bridge.New(bridge.Config{Broker: broker, ClientID: "bench-bridge"}, deps)
	if err != nil {
		b.Fatal(err)
	}
	start(br)

	// ALERTS as a consumer sees it: stored, then delivered.
	alerts := make(chan string, 1024)
	cons, err := js.JS.OrderedConsumer(ctx, events.StreamAlerts, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.AlertSubject(events.AlertRaised, "critical", "device-failed")},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var ev events.Event
		if json.Unmarshal(m.Data(), &ev) == nil {
			var a events.AlertData
			if ev.DecodeData(&a) == nil {
				alerts <- a.DeviceID
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	dev := newDevice(b, broker)
	// Warm up: the bridge's subscription is in place once a report goes
	// through.
	testutil.Eventually(b, 30*time.Second, func() bool {
		dev.report(b, "warm", events.StatusFailed)
		select {
		case <-alerts:
			return true
		case <-time.After(200 * time.Millisecond):
			return false
		}
	}, "no alert for the warm-up device")
	testutil.Drain(alerts)

	// Baseline: the same publish to a plain subscriber (NATS maps the
	// topic's / to .).
	raw := make(chan struct{}, 16)
	sub, err := js.NC.Subscribe("iot-2.type.lat.id.*.update.shadow", func(*nats.Msg) { raw <- struct{}{} })
	if err != nil {
		b.Fatal(err)
	}
	// The server has the subscription before the device publishes on its
	// own connection (without it, 1 run in 3 lost the first publish).
	if err := js.NC.Flush(); err != nil {
		b.Fatal(err)
	}
	base := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		t := time.Now()
		dev.publish(b, "lat", fmt.Sprintf("raw-%d", i), events.StatusCompleted)
		select {
		case <-raw:
		case <-time.After(10 * time.Second):
			b.Fatalf("raw publish %d not delivered after 10s", i) // fail, do not hang
		}
		base = append(base, time.Since(t))
	}
	_ = sub.Unsubscribe()
	// The broker also delivered those to the bridge: let them settle.
	time.Sleep(200 * time.Millisecond)

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("dev-%d", i)
		t := time.Now()
		dev.report(b, id, events.StatusFailed)
		for got := ""; got != id; {
			select {
			case got = <-alerts:
			case <-time.After(10 * time.Second):
				b.Fatalf("no alert for %s after 10s", id)
			}
		}
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	p := func(ds []time.Duration, q float64) float64 {
		s := append([]time.Duration(nil), ds...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(p(lat, 0.50), "p50_ms")
	b.ReportMetric(p(lat, 0.99), "p99_ms")
	b.ReportMetric(p(lat, 1), "max_ms")
	b.ReportMetric(p(base, 0.50), "raw_p50_ms")
	b.ReportMetric(p(base, 0.99), "raw_p99_ms")
	b.ReportMetric(p(lat, 0.99)/p(base, 0.99), "x_raw_p99")
}

// device is one MQTT client publishing reports for any device id.
type device struct{ c mqtt.Client }

func newDevice(b *testing.B, broker string) *device {
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID("bench-device").SetCleanSession(true)
	c := mqtt.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatalf("connect device: %v", t.Error())
	}
	b.Cleanup(func() { c.Disconnect(100) })
	return &device{c: c}
}

func (d *device) report(b *testing.B, id, status string) { d.publish(b, "t", id, status) }

func (d *device) publish(b *testing.B, typ, id, status string) {
	code := "null"
	if status == events.StatusFailed {
		code = `"E_FLASH"`
	}
	payload := fmt.Sprintf(`{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":%q,"status":%q,"checksum":"sha256:ab","previousVersion":"4.1.5","updateDuration":42,"errorCode":%s}}}}`,
		time.Now().UTC().Format(time.RFC3339Nano), status, code)
	t := d.c.Publish(events.ReportTopic(typ, id), 1, false, payload)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatalf("publish: %v", t.Error())
	}
}
