package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// pastHarness publishes a scripted history to a running api and records
// what its live endpoints answer between the steps.
type pastHarness struct {
	*harness
	last map[string]uint64 // the last sequence published, per stream
	n    int
}

func (p *pastHarness) pub(t *testing.T, stream, subject string, e events.Event) {
	t.Helper()
	p.last[stream] = p.publish(t, subject, e)
}

func (p *pastHarness) report(t *testing.T, dev, version, status string) {
	t.Helper()
	p.last[events.StreamShadow] = p.harness.report(t, "sensor", dev, version, status, 30, time.Now().UTC())
}

func (p *pastHarness) desire(t *testing.T, dev, job string, wave int, version string) {
	t.Helper()
	p.last[events.StreamShadow] = p.harness.desire(t, "sensor", dev, job, wave, version, time.Now().UTC())
}

func (p *pastHarness) presence(t *testing.T, dev, state string) {
	t.Helper()
	now := time.Now().UTC()
	p.last[events.StreamShadow] = p.harness.presence(t, "sensor", dev, state, now.Add(-time.Hour), now)
}

func (p *pastHarness) rollout(t *testing.T, typ string, d events.RolloutData) {
	t.Helper()
	p.n++
	e, err := events.New(fmt.Sprintf("r%d", p.n), events.SourceRollout, typ, d.JobID, time.Now().UTC(), d)
	if err != nil {
		t.Fatal(err)
	}
	p.pub(t, events.StreamRollout, events.RolloutSubject(d.JobID, events.RolloutEventName(typ)), e)
}

func (p *pastHarness) alert(t *testing.T, state, severity, rule, dev string) {
	t.Helper()
	p.n++
	d := events.AlertData{Key: rule + "/sensor/" + dev, RuleID: rule, Severity: severity, State: state, TypeID: "sensor", DeviceID: dev,
		Message: rule + " on " + dev, StartsAt: time.Now().UTC()}
	e, err := events.New(fmt.Sprintf("a%d", p.n), events.SourceAlerting, events.AlertEventType(state), d.Key, time.Now().UTC(), d)
	if err != nil {
		t.Fatal(err)
	}
	p.pub(t, events.StreamAlerts, events.AlertSubject(state, severity, rule), e)
}

// caughtUp waits until the live model has applied everything published.
func (p *pastHarness) caughtUp(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() bool {
		p.svc.model.mu.RLock()
		defer p.svc.model.mu.RUnlock()
		for stream, seq := range p.last {
			if p.svc.model.pos[stream].Seq < seq {
				return false
			}
		}
		return true
	}, "the live model did not apply %v", p.last)
}

// snap waits, when the service writes snapshots, until one covers what
// was published so far: the history then has snapshots inside its steps,
// and a past instant folds from one plus the events after it.
func (p *pastHarness) snap(t *testing.T) {
	t.Helper()
	if p.svc.snapshots != nil {
		p.caughtUp(t)
		waitSnapshots(t, p.harness, 1)
	}
}

// liveRecord is what the live endpoints answered at one instant.
type liveRecord struct {
	name  string
	at    time.Time
	paths map[string][]byte // path -> body
}

// pastPaths are the endpoints recorded and replayed.
var pastPaths = []string{"/api/v1/fleet/state", "/api/v1/fleet", "/api/v1/alerts", "/api/v1/devices",
	"/api/v1/devices/sensor/a", "/api/v1/devices/sensor/c", "/api/v1/devices/sensor/f", "/api/v1/devices/sensor/g"}

