package lease

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/services/internal/testutil"
)

func TestLeaseOneHolderAndTakeover(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{NoStreams: true})
	open := func(name string) (*Lease, *nats.Conn) {
		nc, err := nats.Connect(js.Server.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		jsx, _ := jetstream.New(nc)
		l, err := Open(context.Background(), jsx, Config{Bucket: "lease_test", Key: "k", Holder: name, What: "test", TTL: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return l, nc
	}
	run := func(l *Lease) context.CancelFunc {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		return cancel
	}
	a, anc := open("a")
	b, _ := open("b")
	run(a)
	testutil.Eventually(t, 5*time.Second, a.Held, "a never took the lease")
	run(b)

	// Watch the safety property the whole time: never two holders.
	stop := make(chan struct{})
	both := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if a.Held() && b.Held() {
				select {
				case both <- struct{}{}:
				default:
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	time.Sleep(1500 * time.Millisecond) // longer than the TTL: a renews, b waits
	if !a.Held() || b.Held() {
		t.Fatalf("while a renews: a held %v, b held %v", a.Held(), b.Held())
	}
	// a dies without releasing: b takes over once the key expires, and a,
	// unable to renew, steps down before that.
	anc.Close()
	testutil.Eventually(t, 10*time.Second, b.Held, "b never took over")
	if a.Held() {
		t.Error("a still believes it holds the lease")
	}
	select {
	case <-both:
		t.Fatal("a and b held the lease at the same time")
	default:
	}
}

func TestLeaseReleasedOnCleanStop(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{NoStreams: true})
	clock := testutil.NewFakeClock(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	// A long TTL: a takeover within the test can only come from a release.
	a, err := Open(context.Background(), js.JS, Config{Bucket: "lease_test", Key: "k", Holder: "a", What: "test", TTL: time.Hour, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), js.JS, Config{Bucket: "lease_test", Key: "k", Holder: "b", What: "test", TTL: time.Hour, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	testutil.Eventually(t, 5*time.Second, a.Held, "a never took the lease")

	// The holder's own timer: without a renewal for two thirds of the TTL,
	// it no longer drives, whatever the server thinks.
	clock.Advance(40 * time.Minute)
	if a.Held() {
		t.Error("a holds the lease 40 min after its last renewal (TTL 1h)")
	}
	clock.Advance(-40 * time.Minute)

	b.attempt(context.Background())
	if b.Held() {
		t.Fatal("b took a held lease")
	}
	cancel()
	<-done
	b.attempt(context.Background())
	if !b.Held() {
		t.Fatal("b could not take the lease a released")
	}
}

// TestServeOneActiveAtATime: two instances Serve one lease. One is active,
// the other stands by; the active one's context ends when its lease is
// taken, and never are both active. When the first stops, the second
// becomes active at once (a clean stop releases).
func TestServeOneActiveAtATime(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{NoStreams: true})
	var active atomic.Int32
	var both atomic.Bool
	serve := func(name string) (context.CancelFunc, *atomic.Int32, *atomic.Int32, func() error) {
		l, err := Open(context.Background(), js.JS, Config{Bucket: "serve_test", Key: "k", Holder: name, What: "test", TTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var turns, standbys atomic.Int32
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		var serveErr error
		go func() {
			defer close(done)
			serveErr = l.Serve(ctx, func() { standbys.Add(1) }, func(ctx context.Context, lost func() bool) error {
				turns.Add(1)
				if active.Add(1) > 1 {
					both.Store(true)
				}
				<-ctx.Done()
				active.Add(-1)
				return nil
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
		return cancel, &turns, &standbys, func() error { <-done; return serveErr }
	}
	stopA, aTurns, _, aDone := serve("a")
	testutil.Eventually(t, 5*time.Second, func() bool { return aTurns.Load() == 1 }, "a never became active")
	_, bTurns, bStandbys, _ := serve("b")
	testutil.Eventually(t, 5*time.Second, func() bool { return bStandbys.Load() == 1 }, "b never stood by")
	time.Sleep(2500 * time.Millisecond) // over a TTL: a renews, b stays standing by
	if bTurns.Load() != 0 {
		t.Fatal("b became active while a held the lease")
	}
	stopA()
	if err := aDone(); err != nil {
		t.Fatalf("a's Serve: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return bTurns.Load() == 1 }, "b did not take over")
	if both.Load() {
		t.Fatal("a and b were active at the same time")
	}
}

// TestLeaseResumedAfterRestartOnSameDataDir: a process holding a lease
// dies (no release; the kernel drops its claim on the data dir). Restarted
// on the same data dir, it takes the lease over at once, although the key
// has most of its TTL (an hour) left. A holder of another data dir, and a
// second lease of the restarted process itself, do not take it.
func TestLeaseResumedAfterRestartOnSameDataDir(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{NoStreams: true})
	dir := t.TempDir()
	ctx := context.Background()
	open := func(in *Instance, holder string) *Lease {
		t.Helper()
		l, err := Open(WithInstance(ctx, in), js.JS, Config{Bucket: "resume_test", Key: "k", Holder: holder, What: "test", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	claim := func(dir string) *Instance {
		t.Helper()
		in, err := ClaimInstance(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close() })
		return in
	}

	first := claim(dir)
	if _, err := ClaimInstance(dir); !errors.Is(err, ErrInstanceInUse) {
		t.Fatalf("a second claim of a claimed data dir: %v, want ErrInstanceInUse", err)
	}
	dead := open(first, "first")
	dead.attempt(ctx)
	if !dead.Held() {
		t.Fatal("the first run never took the lease")
	}
	first.Close() // the process dies: its claim goes, its key stays

	other := open(claim(t.TempDir()), "other-data-dir")
	other.attempt(ctx)
	if other.Held() {
		t.Fatal("a holder of another data dir took a live key")
	}
	plain := open(nil, "no-instance")
	plain.attempt(ctx)
	if plain.Held() {
		t.Fatal("a holder without an instance took a live key")
	}

	second := claim(dir)
	if second.ID() != first.ID() {
		t.Fatalf("restart claimed instance %q, the data dir's is %q", second.ID(), first.ID())
	}
	restarted := open(second, "restarted")
	restarted.attempt(ctx)
	if !restarted.Held() {
		t.Fatal("the restarted process did not resume its earlier run's lease")
	}
	sibling := open(second, "sibling")
	sibling.attempt(ctx)
	if sibling.Held() {
		t.Fatal("a second lease of the same run took the key its sibling holds")
	}
	// The earlier run's holder, were it alive after all, loses its next
	// renewal: never two holders.
	dead.attempt(ctx)
	if dead.Held() {
		t.Fatal("the earlier run still holds the lease after the restart resumed it")
	}
}

func TestClaimInstanceRefusesABadID(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, InstanceFile), []byte("two words\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ClaimInstance(dir)
	if err == nil || !strings.Contains(err.Error(), "is not an instance id") {
		t.Fatalf("claim with a corrupt id file: %v, want an error naming it", err)
	}
}
