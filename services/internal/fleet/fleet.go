package fleet

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/otawatch/otawatch/events"
)

// DefaultOfflineAfter is how long a device that owes a report may be
// silent before it is potentially offline and leaves the success rate.
const DefaultOfflineAfter = 10 * time.Minute

// Job statuses of a targeted device, relative to its current desired state.
const (
	JobPending    = "pending"     // desired state sent, no report since
	JobInProgress = "in_progress" // reported in_progress since
	JobCompleted  = "completed"   // reported completed on the target version
	JobFailed     = "failed"      // reported failed since
)

// Device is one device's known state.
type Device struct {
	TypeID   string `json:"typeId"`
	DeviceID string `json:"deviceId"`

	// Reported: the latest accepted report.
	Version         string    `json:"version,omitempty"`
	Status          string    `json:"status,omitempty"`
	PreviousVersion string    `json:"previousVersion,omitempty"`
	Checksum        string    `json:"checksum,omitempty"`
	Duration        float64   `json:"duration,omitempty"` // of the latest finished update, seconds
	ErrorCode       string    `json:"errorCode,omitempty"`
	LastSeen        time.Time `json:"lastSeen"`   // event time of the latest report
	DeviceTime      time.Time `json:"deviceTime"` // the device's own timestamp of it
	Reports         int       `json:"reports"`
	// Online is false while the device is potentially offline (silent
	// for offline_after while it owes a report) or the broker says it is
	// offline (Presence); such a device is left out of the metrics'
	// statuses and rate until it reports, or the broker says it is online.
	Online bool `json:"online"`
	// Presence is the broker's last word on the device's connection
	// (events.PresenceOnline or events.PresenceOffline, from the presence
	// topic), or empty for a device that does not follow the presence
	// contract: then silence decides (Stale). A report after an "offline"
	// clears it, since the device is evidently connected.
	Presence string `json:"presence,omitempty"`

	// Desired: the latest desired state a rollout sent.
	Target    *events.DesiredFirmware `json:"target,omitempty"`
	JobID     string                  `json:"jobId,omitempty"`
	Wave      int                     `json:"wave,omitempty"`
	DesiredAt time.Time               `json:"desiredAt"`
	// JobStatus is the device's progress toward Target (Job* constants).
	JobStatus string `json:"jobStatus,omitempty"`
}

// Known reports whether the fleet counts the device: it has reported, or
// the broker told its presence. A device only sent a desired state is not
// known yet.
func (d *Device) Known() bool { return d.Reports > 0 || d.Presence != "" }

// OwesReport reports whether otawatch waits for a report from the device:
// it was sent a desired state it has not finished (no completed on the
// target or failed since), or its latest report is in_progress. Only such
// a device can be potentially offline; one that finished and then says
// nothing is idle, and keeps counting with its last finished report.
func (d *Device) OwesReport() bool {
	if d.Status == events.StatusInProgress {
		return true
	}
	return d.Target != nil && (d.JobStatus == JobPending || d.JobStatus == JobInProgress)
}

// QuietSince is the later of the device's latest report and its latest
// desired state: since when nothing was heard from it that a job cares
// about. A device targeted after a long silence gets its full
// offline_after from the desired state.
func (d *Device) QuietSince() time.Time {
	if d.DesiredAt.After(d.LastSeen) {
		return d.DesiredAt
	}
	return d.LastSeen
}

// Key identifies a device.
type Key struct{ TypeID, DeviceID string }

// WaveKey identifies a rollout wave.
type WaveKey struct {
	JobID string
	Wave  int
}

// WaveCounts are the devices of one wave by job status. Offline devices are
// counted in Offline and also in their job status.
type WaveCounts struct {
	Targeted   int `json:"targeted"`
	Pending    int `json:"pending"`
	InProgress int `json:"inProgress"`
	Completed  int `json:"completed"`
	Failed     int `json:"failed"`
	Offline    int `json:"offline"`
}