// record asks the live endpoints, the fleet state first: its "at" is the
// instant, and the log does not move meanwhile (the test publishes
// nothing until it returns).
func (p *pastHarness) record(t *testing.T, name string) liveRecord {
	t.Helper()
	p.caughtUp(t)
	r := liveRecord{name: name, paths: map[string][]byte{}}
	for _, path := range pastPaths {
		status, b := p.do(t, http.MethodGet, path, "", nil)
		if status != http.StatusOK && !(status == http.StatusNotFound && strings.HasPrefix(path, "/api/v1/devices/")) {
			t.Fatalf("%s: GET %s: %d %s", name, path, status, b)
		}
		r.paths[path] = b
	}
	var st FleetState
	if err := json.Unmarshal(r.paths["/api/v1/fleet/state"], &st); err != nil {
		t.Fatal(err)
	}
	r.at = st.At
	return r
}

// pastHistory publishes four steps of a fleet and a rollout (reports,
// presence, a job started, sent, paused and resumed, alerts raised and
// resolved) and records the live endpoints after each; when the service
// writes snapshots, one is taken inside each step.
func pastHistory(t *testing.T, h *harness) []liveRecord {
	p := &pastHarness{harness: h, last: map[string]uint64{}}
	var recs []liveRecord
	for _, d := range []string{"a", "b", "c", "d", "e", "f"} {
		p.report(t, d, "1.0", events.StatusCompleted)
		if d == "d" {
			p.snap(t)
		}
	}
	p.presence(t, "f", events.PresencePotentiallyOffline)
	p.presence(t, "g", events.PresenceOffline)
	p.alert(t, events.AlertRaised, "critical", "device-failed", "x")
	// A job that ends at once: snapshots keep it without its ledger.
	old := events.DesiredFirmware{Version: "1.5", Checksum: "sha256:1.5", URL: "https://fw.example/1.5"}
	p.rollout(t, events.TypeRolloutJobCreated, events.RolloutData{JobID: "job0", Target: &old, Spec: &events.RolloutSpec{ID: "job0", Target: old}})
	p.rollout(t, events.TypeRolloutJobStarted, events.RolloutData{JobID: "job0",
		Plan: &events.RolloutPlan{Waves: [][]events.DeviceRef{{{TypeID: "sensor", DeviceID: "g"}}}}})
	p.rollout(t, events.TypeRolloutJobAborted, events.RolloutData{JobID: "job0", Reason: "wrong image"})
	recs = append(recs, p.record(t, "fleet on 1.0"))

	target := events.DesiredFirmware{Version: "2.0", Checksum: "sha256:2.0", URL: "https://fw.example/2.0"}
	p.rollout(t, events.TypeRolloutJobCreated, events.RolloutData{JobID: "job1", Target: &target,
		Spec: &events.RolloutSpec{ID: "job1", Target: target, DeviceTimeout: events.Duration(pastDeviceTimeout)}})
	wave1 := []events.DeviceRef{{TypeID: "sensor", DeviceID: "a"}, {TypeID: "sensor", DeviceID: "b"}, {TypeID: "sensor", DeviceID: "c"}}
	wave2 := []events.DeviceRef{{TypeID: "sensor", DeviceID: "d"}, {TypeID: "sensor", DeviceID: "e"}, {TypeID: "sensor", DeviceID: "f"}}
	p.rollout(t, events.TypeRolloutJobStarted, events.RolloutData{JobID: "job1", Plan: &events.RolloutPlan{Waves: [][]events.DeviceRef{wave1, wave2}}})
	p.rollout(t, events.TypeRolloutWaveStarted, events.RolloutData{JobID: "job1", Wave: 1})
	p.rollout(t, events.TypeRolloutDevicesSent, events.RolloutData{JobID: "job1", Wave: 1, Devices: wave1})
	p.snap(t)
	for _, d := range wave1 {
		p.desire(t, d.DeviceID, "job1", 1, "2.0")
	}
	p.report(t, "a", "1.0", events.StatusInProgress)
	p.report(t, "b", "2.0", events.StatusCompleted)
	p.alert(t, events.AlertRaised, "info", "version-mismatch", "a")
	recs = append(recs, p.record(t, "wave 1 sent, c pending"))

	p.report(t, "c", "1.0", events.StatusFailed)
	p.report(t, "a", "2.0", events.StatusCompleted)
	p.rollout(t, events.TypeRolloutJobPaused, events.RolloutData{JobID: "job1", Reason: "c failed"})
	p.snap(t)
	p.alert(t, events.AlertResolved, "critical", "device-failed", "x")
	p.alert(t, events.AlertRaised, "critical", "device-failed", "c")
	recs = append(recs, p.record(t, "paused on c's failure"))

	p.rollout(t, events.TypeRolloutJobResumed, events.RolloutData{JobID: "job1"})
	p.rollout(t, events.TypeRolloutWaveStarted, events.RolloutData{JobID: "job1", Wave: 2})
	p.rollout(t, events.TypeRolloutDevicesSent, events.RolloutData{JobID: "job1", Wave: 2, Devices: wave2})
	p.snap(t)
	for _, d := range wave2 {
		p.desire(t, d.DeviceID, "job1", 2, "2.0")
	}
	p.report(t, "d", "2.0", events.StatusCompleted)
	p.report(t, "e", "1.0", events.StatusInProgress)
	p.rollout(t, events.TypeRolloutJobCreated, events.RolloutData{JobID: "job2", Target: &target})
	recs = append(recs, p.record(t, "wave 2 sent"))
	return recs
}

