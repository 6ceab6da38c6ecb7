package rollout

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// A stepped recording: a live rollout service (embedded JetStream, its
// MQTT listener, the real driver) whose every tick the test runs itself,
// on a fake clock, once the service's folds hold everything published.
// The devices are scripted: when the driver records a device's desired
// state, the test publishes the device's reports into SHADOW at the
// script's times. So the recording is exactly what the driver saw at each
// tick, and a what-if with the job's own settings must reproduce it
// exactly: the decisions, their counts and their times.

// script is one device's answer to its desired state: in_progress at
// once, then, after finishAfter ticks, completed or failed; a silent
// device says nothing more (it times out).
type script struct {
	status      string // events.StatusCompleted or events.StatusFailed; "" is silent
	finishAfter int
}

// stepped drives one recorded rollout.
type stepped struct {
	t     *testing.T
	r     *rig
	clock *testutil.FakeClock
	s     *Service
	js    jetstream.JetStream
	step  time.Duration

	scripts map[events.DeviceRef]script
	// due are the reports still to publish, by time.
	due      []report
	seenSeq  uint64 // SHADOW read up to here for new desired events
	reported int
}

type report struct {
	at     time.Time
	ref    events.DeviceRef
	status string
}

// newStepped starts the service on a fake clock with its ticker off, and
// gives each device a first report of firmware 1.0.0.
func newStepped(t *testing.T, step time.Duration, refs []events.DeviceRef, scripts map[events.DeviceRef]script) *stepped {
	t.Helper()
	r := newBareRig(t)
	st := &stepped{t: t, r: r, step: step, scripts: scripts,
		// An hour ahead of the wall clock: the stream's stored times are
		// wall-clock times, always before the events' fake ones, so the
		// what-if sees no latency between the two (whatif.go).
		clock: testutil.NewFakeClock(time.Now().Add(time.Hour).UTC().Truncate(time.Second))}
	nc := r.connect()
	var err error
	if st.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	for _, ref := range refs {
		st.publish(ref, "1.0.0", events.StatusCompleted, st.clock.Now())
	}
	cfg := testConfig(r.broker)
	cfg.Tick, cfg.LeaseTTL = step, time.Hour // the lease holds for the whole fake run
	cfg.Instance = "stepped"
	s, err := New(cfg, svc.Deps{Log: testLog(), NC: nc, JS: st.js, Clock: st.clock,
		Streams: events.StreamOptions{Replicas: 1}, Health: svc.NewHealth()})
	if err != nil {
		t.Fatal(err)
	}
	s.hooks.manualTicks = true
	st.s = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, 30*time.Second, func() bool {
		select {
		case <-s.readyCh:
			return s.Driving()
		default:
			return false
		}
	}, "the stepped service never caught up and took the lease")
	testutil.Eventually(t, 10*time.Second, func() bool { _, err := r.request("list", events.RolloutRequest{}); return err == nil },
		"the stepped service never answered")
	st.settle()
	return st
}

