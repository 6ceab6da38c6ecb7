package notify

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// BenchmarkCatchUp measures what an active turn costs before it decides
// anything: reading ALERTS from its start. The log holds 10,000 device
// alerts raised and resolved (20,000 events) and 1,000 still raised;
// each iteration is one start, to caught up.
//
//	go test -run x -bench CatchUp -benchtime 5x ./services/notify
func BenchmarkCatchUp(b *testing.B) {
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	clock := testutil.NewFakeClock(t0)
	var n int
	pub := func(a events.AlertData) {
		at := a.StartsAt
		if a.EndsAt != nil {
			at = *a.EndsAt
		}
		ev, err := events.New(events.AlertEventID(a.Key, a.Severity, a.StartsAt, a.State), events.SourceAlerting,
			events.AlertEventType(a.State), a.Key, at, a)
		if err != nil {
			b.Fatal(err)
		}
		data, _ := ev.Marshal()
		msg := nats.NewMsg(events.AlertSubject(a.State, a.Severity, a.RuleID))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		if _, err := js.JS.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
		n++
	}
	for i := 0; i < 11000; i++ {
		a := deviceAlert(fmt.Sprintf("d%05d", i), fmt.Sprintf("job%d", i%10), t0.Add(time.Duration(i)*time.Millisecond))
		pub(a)
		if i < 10000 {
			pub(resolved(a, a.StartsAt.Add(time.Minute)))
		}
	}
	select {
	case <-js.JS.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		b.Fatal("publish did not complete")
	}
	cfg := Config[*testReceiver]{
		Receivers: []*testReceiver{{Name: "pd", n: &fakeNotifier{clock: clock}}},
		Route:     &Route{Receiver: "pd", GroupBy: []string{LabelDevice}},
		LeaseTTL:  2 * time.Second, LeaseBucket: "notify_lease_bench",
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := New(cfg, svc.Deps{JS: js.JS, Clock: clock})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		for !s.Status().CaughtUp {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		if st := s.Status(); st.Alerts != 1000 {
			b.Fatalf("holds %d alerts, want the 1000 raised", st.Alerts)
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