// pastDeviceTimeout is the scripted job's device timeout: the test waits
// it out before it asks the past, so a past read at the wall clock instead
// of its instant would show wave 1's pending device timed out.
const pastDeviceTimeout = 3 * time.Second

// TestFleetAtReproducesLive records the live endpoints at four instants of
// a scripted rollout (the test publishes nothing while it records, and
// records once the live model applied everything, so the live answer is
// the fold of what the streams had stored by then), waits until wave 1's
// pending device would have timed out, and then asks each endpoint with
// ?at= each instant, and FoldAt directly from the start of the log and
// from snapshots: every answer is the one recorded, byte for byte.
func TestFleetAtReproducesLive(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{Snapshots: SnapshotConfig{Every: 4, Interval: time.Second}}})
	recs := pastHistory(t, h)

	var st FleetState
	_ = json.Unmarshal(recs[1].paths["/api/v1/fleet/state"], &st)
	if len(st.Rollouts) != 1 || len(st.Rollouts[0].Waves) != 2 || st.Rollouts[0].Waves[0].Pending != 1 {
		t.Fatalf("%s: live state %s, want job1 with c pending in wave 1", recs[1].name, recs[1].paths["/api/v1/fleet/state"])
	}
	if wait := time.Until(recs[1].at.Add(pastDeviceTimeout + 100*time.Millisecond)); wait > 0 {
		time.Sleep(wait) // past the timeout of the instant's pending device
	}

	snapshotsUsed := 0
	for _, rec := range recs {
		at := rec.at.Format(time.RFC3339Nano)
		for _, path := range pastPaths {
			req := path + "?at=" + url.QueryEscape(at)
			status, b := h.do(t, http.MethodGet, req, "", nil)
			if wantStatus := statusOf(rec.paths[path]); status != wantStatus {
				t.Errorf("%s: GET %s: status %d, want %d: %s", rec.name, req, status, wantStatus, b)
				continue
			}
			if status == http.StatusOK && !bytes.Equal(b, rec.paths[path]) {
				t.Errorf("%s: GET %s:\n got %s\nwant %s", rec.name, req, b, rec.paths[path])
			}
		}
		for _, bucket := range []string{"", DefaultSnapshotBucket} {
			p, err := FoldAt(context.Background(), h.js.JS, rec.at, PastOptions{Bucket: bucket})
			if err != nil {
				t.Fatalf("%s: FoldAt: %v", rec.name, err)
			}
			if len(p.Stats.Warnings) > 0 {
				t.Errorf("%s: FoldAt(bucket %q) warns %q", rec.name, bucket, p.Stats.Warnings)
			}
			got, _ := json.Marshal(p.State(false))
			got = append(got, '\n')
			if !bytes.Equal(got, rec.paths["/api/v1/fleet/state"]) {
				t.Errorf("%s: FoldAt(bucket %q):\n got %s\nwant %s", rec.name, bucket, got, rec.paths["/api/v1/fleet/state"])
			}
			if bucket != "" && len(p.Stats.From) > 0 {
				snapshotsUsed++
			}
			if bucket == "" && len(p.Stats.From) > 0 {
				t.Errorf("%s: FoldAt without a bucket used a snapshot", rec.name)
			}
		}
	}
	if snapshotsUsed < 2 {
		t.Errorf("snapshots were used for %d of the %d instants; the writer saved every 4 events, so the later ones should start from one", snapshotsUsed, len(recs))
	}
}

