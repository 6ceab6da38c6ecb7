package rollout

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/natsd"
)

// TestCommandActorIsTheCaller runs the service on a server with
// authentication on, as otawatch run has it: a command from the CLI's
// identity is recorded as cli:USER, an actor named in the body is not
// taken, and a publish without a reply subject changes nothing.
func TestCommandActorIsTheCaller(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{
		Auth: &natsd.Auth{Passwords: map[string]string{events.IdentityServices: "svc-pw", events.IdentityCLI: "cli-pw"}},
		User: events.IdentityServices, Password: "svc-pw",
	})
	cfg := Config{Broker: "tcp://127.0.0.1:1", Tick: 20 * time.Millisecond, LeaseTTL: time.Second}
	cfg.SetDefaults()
	s, err := New(cfg, svc.Deps{Log: testLog(), NC: js.NC, JS: js.JS, Streams: events.StreamOptions{Replicas: 1}, Health: svc.NewHealth()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	cli, err := nats.Connect(js.Server.ClientURL(), nats.UserInfo(events.IdentityCLI, "cli-pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cli.Close)
	request := func(cmd string, req events.RolloutRequest) (*events.RolloutReply, error) {
		rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer rcancel()
		return events.RolloutRequestDo(rctx, cli, cmd, req)
	}
	testutil.Eventually(t, 20*time.Second, func() bool { _, err := request("list", events.RolloutRequest{}); return err == nil },
		"the rollout service never answered")

	spec := &events.RolloutSpec{ID: "who", Target: target(), Devices: []string{"sensor/d-1"}}
	if _, err := request(CmdCreate, events.RolloutRequest{Spec: spec, Actor: "alice"}); err != nil {
		t.Fatalf("create: %v", err)
	}

	// Not a request: dropped.
	if err := cli.Publish(events.RolloutCommandSubject(CmdAbort, events.IdentityCLI), []byte(`{"jobId":"who"}`)); err != nil {
		t.Fatal(err)
	}
	// An actor in the body is refused or ignored, never recorded.
	m := nats.NewMsg(events.RolloutCommandSubject(CmdStart, events.IdentityCLI))
	m.Data = []byte(`{"jobId":"who","actor":"mallory"}`)
	if _, err := cli.RequestMsg(m, 15*time.Second); err != nil {
		t.Fatalf("start: %v", err)
	}
	if _, err := request("show", events.RolloutRequest{JobID: "who"}); err != nil {
		t.Fatal(err)
	}

	var sawCreated bool
	for _, raw := range js.Events(t, events.StreamRollout) {
		ev, err := events.Decode(raw.Data)
		if err != nil {
			t.Fatal(err)
		}
		var d events.RolloutData
		if err := ev.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		switch {
		case ev.Type == events.TypeRolloutJobCreated:
			sawCreated = true
			if d.Actor != "cli:alice" {
				t.Errorf("job_created by %q, want cli:alice", d.Actor)
			}
		case ev.Type == events.TypeRolloutJobAborted:
			t.Errorf("a publish without a reply subject aborted the job")
		case strings.Contains(d.Actor, "mallory"):
			t.Errorf("%s recorded the body's actor %q", ev.Type, d.Actor)
		}
	}
	if !sawCreated {
		t.Error("no job_created event")
	}
}
