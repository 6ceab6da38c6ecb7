package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/notify/webhook"
)

// "otawatch run notify" is SIGKILLed in the middle of a storm of 60
// alerts (one group each), started again, and started a third time after
// a clean stop (a full replay of ALERTS and NOTIFY): every group reaches
// the webhook, each as one notification (one notification id, whatever
// the attempts), and the replay sends nothing.
func TestNotifySurvivesSIGKILL(t *testing.T) {
	var mu, slow sync.Mutex
	requests := map[string]int{} // notification id -> requests
	groups := map[string]map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slow.Lock()
		defer slow.Unlock() // one at a time, slowly: the storm takes a while
		time.Sleep(20 * time.Millisecond)
		var pl webhook.Payload
		if err := jsonDecode(r, &pl); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id := r.Header.Get(webhook.IDHeader)
		mu.Lock()
		defer mu.Unlock()
		requests[id]++
		if groups[pl.GroupKey] == nil {
			groups[pl.GroupKey] = map[string]bool{}
		}
		groups[pl.GroupKey][id] = true
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	snapshot := func() (total, distinct, groupCount int) {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range requests {
			total += n
		}
		return total, len(requests), len(groups)
	}

	dataDir := t.TempDir()
	natsPort, httpPort := testutil.FreePort(t), testutil.FreePort(t)
	cfgFile := filepath.Join(dataDir, "otawatch.yaml")
	cfg := fmt.Sprintf(`notify:
  route:
    receiver: hooks
    group_by: [device]
    group_wait: 0s
  receivers:
    - name: hooks
      webhook:
        url: %s/hook
  lease_ttl: 2s
`, srv.URL)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"OTAWATCH_DATA_DIR=" + dataDir,
		fmt.Sprintf("OTAWATCH_NATS_LISTEN=127.0.0.1:%d", natsPort),
		"OTAWATCH_NATS_MQTT_LISTEN=",
		fmt.Sprintf("OTAWATCH_HTTP_LISTEN=127.0.0.1:%d", httpPort),
		"OTAWATCH_CLICKHOUSE_ADDR=",
	}
	ready := func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	p := startOtawatch(t, env, "run", "-c", cfgFile, "notify")
	testutil.Eventually(t, 60*time.Second, ready, "otawatch run notify never became ready\n%s", p.stderr)

	pw, err := os.ReadFile(filepath.Join(dataDir, "credentials", events.IdentityServices))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort), nats.UserInfo(events.IdentityServices, strings.TrimSpace(string(pw))),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const n = 60
	start := time.Now().UTC().Truncate(time.Second)
	for i := 0; i < n; i++ {
		a := events.AlertData{Key: fmt.Sprintf("device-failed/gw/d%03d", i), RuleID: "device-failed", Severity: "critical",
			State: events.AlertRaised, TypeID: "gw", DeviceID: fmt.Sprintf("d%03d", i), Message: "failed", StartsAt: start}
		ev, err := events.New(events.AlertEventID(a.Key, a.Severity, a.StartsAt, a.State), events.SourceAlerting,
			events.TypeAlertRaised, a.Key, start, a)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := ev.Marshal()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = js.Publish(ctx, events.AlertSubject(a.State, a.Severity, a.RuleID), b, jetstream.WithMsgID(ev.ID))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	var killedAt int
	testutil.Eventually(t, 30*time.Second, func() bool { killedAt, _, _ = snapshot(); return killedAt >= 15 }, "the storm did not start\n%s", p.stderr)
	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL: no clean stop, the lease is not released
		t.Fatal(err)
	}
	<-p.done

	p2 := startOtawatch(t, env, "run", "-c", cfgFile, "notify")
	// Ready once active: after the killed holder's lease expired, with
	// NOTIFY and ALERTS read. Then wait for its deliveries to settle.
	testutil.Eventually(t, 60*time.Second, ready, "the restart never became ready\n%s", p2.stderr)
	last, quiet := -1, 0
	testutil.Eventually(t, 60*time.Second, func() bool {
		total, _, g := snapshot()
		if total == last && g == n {
			quiet++
		} else {
			last, quiet = total, 0
		}
		return quiet >= 25 // 0.5 s without a request
	}, "after the restart the webhook did not settle on %d groups\n%s", n, p2.stderr)
	if err := p2.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, p2.stderr)
	}
	beforeReplay, _, _ := snapshot()

	p3 := startOtawatch(t, env, "run", "-c", cfgFile, "notify")
	testutil.Eventually(t, 60*time.Second, ready, "the third start never became ready\n%s", p3.stderr)
	time.Sleep(time.Second)
	if err := p3.stop(t); err != nil {
		t.Fatalf("stop: %v\n%s", err, p3.stderr)
	}

	total, distinct, g := snapshot()
	if total != beforeReplay {
		t.Errorf("the replay sent %d requests, want 0", total-beforeReplay)
	}
	if g != n || distinct != n {
		t.Fatalf("%d groups, %d notification ids, want %d each", g, distinct, n)
	}
	mu.Lock()
	defer mu.Unlock()
	for k, ids := range groups {
		if len(ids) != 1 {
			t.Errorf("group %s reached the webhook as %d notifications, want 1", k, len(ids))
		}
	}
	// A request the webhook answered just before the kill, whose sent
	// record was lost with the process, is made again with the same id.
	t.Logf("requests answered before the kill %d, total %d for %d notifications (%d made again after the kill, same id)", killedAt, total, distinct, total-distinct)
}

func jsonDecode(r *http.Request, v any) error { return json.NewDecoder(r.Body).Decode(v) }