// statusOf is 404 for a recorded error body, else 200.
func statusOf(b []byte) int {
	if bytes.HasPrefix(b, []byte(`{"error"`)) {
		return http.StatusNotFound
	}
	return http.StatusOK
}

// snapshotIndexOf reads the snapshot index from the bucket.
func snapshotIndexOf(t *testing.T, h *harness, bucket string) snapshotIndex {
	t.Helper()
	kv, err := h.js.JS.KeyValue(context.Background(), bucket)
	if err != nil {
		return snapshotIndex{}
	}
	idx, _, err := readIndex(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// waitSnapshots waits until the index covers everything the live model
// applied, with at least n snapshots.
func waitSnapshots(t *testing.T, h *harness, n int) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() bool {
		idx := snapshotIndexOf(t, h, h.svc.cfg.Snapshots.Bucket)
		if len(idx.Snapshots) < n {
			return false
		}
		newest := idx.Snapshots[len(idx.Snapshots)-1]
		h.svc.model.mu.RLock()
		defer h.svc.model.mu.RUnlock()
		for _, s := range pastStreams {
			if newest.Sections[s].Seq != h.svc.model.pos[s].Seq {
				return false
			}
		}
		return true
	}, "the snapshot writer did not catch up with the model")
}

// TestFleetAtSurvivesBadSnapshots: a snapshot whose part was overwritten,
// one that is missing a part, and one whose positions name other messages
// are each skipped with a warning, and the answer is still the live one
// (from an older snapshot, or from the start of the log).
func TestFleetAtSurvivesBadSnapshots(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{Snapshots: SnapshotConfig{Every: 4, Interval: time.Second}}})
	recs := pastHistory(t, h)
	h.stop() // the writer stops: the test changes the bucket alone
	kv, err := h.js.JS.KeyValue(context.Background(), DefaultSnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	idx := snapshotIndexOf(t, h, DefaultSnapshotBucket)
	last := recs[len(recs)-1]
	want := last.paths["/api/v1/fleet/state"]
	ask := func(name, wantWarning string, fromSnapshot bool) {
		t.Helper()
		p, err := FoldAt(context.Background(), h.js.JS, last.at, PastOptions{Bucket: DefaultSnapshotBucket})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, _ := json.Marshal(p.State(false))
		if !bytes.Equal(append(got, '\n'), want) {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
		if !strings.Contains(strings.Join(p.Stats.Warnings, "\n"), wantWarning) {
			t.Errorf("%s: warnings %q, want one saying %q", name, p.Stats.Warnings, wantWarning)
		}
		if (len(p.Stats.From) > 0) != fromSnapshot {
			t.Errorf("%s: started from snapshots: %s, want %v", name, p.Stats.FromText(), fromSnapshot)
		}
		t.Logf("%s: %d events folded from %s, warnings %q", name, p.Stats.Events, p.Stats.FromText(), p.Stats.Warnings)
	}
	newest := idx.Snapshots[len(idx.Snapshots)-1]
	if _, err := kv.Put(context.Background(), partKey(newest.Slot, events.StreamShadow, 0), []byte("not a snapshot")); err != nil {
		t.Fatal(err)
	}
	ask("the newest SHADOW section overwritten", "checksum mismatch", true)

	// An index whose SHADOW sections name messages this log does not hold
	// where they say (a bucket from another log): each refused by its
	// position; ROLLOUT and ALERTS still start from theirs.
	for i := range idx.Snapshots {
		sec := idx.Snapshots[i].Sections[events.StreamShadow]
		sec.Stored = sec.Stored.Add(-time.Hour)
		idx.Snapshots[i].Sections[events.StreamShadow] = sec
	}
	b, _ := json.Marshal(idx)
	if _, err := kv.Put(context.Background(), snapshotIndexKey, b); err != nil {
		t.Fatal(err)
	}
	ask("SHADOW positions from another log", "not this log", true)

	for _, s := range idx.Snapshots {
		for stream := range s.Sections {
			if err := kv.Purge(context.Background(), partKey(s.Slot, stream, 0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	ask("every snapshot's part removed", "missing", false)
}

func TestFleetAtRefusesBadInstants(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for _, tt := range []struct{ name, at, want string }{
		{"not a time", "yesterday", `at "yesterday" is not an RFC 3339 time`},
		{"a date alone", "2025-07-22", `at "2025-07-22" is not an RFC 3339 time`},
		{"no zone", "2025-07-22T11:30:00", `is not an RFC 3339 time`},
		{"in the future", future, "is in the future"},
		{"empty", "", `at "" is not an RFC 3339 time`},
	} {
		for _, path := range []string{"/api/v1/fleet", "/api/v1/fleet/state", "/api/v1/devices", "/api/v1/devices/sensor/a", "/api/v1/alerts"} {
			status, b := h.do(t, http.MethodGet, path+"?at="+url.QueryEscape(tt.at), "", nil)
			if status != http.StatusBadRequest || !strings.Contains(errorOf(t, b), tt.want) {
				t.Errorf("%s: GET %s?at=%s: %d %s, want 400 saying %q", tt.name, path, tt.at, status, b, tt.want)
			}
		}
	}
}

// TestSnapshotIndexBounded: with keep 3 and a snapshot every 2 events, the
// bucket never holds more than 3 snapshots however many were written, the
// oldest and the newest always among them, and the keys stay within the
// 3 slots.
func TestSnapshotIndexBounded(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{Snapshots: SnapshotConfig{Every: 2, Interval: time.Hour, Keep: 3}}})
	p := &pastHarness{harness: h, last: map[string]uint64{}}
	var first SnapshotInfo
	for i := 0; i < 12; i++ {
		p.report(t, fmt.Sprintf("d%d", i), "1.0", events.StatusCompleted)
		p.report(t, fmt.Sprintf("d%d", i), "1.1", events.StatusCompleted)
		p.caughtUp(t)
		waitSnapshots(t, h, 1)
		idx := snapshotIndexOf(t, h, DefaultSnapshotBucket)
		if len(idx.Snapshots) > 3 {
			t.Fatalf("after %d snapshots the index holds %d: %+v", i+1, len(idx.Snapshots), idx.Snapshots)
		}
		if i == 0 {
			first = idx.Snapshots[0]
		} else if idx.Snapshots[0].Events != first.Events {
			t.Fatalf("the oldest snapshot (events %d) was removed: %+v", first.Events, idx.Snapshots)
		}
	}
	kv, err := h.js.JS.KeyValue(context.Background(), DefaultSnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var list []string
	for k := range keys.Keys() {
		list = append(list, k)
	}
	if len(list) > 10 {
		t.Errorf("keys %v: more than the index and 3 slots of 3 one-part sections", list)
	}
	status, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := status.Values(); n > 10 {
		t.Errorf("the bucket stores %d messages, want at most 10 (the index and 3 slots of 3 one-part sections)", n)
	}
}

func TestThin(t *testing.T) {
	mk := func(evs ...uint64) []SnapshotInfo {
		var l []SnapshotInfo
		for _, e := range evs {
			l = append(l, SnapshotInfo{Events: e})
		}
		return l
	}
	events := func(l []SnapshotInfo) string {
		var s []string
		for _, x := range l {
			s = append(s, fmt.Sprint(x.Events))
		}
		return strings.Join(s, ",")
	}
	for _, tt := range []struct {
		name          string
		list          []SnapshotInfo
		keep          int
		kept, removed string
	}{
		{"within the bound", mk(10, 20, 30), 3, "10,20,30", ""},
		{"the one in the densest place", mk(10, 20, 22, 30, 40), 4, "10,20,30,40", "22"},
		{"oldest and newest stay", mk(10, 11, 12), 2, "10,12", "11"},
		{"down to the bound", mk(0, 10, 11, 12, 13, 100), 3, "0,13,100", "11,12,10"},
		{"even spacing: the oldest interior goes first", mk(0, 10, 20, 30), 3, "0,20,30", "10"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kept, removed := thin(tt.list, tt.keep)
			if events(kept) != tt.kept || events(removed) != tt.removed {
				t.Errorf("kept %s removed %s, want kept %s removed %s", events(kept), events(removed), tt.kept, tt.removed)
			}
		})
	}
}

// TestSnapshotWriterOneAtATime: two api instances on one log write one
// index, one of them at a time (the lease): the other stands by, and takes
// over when the first stops; the index's snapshots stay in log order.
func TestSnapshotWriterOneAtATime(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{Snapshots: SnapshotConfig{Every: 2, Interval: time.Hour, LeaseTTL: time.Second}}})
	second, err := New(Config{Listen: "127.0.0.1:0", Snapshots: SnapshotConfig{Every: 2, Interval: time.Hour, LeaseTTL: time.Second}},
		svc.Deps{NC: h.js.NC, JS: h.js.JS})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- second.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	writers := func() (n int, first bool) {
		return btoi(h.svc.snapshots.active.Load()) + btoi(second.snapshots.active.Load()), h.svc.snapshots.active.Load()
	}
	testutil.Eventually(t, 30*time.Second, func() bool { n, _ := writers(); return n == 1 }, "no single writer")
	p := &pastHarness{harness: h, last: map[string]uint64{}}
	for i := 0; i < 3; i++ {
		p.report(t, fmt.Sprintf("d%d", i), "1.0", events.StatusCompleted)
		p.report(t, fmt.Sprintf("d%d", i), "1.1", events.StatusCompleted)
		if n, _ := writers(); n != 1 {
			t.Fatalf("%d writers at once", n)
		}
	}
	p.caughtUp(t)
	waitSnapshots(t, h, 1)
	before := len(snapshotIndexOf(t, h, DefaultSnapshotBucket).Snapshots)

	// Stop the writer; the other takes over and indexes what comes next.
	if _, first := writers(); first {
		h.stop()
	} else {
		cancel()
		<-done
		done <- nil
	}
	testutil.Eventually(t, 30*time.Second, func() bool { n, _ := writers(); return n == 1 }, "nobody took over")
	for i := 3; i < 5; i++ {
		p.report(t, fmt.Sprintf("d%d", i), "1.0", events.StatusCompleted)
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		idx := snapshotIndexOf(t, h, DefaultSnapshotBucket)
		n := len(idx.Snapshots)
		return n > before && idx.Snapshots[n-1].Sections[events.StreamShadow].Seq == p.last[events.StreamShadow]
	}, "the new writer did not index the new events")
	idx := snapshotIndexOf(t, h, DefaultSnapshotBucket)
	for i := 1; i < len(idx.Snapshots); i++ {
		if idx.Snapshots[i].Events <= idx.Snapshots[i-1].Events {
			t.Errorf("snapshots out of log order: %+v", idx.Snapshots)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