// Metrics are fleet-wide figures over known devices (Device.Known).
// Devices = Online + PotentiallyOffline + Offline. Online includes idle
// devices: finished and silent, however long.
type Metrics struct {
	Devices int `json:"devices"`
	Online  int `json:"online"`
	// PotentiallyOffline devices owe a report and were silent for
	// offline_after (otawatch's guess).
	PotentiallyOffline int `json:"potentiallyOffline"`
	// Offline devices are offline by what the broker says (their will,
	// on the presence topic).
	Offline int `json:"offline"`
	// By latest reported status, online devices only: a device that is
	// potentially offline or offline leaves these until it is back.
	InProgress int `json:"inProgress"`
	Completed  int `json:"completed"`
	Failed     int `json:"failed"`
	// Finished is Completed + Failed.
	Finished int `json:"finished"`
	// SuccessRate is Completed / Finished over online devices; 1 when none
	// has finished.
	SuccessRate float64 `json:"successRate"`
	// AvgDuration and P95Duration are over online devices' latest
	// completed updates, in seconds (P95 to a one-second bucket).
	AvgDuration float64 `json:"avgDuration"`
	P95Duration float64 `json:"p95Duration"`
}

// State is the fold. It is not safe for concurrent use: one consumer goroutine
// owns it, and readers get copies.
type State struct {
	devices map[Key]*Device
	waves   map[WaveKey]*WaveCounts
	m       Metrics
	durSum  float64
	durN    int
	durHist fenwick
	// LastSeq is the stream sequence of the last applied SHADOW event.
	LastSeq uint64
}

// New returns an empty state.
func New() *State {
	return &State{devices: map[Key]*Device{}, waves: map[WaveKey]*WaveCounts{}, durHist: newFenwick(maxDurationBucket + 1)}
}

// Device returns a copy of a device's state.
func (s *State) Device(typeID, deviceID string) (Device, bool) {
	d, ok := s.devices[Key{typeID, deviceID}]
	if !ok {
		return Device{}, false
	}
	return *d, true
}

// Devices calls fn for every device in no particular order; fn must not keep
// the pointer.
func (s *State) Devices(fn func(*Device)) {
	for _, d := range s.devices {
		fn(d)
	}
}

// Len is the number of known devices.
func (s *State) Len() int { return len(s.devices) }

// Metrics returns the fleet metrics.
func (s *State) Metrics() Metrics {
	m := s.m
	m.Finished = m.Completed + m.Failed
	m.SuccessRate = 1
	if m.Finished > 0 {
		m.SuccessRate = float64(m.Completed) / float64(m.Finished)
	}
	if s.durN > 0 {
		m.AvgDuration = s.durSum / float64(s.durN)
		m.P95Duration = float64(s.durHist.quantile(0.95, s.durN))
	}
	return m
}

// Wave returns the counts of one wave.
func (s *State) Wave(jobID string, wave int) WaveCounts {
	if c := s.waves[WaveKey{jobID, wave}]; c != nil {
		return *c
	}
	return WaveCounts{}
}

