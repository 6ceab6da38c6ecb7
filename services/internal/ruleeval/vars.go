package ruleeval

import (
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// DeviceVars is the `device` variable of a rule: the keys of
// rules.Fields with Var "device".
func DeviceVars(d fleet.Device) map[string]any {
	target := ""
	if d.Target != nil {
		target = d.Target.Version
	}
	return map[string]any{
		"typeId":          d.TypeID,
		"deviceId":        d.DeviceID,
		"version":         d.Version,
		"status":          d.Status,
		"previousVersion": d.PreviousVersion,
		"checksum":        d.Checksum,
		"duration":        d.Duration,
		"errorCode":       d.ErrorCode,
		"reports":         float64(d.Reports),
		"lastSeen":        d.LastSeen,
		"deviceTime":      d.DeviceTime,
		"online":          d.Online,
		"presence":        d.Presence,
		"targeted":        d.Target != nil,
		"targetVersion":   target,
		"jobId":           d.JobID,
		"wave":            float64(d.Wave),
		"desiredAt":       d.DesiredAt,
		"jobStatus":       d.JobStatus,
		"quietSince":      d.QuietSince(),
	}
}

// FleetVars is the `fleet` variable of a rule. Counts are doubles so a rule
// can do arithmetic on them with rates and durations.
func FleetVars(m fleet.Metrics) map[string]any {
	return map[string]any{
		"devices":            float64(m.Devices),
		"online":             float64(m.Online),
		"potentiallyOffline": float64(m.PotentiallyOffline),
		"offline":            float64(m.Offline),
		"inProgress":         float64(m.InProgress),
		"completed":          float64(m.Completed),
		"failed":             float64(m.Failed),
		"finished":           float64(m.Finished),
		"successRate":        m.SuccessRate,
		"avgDuration":        m.AvgDuration,
		"p95Duration":        m.P95Duration,
	}
}

// Job is what alerting knows of a rollout job from the ROLLOUT stream.
type Job struct {
	ID string `json:"id"`
	// Status is one of events.Rollout* (created, running, paused,
	// completed, aborted).
	Status        string    `json:"status"`
	TargetVersion string    `json:"targetVersion,omitempty"`
	Wave          int       `json:"wave,omitempty"`
	CreatedAt     time.Time `json:"createdAt"`
	StartedAt     time.Time `json:"startedAt"`
	WaveStartedAt time.Time `json:"waveStartedAt"`
}

// Active reports whether the job is running (started, not paused, not
// finished).
func (j Job) Active() bool { return j.Status == events.RolloutRunning }

// RolloutVars is the `rollout` variable for a job (the zero Job when there
// is none) and the counts of its current wave.
func RolloutVars(j Job, w fleet.WaveCounts) map[string]any {
	return map[string]any{
		"active":         j.Active(),
		"jobId":          j.ID,
		"status":         j.Status,
		"targetVersion":  j.TargetVersion,
		"wave":           float64(j.Wave),
		"startedAt":      j.StartedAt,
		"waveStartedAt":  j.WaveStartedAt,
		"waveTargeted":   float64(w.Targeted),
		"wavePending":    float64(w.Pending),
		"waveInProgress": float64(w.InProgress),
		"waveCompleted":  float64(w.Completed),
		"waveFailed":     float64(w.Failed),
		"waveOffline":    float64(w.Offline),
	}
}

// EnvelopeVars is the part of the `event` variable known without decoding
// the event's data (rules.EnvelopeFields), or nil for a type rules do not
// see.
func EnvelopeVars(e events.Event) map[string]any {
	m := map[string]any{"time": e.Time, "id": e.ID, "type": e.Type, "source": e.Source}
	switch e.Type {
	case events.TypeShadowReported:
		m["kind"] = rules.KindReported
	case events.TypeShadowDesired:
		m["kind"] = rules.KindDesired
	case events.TypeDevicePresence:
		m["kind"] = rules.KindPresence
	default:
		name := events.RolloutEventName(e.Type)
		if name == "" {
			return nil
		}
		m["kind"], m["name"] = rules.KindRollout, name
	}
	return m
}

// EventVars is the `event` variable of an event: the keys of rules.Fields
// with Var "event" that its kind has. It is nil (and no error) for a type
// rules do not see, and an error for data that does not decode.
func EventVars(e events.Event) (map[string]any, error) {
	m := EnvelopeVars(e)
	if m == nil {
		return nil, nil
	}
	switch e.Type {
	case events.TypeShadowReported:
		var d events.ShadowReportedData
		if err := e.DecodeData(&d); err != nil {
			return nil, err
		}
		m["typeId"], m["deviceId"], m["topic"] = d.TypeID, d.DeviceID, d.Topic
		fw := d.Firmware
		m["version"], m["status"], m["checksum"], m["previousVersion"] = fw.Version, fw.Status, fw.Checksum, fw.PreviousVersion
		m["updateDuration"], m["deviceTime"] = fw.UpdateDuration, fw.Timestamp
		if fw.ErrorCode != nil {
			m["errorCode"] = *fw.ErrorCode
		}
	case events.TypeShadowDesired:
		var d events.ShadowDesiredData
		if err := e.DecodeData(&d); err != nil {
			return nil, err
		}
		m["typeId"], m["deviceId"] = d.TypeID, d.DeviceID
		m["jobId"], m["wave"], m["targetVersion"] = d.JobID, float64(d.Wave), d.Firmware.Version
	case events.TypeDevicePresence:
		var d events.DevicePresenceData
		if err := e.DecodeData(&d); err != nil {
			return nil, err
		}
		m["typeId"], m["deviceId"] = d.TypeID, d.DeviceID
		m["state"], m["lastSeen"] = d.State, d.LastSeen
	default:
		var d events.RolloutData
		if err := e.DecodeData(&d); err != nil {
			return nil, err
		}
		m["jobId"], m["wave"], m["reason"] = d.JobID, float64(d.Wave), d.Reason
		if d.Target != nil {
			m["targetVersion"] = d.Target.Version
		}
	}
	return m, nil
}

// deviceObject is a device as the `device` variable, read field by field
// (rules.Object): the tick evaluates every device without building a map
// for each. Its keys and values are DeviceVars'.
type deviceObject struct{ d *fleet.Device }

var deviceKeys = rules.FieldNames(rules.VarDevice)

func (o *deviceObject) Keys() []string { return deviceKeys }

func (o *deviceObject) Get(key string) (any, bool) {
	d := o.d
	switch key {
	case "typeId":
		return d.TypeID, true
	case "deviceId":
		return d.DeviceID, true
	case "version":
		return d.Version, true
	case "status":
		return d.Status, true
	case "previousVersion":
		return d.PreviousVersion, true
	case "checksum":
		return d.Checksum, true
	case "duration":
		return d.Duration, true
	case "errorCode":
		return d.ErrorCode, true
	case "reports":
		return float64(d.Reports), true
	case "lastSeen":
		return d.LastSeen, true
	case "deviceTime":
		return d.DeviceTime, true
	case "online":
		return d.Online, true
	case "presence":
		return d.Presence, true
	case "targeted":
		return d.Target != nil, true
	case "targetVersion":
		if d.Target != nil {
			return d.Target.Version, true
		}
		return "", true
	case "jobId":
		return d.JobID, true
	case "wave":
		return float64(d.Wave), true
	case "desiredAt":
		return d.DesiredAt, true
	case "jobStatus":
		return d.JobStatus, true
	case "quietSince":
		return d.QuietSince(), true
	}
	return nil, false
}

func (o *deviceObject) Bounded() bool {
	d := o.d
	for _, s := range []string{d.TypeID, d.DeviceID, d.Version, d.Status, d.PreviousVersion, d.Checksum, d.ErrorCode, d.JobID, d.JobStatus} {
		if len(s) > rules.MaxStringLen {
			return false
		}
	}
	return d.Target == nil || len(d.Target.Version) <= rules.MaxStringLen
}
