package api

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/fleet"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
)

// The fleet at an instant. What the live api showed at T is its read model
// after the messages it had been handed by T, evaluated with T as "now"
// (a wave's pending devices time out against it). The messages it had by
// T are those each stream had stored by T: JetStream stamps a message when
// it stores it, and one stream's stamps grow with its sequence. So the
// past is the same model (model.go: the same fleet.State, waves.Ledger and
// alert folds), fed SHADOW, ROLLOUT and ALERTS each from its start, or
// from its newest snapshot section stored at or before T (snapshots.go),
// up to the first message stored after T, and read at T. The live model lags the
// log by the milliseconds a message takes to reach it; a view of the past
// is the model with that lag gone.

// pastStreams are the streams a view of the past folds: what the fleet
// state shows. NOTIFY feeds only the dashboard's lists.
var pastStreams = []string{events.StreamShadow, events.StreamRollout, events.StreamAlerts}

// FleetState is the fleet at one instant, live (GET /api/v1/fleet/state)
// or as the live system showed it at a past one (?at=, otawatch fleet at):
// the fleet metrics, the firmware versions, the rollouts running or paused
// with their waves, the devices not online, the active alerts and, for
// the command line, every device.
type FleetState struct {
	// At is the instant: the clock's now when live, else the one asked.
	At time.Time `json:"at"`
	// Streams is, per stream folded, the last sequence the state includes
	// (0 for none).
	Streams map[string]uint64 `json:"streams"`
	Fleet   fleet.Metrics     `json:"fleet"`
	// Versions are the devices per reported firmware version, most first.
	Versions []versionCount `json:"versions"`
	// Rollouts are the jobs running or paused, newest first, each with
	// every wave of its plan.
	Rollouts []rolloutState `json:"rollouts"`
	// PotentiallyOffline devices owe a report and were silent too long;
	// Offline ones are offline by what the broker says.
	PotentiallyOffline []fleet.Device `json:"potentiallyOffline"`
	Offline            []fleet.Device `json:"offline"`
	// Alerts are the active alerts, newest first.
	Alerts []alertView `json:"alerts"`
	// Devices is every device by type then id, when asked for (the
	// command line; the API pages them: GET /api/v1/devices?at=).
	Devices []fleet.Device `json:"devices,omitempty"`
}

// rolloutState is a job with its waves.
type rolloutState struct {
	jobView
	Waves []waveRow `json:"waves"`
}

// state builds the fleet state at now. Caller holds a lock.
func (m *model) state(now time.Time, devices bool) FleetState {
	s := FleetState{At: now, Streams: map[string]uint64{}, Fleet: m.fleet.Metrics(), Rollouts: []rolloutState{},
		PotentiallyOffline: []fleet.Device{}, Offline: []fleet.Device{}, Alerts: m.activeAlerts()}
	for _, name := range pastStreams {
		s.Streams[name] = m.pos[name].Seq
	}
	jobs := m.jobList()
	target := ""
	if a := activeJob(jobs); a != nil && a.Target != nil {
		target = a.Target.Version
	}
	for _, j := range jobs {
		if j.Status == events.RolloutRunning || j.Status == events.RolloutPaused {
			s.Rollouts = append(s.Rollouts, rolloutState{jobView: j, Waves: m.jobWaves(m.jobs[j.JobID], now)})
		}
	}
	versions := map[string]int{}
	m.fleet.Devices(func(d *fleet.Device) {
		if d.Reports > 0 && d.Version != "" {
			versions[d.Version]++
		}
		switch {
		case !d.Known() || d.Online:
		case d.Presence == events.PresenceOffline:
			s.Offline = append(s.Offline, *d)
		default:
			s.PotentiallyOffline = append(s.PotentiallyOffline, *d)
		}
		if devices {
			s.Devices = append(s.Devices, *d)
		}
	})
	s.Versions = sortVersions(versions, target)
	for _, l := range [][]fleet.Device{s.PotentiallyOffline, s.Offline, s.Devices} {
		sortDevices(l)
	}
	return s
}

// sortDevices orders devices by type, then id.
func sortDevices(l []fleet.Device) {
	sort.Slice(l, func(i, j int) bool {
		a, b := l[i], l[j]
		return a.TypeID < b.TypeID || a.TypeID == b.TypeID && a.DeviceID < b.DeviceID
	})
}

// PastOptions tune FoldAt.
type PastOptions struct {
	// Bucket is the snapshot bucket to start from (http.snapshots.bucket);
	// empty folds every stream from its start.
	Bucket string
	// Progress, when set, hears a line about once a second of a long fold.
	Progress func(string)
	// Now is the present the instant must not be after; zero is the wall
	// clock.
	Now time.Time
}

// FoldStats says how a view of the past was computed.
type FoldStats struct {
	// From is, by stream, the snapshot section the fold started from; a
	// stream without one was folded from its start.
	From map[string]SnapshotSection `json:"from,omitempty"`
	// Events is how many messages were folded after them; Elapsed the time
	// the whole took.
	Events  int           `json:"events"`
	Elapsed time.Duration `json:"elapsed"`
	// Warnings are what makes the answer less than certain: a snapshot
	// that could not be used, events aged out of a stream.
	Warnings []string `json:"warnings,omitempty"`
}