// publish stores a report into SHADOW at at, as the bridge would.
func (st *stepped) publish(ref events.DeviceRef, version, status string, at time.Time) {
	st.t.Helper()
	fw := events.Firmware{Version: version, Timestamp: at, Status: status, Checksum: "sha256:" + strings.Repeat("ab", 32), PreviousVersion: "1.0.0"}
	if status != events.StatusInProgress {
		fw.UpdateDuration = 42
	}
	if status == events.StatusFailed {
		code := "E_FLASH_WRITE"
		fw.ErrorCode, fw.Version = &code, "1.0.0"
	}
	id := events.ReportEventID(ref.TypeID, ref.DeviceID, fw)
	e, err := events.New(id, events.SourceBridge, events.TypeShadowReported, ref.String(), at,
		events.ShadowReportedData{TypeID: ref.TypeID, DeviceID: ref.DeviceID, Topic: events.ReportTopic(ref.TypeID, ref.DeviceID), Firmware: fw})
	if err != nil {
		st.t.Fatal(err)
	}
	b, err := e.Marshal()
	if err != nil {
		st.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := st.js.PublishMsg(ctx, &nats.Msg{Subject: events.ShadowReportedSubject(ref.TypeID, ref.DeviceID), Data: b,
		Header: nats.Header{jetstream.MsgIDHeader: {id}}}); err != nil {
		st.t.Fatalf("publish a report of %s: %v", ref, err)
	}
	st.reported++
}

// settle waits until the service's folds hold every event of SHADOW and
// ROLLOUT.
func (st *stepped) settle() {
	st.t.Helper()
	testutil.Eventually(st.t, 30*time.Second, func() bool {
		return st.s.shadowFold.Applied() >= testutil.StreamMsgs(st.js, events.StreamShadow) &&
			st.s.rolloutFold.Applied() >= testutil.StreamMsgs(st.js, events.StreamRollout)
	}, "the service's folds did not catch up")
}

// tick is one step: time moves on, the reports due by now are stored, the
// driver ticks on a settled state, and the devices it sent to answer.
func (st *stepped) tick(ctx context.Context) {
	st.t.Helper()
	st.clock.Advance(st.step)
	now := st.clock.Now()
	sort.SliceStable(st.due, func(a, b int) bool { return st.due[a].at.Before(st.due[b].at) })
	for len(st.due) > 0 && !st.due[0].at.After(now) {
		d := st.due[0]
		st.due = st.due[1:]
		version := "2.0.0"
		st.publish(d.ref, version, d.status, d.at)
	}
	st.settle()
	st.s.drive(ctx)
	st.settle()
	for _, m := range st.r.js.Events(st.t, events.StreamShadow) {
		if m.Sequence <= st.seenSeq {
			continue
		}
		st.seenSeq = m.Sequence
		e, err := events.Decode(m.Data)
		if err != nil || e.Type != events.TypeShadowDesired {
			continue
		}
		var d events.ShadowDesiredData
		if err := e.DecodeData(&d); err != nil {
			st.t.Fatal(err)
		}
		ref := events.DeviceRef{TypeID: d.TypeID, DeviceID: d.DeviceID}
		sc, ok := st.scripts[ref]
		if !ok {
			st.t.Fatalf("no script for %s", ref)
		}
		st.publish(ref, "2.0.0", events.StatusInProgress, e.Time)
		if sc.status != "" {
			st.due = append(st.due, report{at: e.Time.Add(time.Duration(sc.finishAfter) * st.step), ref: ref, status: sc.status})
		}
	}
	st.settle()
}

// run ticks until the job is no longer running and every scripted report
// is stored, and returns the job's final status.
func (st *stepped) run(job string, maxTicks int) string {
	st.t.Helper()
	ctx := context.Background()
	for i := 0; i < maxTicks; i++ {
		st.tick(ctx)
		st.s.mu.Lock()
		status := st.s.jobs[job].Status
		st.s.mu.Unlock()
		if status != events.RolloutRunning && len(st.due) == 0 {
			return status
		}
	}
	st.t.Fatalf("job %s still running after %d ticks", job, maxTicks)
	return ""
}

// steppedScenario is the recorded rollout the what-if tests use: 40
// devices in 4 waves of 10, gate 80%, a lax failure policy (30%), a soak
// of 2 ticks, a rate of 4 devices a second (a wave takes several ticks to
// send), a device timeout of 6 ticks. Wave 1 completes cleanly; wave 2
// has two failures (the 2nd and the 5th device); wave 3 a silent device
// (it times out) and a failure; wave 4 a failure. Every wave passes.
func steppedScenario(t *testing.T) (*stepped, *events.RolloutSpec) {
	const (
		devices  = 40
		waveSize = 10
	)
	step := time.Second
	var refs []events.DeviceRef
	scripts := map[events.DeviceRef]script{}
	spec := &events.RolloutSpec{ID: "stepped", Target: target(), WaveSize: waveSize, Gate: 0.8, MaxFailure: 0.3, MinFinished: 3,
		OnFailure: events.OnFailurePause, Rate: 4, Soak: events.Duration(2 * step), DeviceTimeout: events.Duration(6 * step)}
	for i := 1; i <= devices; i++ {
		ref := events.DeviceRef{TypeID: "sensor", DeviceID: deviceID(i)}
		refs = append(refs, ref)
		spec.Devices = append(spec.Devices, ref.String())
		sc := script{status: events.StatusCompleted, finishAfter: 2 + i%5}
		switch i {
		case 12, 15, 27, 38:
			sc = script{status: events.StatusFailed, finishAfter: 1 + i%4}
		case 23:
			sc = script{} // silent: times out
		}
		scripts[ref] = sc
	}
	st := newStepped(t, step, refs, scripts)
	st.r.mustRequest(CmdCreate, events.RolloutRequest{Start: true, Spec: spec})
	st.settle()
	if status := st.run(spec.ID, 200); status != events.RolloutCompleted {
		t.Fatalf("the recorded job ended %s, want completed", status)
	}
	return st, spec
}

// readRecording reads the job's recording from the stepped service's
// streams, as the CLI does.
func (st *stepped) readRecording(job string) *Recording {
	st.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rec, err := ReadRecording(ctx, st.js, job, ReadOptions{})
	if err != nil {
		st.t.Fatal(err)
	}
	return rec
}

// readRecordingAll is readRecording with every device's events (for a
// CEL gate).
func (st *stepped) readRecordingAll(job string) *Recording {
	st.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rec, err := ReadRecording(ctx, st.js, job, ReadOptions{AllDevices: true})
	if err != nil {
		st.t.Fatal(err)
	}
	return rec
}

func fmtDecisions(ds []Decision) string {
	var b strings.Builder
	for _, d := range ds {
		fmt.Fprintf(&b, "\n  %s %s", d.At.Format("15:04:05.000"), d)
	}
	return b.String()
}