// Apply folds one SHADOW event (reported, desired or presence) into the
// state and returns the device it changed. Events of other types are
// ignored (nil, nil); a malformed event is an error and changes nothing.
func (s *State) Apply(seq uint64, e events.Event) (*Device, error) {
	var d *Device
	switch e.Type {
	case events.TypeShadowReported:
		var r events.ShadowReportedData
		if err := e.DecodeData(&r); err != nil {
			return nil, err
		}
		d = s.device(r.TypeID, r.DeviceID)
		s.contribute(d, -1)
		d.Version = r.Firmware.Version
		d.Status = r.Firmware.Status
		d.PreviousVersion = r.Firmware.PreviousVersion
		d.Checksum = r.Firmware.Checksum
		d.ErrorCode = ""
		if r.Firmware.ErrorCode != nil {
			d.ErrorCode = *r.Firmware.ErrorCode
		}
		if r.Firmware.Status != events.StatusInProgress {
			d.Duration = r.Firmware.UpdateDuration
		}
		if e.Time.After(d.LastSeen) {
			d.LastSeen = e.Time
		}
		d.DeviceTime = r.Firmware.Timestamp
		d.Reports++
		d.Online = true
		if d.Presence == events.PresenceOffline {
			// It reports, so it is connected, but it did not say
			// "online": from here silence decides.
			d.Presence = ""
		}
		if d.Target != nil && !e.Time.Before(d.DesiredAt) {
			switch {
			case r.Firmware.Status == events.StatusFailed:
				d.JobStatus = JobFailed
			case r.Firmware.Status == events.StatusCompleted && r.Firmware.Version == d.Target.Version:
				d.JobStatus = JobCompleted
			case r.Firmware.Status == events.StatusInProgress && d.JobStatus != JobCompleted:
				d.JobStatus = JobInProgress
			}
		}
		s.contribute(d, +1)
	case events.TypeShadowDesired:
		var r events.ShadowDesiredData
		if err := e.DecodeData(&r); err != nil {
			return nil, err
		}
		d = s.device(r.TypeID, r.DeviceID)
		s.contribute(d, -1)
		target := r.Firmware
		d.Target = &target
		d.JobID, d.Wave, d.DesiredAt = r.JobID, r.Wave, e.Time
		d.JobStatus = JobPending
		if d.Status == events.StatusCompleted && d.Version == target.Version {
			d.JobStatus = JobCompleted
		}
		s.contribute(d, +1)
	case events.TypeDevicePresence:
		var r events.DevicePresenceData
		if err := e.DecodeData(&r); err != nil {
			return nil, err
		}
		switch r.State {
		case events.PresencePotentiallyOffline, events.PresenceOnline, events.PresenceOffline:
		default:
			return nil, fmt.Errorf("presence state %q of %s/%s is not %s, %s or %s", r.State, r.TypeID, r.DeviceID,
				events.PresenceOnline, events.PresenceOffline, events.PresencePotentiallyOffline)
		}
		d = s.device(r.TypeID, r.DeviceID)
		s.contribute(d, -1)
		switch r.State {
		case events.PresenceOnline:
			d.Presence, d.Online = events.PresenceOnline, true
		case events.PresenceOffline:
			d.Presence, d.Online = events.PresenceOffline, false
		default:
			// otawatch's guess from silence. The broker's word wins
			// (a device it says is online was guessed from an older
			// state), and a report newer than the guess already
			// proved the device online again.
			if d.Presence != events.PresenceOnline && !d.LastSeen.After(r.LastSeen) {
				d.Online = false
			}
		}
		s.contribute(d, +1)
	default:
		return nil, nil
	}
	if seq > s.LastSeq {
		s.LastSeq = seq
	}
	return d, nil
}

func (s *State) device(typeID, deviceID string) *Device {
	k := Key{typeID, deviceID}
	d := s.devices[k]
	if d == nil {
		d = &Device{TypeID: typeID, DeviceID: deviceID}
		s.devices[k] = d
	}
	return d
}

// contribute adds (sign +1) or removes (-1) a device's share of the
// metrics, so every Apply is O(log n) however large the fleet.
func (s *State) contribute(d *Device, sign int) {
	if d.Known() {
		s.m.Devices += sign
		switch {
		case d.Online:
			s.m.Online += sign
			switch d.Status {
			case events.StatusInProgress:
				s.m.InProgress += sign
			case events.StatusCompleted:
				s.m.Completed += sign
				s.durSum += float64(sign) * d.Duration
				s.durN += sign
				s.durHist.add(durationBucket(d.Duration), sign)
			case events.StatusFailed:
				s.m.Failed += sign
			}
		case d.Presence == events.PresenceOffline:
			s.m.Offline += sign
		default:
			s.m.PotentiallyOffline += sign
		}
	}
	if d.Target != nil {
		w := s.waves[WaveKey{d.JobID, d.Wave}]
		if w == nil {
			w = &WaveCounts{}
			s.waves[WaveKey{d.JobID, d.Wave}] = w
		}
		w.Targeted += sign
		switch d.JobStatus {
		case JobPending:
			w.Pending += sign
		case JobInProgress:
			w.InProgress += sign
		case JobCompleted:
			w.Completed += sign
		case JobFailed:
			w.Failed += sign
		}
		if d.Known() && !d.Online {
			w.Offline += sign
		}
	}
}

