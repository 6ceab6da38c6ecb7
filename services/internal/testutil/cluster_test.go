package testutil

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The cluster from the shipped configuration keeps an R3 stream writable
// through its leader's death: the stream elects another leader, every
// acknowledged message survives, and the killed node catches up when it
// comes back.
func TestClusterLeaderKill(t *testing.T) {
	c := StartCluster(t)
	_, js := c.Connect(t, ClusterUserServices)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			id := fmt.Sprintf("m%d", i)
			for {
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(pctx, "t.x", []byte(id), jetstream.WithMsgID(id))
				pcancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("publish %s: %v", id, err)
				}
			}
		}
	}
	publish(0, 100)
	leader := c.StreamLeader(t, "T")
	c.Kill(t, leader)
	publish(100, 200)
	if next := c.StreamLeader(t, "T"); next == leader {
		t.Fatalf("stream leader is still the killed node %s", next)
	}
	if n := StreamMsgs(js, "T"); n != 200 {
		t.Fatalf("stream holds %d messages, want 200", n)
	}
	c.Restart(t, leader)
	Eventually(t, 60*time.Second, func() bool { return StreamCurrent(js, "T") == nil }, "the restarted node did not catch up: %v", StreamCurrent(js, "T"))
}
