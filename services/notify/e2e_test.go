package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/alerting"
	"github.com/otawatch/otawatch/services/bridge"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/notify/pagerduty"
	"github.com/otawatch/otawatch/services/notify/webhook"
)

// receiver is a receivers entry of these tests: one real receiver.
type receiver struct {
	name, kind string
	build      func() (notify.Notifier, error)
}

func (r *receiver) ReceiverName() string   { return r.name }
func (r *receiver) ReceiverKind() string   { return r.kind }
func (r *receiver) SetDefaults()           {}
func (r *receiver) Validate(conf.Problems) {}
func (r *receiver) Notifier(*slog.Logger) (notify.Notifier, error) {
	return r.build()
}

func dur(d time.Duration) *time.Duration { return &d }

// pipeline is the whole path in one process: the embedded server with its
// MQTT listener, the bridge, alerting (default rules, wall-clock ticks)
// and notify.
type pipeline struct {
	js     *testutil.JetStream
	broker string
	notify *notify.Service
}

func startPipeline(tb testing.TB, cfg notify.Config[*receiver], preloadDevices int) *pipeline {
	tb.Helper()
	js := testutil.StartJetStream(tb, testutil.JetStreamOptions{MQTT: true})
	p := &pipeline{js: js, broker: "tcp://" + js.Server.MQTTAddr()}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	deps := svc.Deps{Log: log, NC: js.NC, JS: js.JS, Streams: events.StreamOptions{Replicas: 1}}
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan error
	tb.Cleanup(func() {
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
	if preloadDevices > 0 {
		testutil.PreloadReports(tb, js.JS, preloadDevices)
	}
	al, err := alerting.New(alerting.Config{}, deps)
	if err != nil {
		tb.Fatal(err)
	}
	start(al)
	testutil.Eventually(tb, 60*time.Second, func() bool { st := al.Status(); return st.CaughtUp && st.Devices >= preloadDevices },
		"alerting did not load the fleet")
	p.notify, err = notify.New(cfg, deps)
	if err != nil {
		tb.Fatal(err)
	}
	start(p.notify)
	testutil.Eventually(tb, 30*time.Second, func() bool { return p.notify.Status().CaughtUp }, "notify did not catch up")
	br, err := bridge.New(bridge.Config{Broker: p.broker, ClientID: "e2e-bridge"}, deps)
	if err != nil {
		tb.Fatal(err)
	}
	start(br)
	return p
}

// A device reports failed: one PagerDuty trigger. It reports completed:
// one resolve with the same dedup_key, and nothing more.
func TestPagerDutyEndToEnd(t *testing.T) {
	var mu sync.Mutex
	var got []pagerduty.Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev pagerduty.Event
		if r.Method != http.MethodPost || r.URL.Path != "/v2/enqueue" || json.NewDecoder(r.Body).Decode(&ev) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"status":"success","message":"Event processed","dedup_key":"` + ev.DedupKey + `"}`))
	}))
	defer srv.Close()
	keyFile := filepath.Join(t.TempDir(), "pd.key")
	if err := os.WriteFile(keyFile, []byte("R0UTINGKEY0123456789012345678901\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pd := &receiver{name: "oncall", kind: notify.KindPagerDuty, build: func() (notify.Notifier, error) {
		return pagerduty.New(pagerduty.Config{URL: srv.URL, RoutingKeyFile: keyFile})
	}}
	// The seed's routing (critical -> the pagerduty receiver), quick.
	cfg := notify.Config[*receiver]{Receivers: []*receiver{pd},
		Route: &notify.Route{GroupWait: dur(0), GroupInterval: dur(100 * time.Millisecond)}}
	p := startPipeline(t, cfg, 0)
	dev := newDevice(t, p.broker)
	// The bridge subscribes after it starts: a report goes through once
	// it has.
	testutil.Eventually(t, 30*time.Second, func() bool {
		dev.publish(t, "gw", "warm", events.StatusCompleted)
		time.Sleep(100 * time.Millisecond)
		return testutil.StreamMsgs(p.js.JS, events.StreamShadow) > 0
	}, "the bridge stored no report")
	failedFor := func() []pagerduty.Event {
		mu.Lock()
		defer mu.Unlock()
		var key string
		for _, ev := range got {
			if ev.EventAction == pagerduty.ActionTrigger && ev.Payload != nil && ev.Payload.Class == "device-failed" {
				key = ev.DedupKey
			}
		}
		var out []pagerduty.Event
		for _, ev := range got {
			if key != "" && ev.DedupKey == key {
				out = append(out, ev)
			}
		}
		return out
	}

	dev.publish(t, "gw", "d1", events.StatusFailed)
	testutil.Eventually(t, 30*time.Second, func() bool { return len(failedFor()) == 1 }, "no trigger for the failed device: %+v %+v", &got, p.notify.Status())
	trig := failedFor()[0]
	if trig.RoutingKey != "R0UTINGKEY0123456789012345678901" || trig.Payload.Severity != "critical" ||
		fmt.Sprint(trig.Payload.CustomDetails["devices"]) != "[d1]" {
		t.Fatalf("trigger = %+v, payload %+v", trig, trig.Payload)
	}

	dev.publish(t, "gw", "d1", events.StatusCompleted)
	testutil.Eventually(t, 30*time.Second, func() bool { return len(failedFor()) == 2 }, "no resolve after the device completed")
	time.Sleep(500 * time.Millisecond) // several group_intervals: nothing more may come
	evs := failedFor()
	if len(evs) != 2 || evs[1].EventAction != pagerduty.ActionResolve || evs[1].DedupKey != trig.DedupKey {
		t.Fatalf("events for the group: %+v, want one trigger then one resolve with dedup_key %s", evs, trig.DedupKey)
	}
}

// 200 devices failing together (one rule, job and wave: one group) are
// one PagerDuty trigger that counts and lists them.
func TestPagerDutyStormEndToEnd(t *testing.T) {
	var mu sync.Mutex
	var got []pagerduty.Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev pagerduty.Event
		if json.NewDecoder(r.Body).Decode(&ev) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	keyFile := filepath.Join(t.TempDir(), "pd.key")
	if err := os.WriteFile(keyFile, []byte("R0UTINGKEY0123456789012345678901\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pd := &receiver{name: "oncall", kind: notify.KindPagerDuty, build: func() (notify.Notifier, error) {
		return pagerduty.New(pagerduty.Config{URL: srv.URL, RoutingKeyFile: keyFile})
	}}
	cfg := notify.Config[*receiver]{Receivers: []*receiver{pd},
		Route: &notify.Route{GroupWait: dur(2 * time.Second), GroupInterval: dur(time.Minute)}}
	p := startPipeline(t, cfg, 0)
	dev := newDevice(t, p.broker)
	testutil.Eventually(t, 30*time.Second, func() bool {
		dev.publish(t, "gw", "warm", events.StatusCompleted)
		time.Sleep(100 * time.Millisecond)
		return testutil.StreamMsgs(p.js.JS, events.StreamShadow) > 0
	}, "the bridge stored no report")
	const n = 200
	for i := 0; i < n; i++ {
		dev.publish(t, "gw", fmt.Sprintf("d%03d", i), events.StatusFailed)
	}
	triggers := func() []pagerduty.Event {
		mu.Lock()
		defer mu.Unlock()
		var out []pagerduty.Event
		for _, ev := range got {
			if ev.EventAction == pagerduty.ActionTrigger && ev.Payload != nil && ev.Payload.Class == "device-failed" {
				out = append(out, ev)
			}
		}
		return out
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return len(triggers()) >= 1 }, "no trigger for the storm")
	time.Sleep(time.Second) // nothing more may come before group_interval
	tr := triggers()
	if len(tr) != 1 {
		t.Fatalf("%d device-failed triggers for %d failures in one group, want 1", len(tr), n)
	}
	if total := tr[0].Payload.CustomDetails["devices_total"]; fmt.Sprint(total) != fmt.Sprint(n) {
		t.Fatalf("the page counts %v devices, want %d (summary %q)", total, n, tr[0].Payload.Summary)
	}
	t.Logf("summary: %s", tr[0].Payload.Summary)
}

// BenchmarkNotifyLatency measures, in one run, a device's MQTT publish of
// status failed -> the device-failed alert on ALERTS -> the webhook test
// server receiving the notification, with the whole pipeline in one
// process (bridge, alerting with the default rules over a fleet of 10,000
// devices, notify with group_wait 0 and one group per alert). One sample
// per iteration, one device at a time.
//
//	go test -run x -bench NotifyLatency -benchtime 1000x ./services/notify
func BenchmarkNotifyLatency(b *testing.B) {
	seen := make(chan string, 1024)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var pl webhook.Payload
		if err := json.NewDecoder(r.Body).Decode(&pl); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		if pl.Status == notify.StatusFiring {
			for _, a := range pl.Alerts {
				if a.RuleID == "device-failed" {
					seen <- a.DeviceID
				}
			}
		}
	}))
	defer srv.Close()
	hook := &receiver{name: "hooks", kind: notify.KindWebhook, build: func() (notify.Notifier, error) {
		return webhook.New(webhook.Config{URL: srv.URL + "/hook"})
	}}
	cfg := notify.Config[*receiver]{Receivers: []*receiver{hook},
		Route:        &notify.Route{Receiver: "hooks", GroupBy: []string{"..."}, GroupWait: dur(0)},
		InhibitRules: []notify.InhibitRule{}}
	p := startPipeline(b, cfg, 10000)

	alerts := make(chan string, 1024)
	ctx := context.Background()
	cons, err := p.js.JS.OrderedConsumer(ctx, events.StreamAlerts, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.AlertSubject(events.AlertRaised, "critical", "device-failed")},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		ev, err := events.Decode(m.Data())
		if err != nil {
			return
		}
		var a events.AlertData
		if ev.DecodeData(&a) == nil {
			alerts <- a.DeviceID
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	dev := newDevice(b, p.broker)
	testutil.Eventually(b, 30*time.Second, func() bool {
		dev.publish(b, "t", "warm", events.StatusFailed)
		select {
		case <-seen:
			return true
		case <-time.After(300 * time.Millisecond):
			return false
		}
	}, "no notification for the warm-up device")
	time.Sleep(200 * time.Millisecond)
	testutil.Drain(seen)
	testutil.Drain(alerts)

	toAlert := make([]time.Duration, 0, b.N)
	toNotify := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("dev-%d", i)
		t := time.Now()
		dev.publish(b, "t", id, events.StatusFailed)
		wait := func(ch chan string) time.Duration {
			for {
				select {
				case got := <-ch:
					if got == id {
						return time.Since(t)
					}
				case <-time.After(10 * time.Second):
					b.Fatalf("nothing for %s after 10s", id)
				}
			}
		}
		toAlert = append(toAlert, wait(alerts))
		toNotify = append(toNotify, wait(seen))
	}
	b.StopTimer()
	pct := func(ds []time.Duration, q float64) float64 {
		s := append([]time.Duration(nil), ds...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(toNotify, 0.50), "notify_p50_ms")
	b.ReportMetric(pct(toNotify, 0.99), "notify_p99_ms")
	b.ReportMetric(pct(toNotify, 1), "notify_max_ms")
	b.ReportMetric(pct(toAlert, 0.50), "alert_p50_ms")
	b.ReportMetric(pct(toAlert, 0.99), "alert_p99_ms")
}

// device is one MQTT client publishing reports for any device id.
type device struct{ c mqtt.Client }

func newDevice(tb testing.TB, broker string) *device {
	tb.Helper()
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID("e2e-device").SetCleanSession(true)
	c := mqtt.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		tb.Fatalf("connect device: %v", t.Error())
	}
	tb.Cleanup(func() { c.Disconnect(100) })
	return &device{c: c}
}

func (d *device) publish(tb testing.TB, typ, id, status string) {
	tb.Helper()
	code := "null"
	if status == events.StatusFailed {
		code = `"E_FLASH"`
	}
	payload := fmt.Sprintf(`{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":%q,"status":%q,"checksum":"sha256:ab","previousVersion":"4.1.5","updateDuration":42,"errorCode":%s}}}}`,
		time.Now().UTC().Format(time.RFC3339Nano), status, code)
	t := d.c.Publish(events.ReportTopic(typ, id), 1, false, payload)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		tb.Fatalf("publish: %v", t.Error())
	}
}