// Stale returns the devices that have just become potentially offline at
// now, in a stable order: online devices that have reported, owe a report
// (OwesReport) and have been quiet (QuietSince) since before now-after.
// A device the broker says is online is not judged by silence, and one
// that finished is idle however long it is silent. The caller publishes a
// device.presence potentially_offline event for each; applying it takes
// the device out of the success rate, so the next call does not return it
// again: one event per transition.
func (s *State) Stale(now time.Time, after time.Duration) []Device {
	var out []Device
	cutoff := now.Add(-after)
	for _, d := range s.devices {
		if d.Online && d.Reports > 0 && d.Presence != events.PresenceOnline && d.OwesReport() && d.QuietSince().Before(cutoff) {
			out = append(out, *d)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].TypeID != out[j].TypeID {
			return out[i].TypeID < out[j].TypeID
		}
		return out[i].DeviceID < out[j].DeviceID
	})
	return out
}

// snapshot is the serialised form of a State.
type snapshot struct {
	LastSeq uint64    `json:"lastSeq"`
	Devices []*Device `json:"devices"`
}

// MarshalJSON serialises the state (for a snapshot in JetStream KV).
func (s *State) MarshalJSON() ([]byte, error) {
	snap := snapshot{LastSeq: s.LastSeq, Devices: make([]*Device, 0, len(s.devices))}
	for _, d := range s.devices {
		snap.Devices = append(snap.Devices, d)
	}
	sort.Slice(snap.Devices, func(i, j int) bool {
		a, b := snap.Devices[i], snap.Devices[j]
		return a.TypeID < b.TypeID || a.TypeID == b.TypeID && a.DeviceID < b.DeviceID
	})
	return json.Marshal(snap)
}

// UnmarshalJSON restores a state written by MarshalJSON, rebuilding the
// metrics from the devices.
func (s *State) UnmarshalJSON(b []byte) error {
	var snap snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		return fmt.Errorf("decode fleet snapshot: %w", err)
	}
	*s = *New()
	s.LastSeq = snap.LastSeq
	for _, d := range snap.Devices {
		s.devices[Key{d.TypeID, d.DeviceID}] = d
		s.contribute(d, +1)
	}
	return nil
}

// maxDurationBucket is the largest one-second duration bucket; longer
// updates share it.
const maxDurationBucket = 4 * 3600

func durationBucket(sec float64) int {
	switch {
	case sec <= 0:
		return 0
	case sec >= maxDurationBucket:
		return maxDurationBucket
	}
	b := int(sec)
	if float64(b) < sec {
		b++ // round up: the bucket is an upper bound
	}
	return b
}

// fenwick is a binary indexed tree of counts per bucket, for quantiles in
// O(log n).
type fenwick []int

func newFenwick(n int) fenwick { return make(fenwick, n+1) }

func (f fenwick) add(i, delta int) {
	for i++; i < len(f); i += i & -i {
		f[i] += delta
	}
}

// quantile returns the smallest bucket whose cumulative count reaches q of
// total.
func (f fenwick) quantile(q float64, total int) int {
	if total <= 0 {
		return 0
	}
	rank := int(q*float64(total) + 0.999999999)
	if rank < 1 {
		rank = 1
	}
	pos, step := 0, 1
	for step*2 < len(f) {
		step *= 2
	}
	for ; step > 0; step /= 2 {
		if next := pos + step; next < len(f) && f[next] < rank {
			pos = next
			rank -= f[next]
		}
	}
	return pos // index pos+1 in the tree is bucket pos
}
