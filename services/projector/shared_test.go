package projector

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// TestSharedDurableJobs: two projector instances started on an empty
// stream share the durable consumer, so each is delivered part of SHADOW
// (here: alternate messages, in order), and a report's desired event is
// often the other instance's. Every report still gets the job and wave of
// its device's last desired event before it, as one instance gives it.
func TestSharedDurableJobs(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn := e.conn()
	if _, err := Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	// Both start (and warm) before the fleet reports.
	var instances []*projection
	for range 2 {
		index := newDesiredIndex()
		if _, err := warmDesired(ctx, e.js.JS, index); err != nil {
			t.Fatal(err)
		}
		p := &projection{stream: events.StreamShadow, conn: conn, log: testLogger(t), index: index, js: e.js.JS}
		instances = append(instances, p)
	}
	evs := fleetHistory(7, 300)
	e.publish(evs...)

	cons, err := e.js.JS.OrderedConsumer(ctx, events.StreamShadow, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	fetched, err := cons.Fetch(len(evs), jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	batches := make([][]consume.Item[*item], len(instances))
	write := func(i int) {
		if refused, err := instances[i].write(ctx, batches[i]); err != nil || len(refused) > 0 {
			t.Fatalf("instance %d write: %v (refused %v)", i, err, refused)
		}
		batches[i] = nil
	}
	n := 0
	for m := range fetched.Messages() {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		i := n % len(instances)
		n++
		it, err := instances[i].prepare(consume.Msg{Stream: events.StreamShadow, Seq: md.Sequence.Stream, Subject: m.Subject(), Data: m.Data()})
		if err != nil {
			t.Fatalf("prepare: %v", err)
		}
		batches[i] = append(batches[i], consume.Item[*item]{Value: it})
		if len(batches[i]) == 9 {
			write(i)
		}
	}
	if n != len(evs) {
		t.Fatalf("fetched %d messages, want %d", n, len(evs))
	}
	for i := range instances {
		if len(batches[i]) > 0 {
			write(i)
		}
	}
	checkShadow(t, e, evs)
}