// FromText says where the fold started: "the start of the log", or the
// snapshot sections' positions ("snapshots: SHADOW seq 940000, ROLLOUT seq
// 1100; ALERTS from its start").
func (s FoldStats) FromText() string {
	if len(s.From) == 0 {
		return "the start of the log"
	}
	var from, start []string
	for _, stream := range pastStreams {
		if sec, ok := s.From[stream]; ok {
			from = append(from, fmt.Sprintf("%s seq %d", stream, sec.Seq))
		} else {
			start = append(start, stream)
		}
	}
	out := "snapshots: " + strings.Join(from, ", ")
	if len(start) > 0 {
		out += "; " + strings.Join(start, ", ") + " from its start"
	}
	return out
}

// Past is the api's read model folded to an instant.
type Past struct {
	at    time.Time
	m     *model
	Stats FoldStats
}

// At is the instant.
func (p *Past) At() time.Time { return p.at }

// State is the fleet state at the instant, with every device when
// devices is set.
func (p *Past) State(devices bool) FleetState {
	p.m.mu.RLock()
	defer p.m.mu.RUnlock()
	return p.m.state(p.at, devices)
}

// Device is one device's state at the instant.
func (p *Past) Device(typeID, deviceID string) (fleet.Device, bool) {
	p.m.mu.RLock()
	defer p.m.mu.RUnlock()
	return p.m.fleet.Device(typeID, deviceID)
}

// CheckInstant refuses an instant after now (a view of the future would
// change as events arrive) or before the year 1 (the zero time).
func CheckInstant(at, now time.Time) error {
	switch {
	case at.IsZero():
		return fmt.Errorf("the instant is the zero time")
	case at.After(now):
		return fmt.Errorf("%s is in the future (now is %s)", at.Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// FoldAt folds the log into the api's read model as the live api had it at
// at: each of SHADOW, ROLLOUT and ALERTS from its newest usable snapshot
// section stored at or before at (when o.Bucket is set) or its start,
// then every message of it stored at or before at. An instant in the
// future is refused.
func FoldAt(ctx context.Context, js jetstream.JetStream, at time.Time, o PastOptions) (*Past, error) {
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	if err := CheckInstant(at, now); err != nil {
		return nil, err
	}
	began := time.Now()
	p := &Past{at: at, m: newModel()}
	if o.Bucket != "" {
		m, used, warnings := loadSnapshotAt(ctx, js, o.Bucket, at)
		p.Stats.Warnings = append(p.Stats.Warnings, warnings...)
		if m != nil {
			p.m, p.Stats.From = m, map[string]SnapshotSection{}
			for stream, info := range used {
				p.Stats.From[stream] = info.Sections[stream]
			}
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	lastProgress := began
	for _, stream := range pastStreams {
		if err := p.foldStream(ctx, js, stream, func() {
			if o.Progress != nil && time.Since(lastProgress) >= time.Second {
				lastProgress = time.Now()
				o.Progress(p.progressLine(stream, began))
			}
		}); err != nil {
			return nil, err
		}
	}
	p.Stats.Elapsed = time.Since(began)
	return p, nil
}

// foldStream folds stream's messages after the model's position up to the
// first one stored after the instant.
func (p *Past) foldStream(ctx context.Context, js jetstream.JetStream, stream string, tick func()) error {
	from := p.m.pos[stream].Seq + 1
	r, err := ruleeval.OpenReader(ctx, js, stream, from)
	if err != nil {
		return err
	}
	defer r.Close()
	first := true
	for {
		rec, ok, err := r.Next(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return ctx.Err()
		}
		if first && rec.Seq > from {
			// Retention by age took them (the live model had them): the
			// view lacks what they changed unless a snapshot held it.
			p.Stats.Warnings = append(p.Stats.Warnings, fmt.Sprintf("%s: events %d to %d are no longer in the stream (aged out); the state lacks what they changed",
				stream, from, rec.Seq-1))
		}
		first = false
		if rec.Stored.After(p.at) {
			return nil
		}
		p.Stats.Events++
		if rec.DecodeErr == nil {
			p.apply(consume.Msg{Stream: stream, Seq: rec.Seq, Subject: rec.Subject, Stored: rec.Stored, Data: rec.Raw, Event: rec.Event})
		}
		tick()
	}
}

// apply folds one event as the live fold did: an event the model refuses
// (recorded on REJECTED then), or whose fold panics (recovered by the
// consume loop then), changes what it changed live and the fold goes on.
func (p *Past) apply(msg consume.Msg) {
	defer func() { _ = recover() }()
	_ = p.m.apply(msg)
}

func (p *Past) progressLine(stream string, began time.Time) string {
	el := time.Since(began)
	return fmt.Sprintf("fleet at: %s folded %d events in %s (%.0f/s), now in %s at seq %d",
		p.at.Format(time.RFC3339), p.Stats.Events, el.Round(100*time.Millisecond), float64(p.Stats.Events)/el.Seconds(), stream, p.m.pos[stream].Seq)
}
