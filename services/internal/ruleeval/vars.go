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
	quiet := d.LastSeen
	if d.DesiredAt.After(quiet) {
		quiet = d.DesiredAt
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
		"targeted":        d.Target != nil,
		"targetVersion":   target,
		"jobId":           d.JobID,
		"wave":            float64(d.Wave),
		"desiredAt":       d.DesiredAt,
		"jobStatus":       d.JobStatus,
		"quietSince":      quiet,
	}
}

// FleetVars is the `fleet` variable of a rule. Counts are doubles so a rule
// can do arithmetic on them with rates and durations.
func FleetVars(m fleet.Metrics) map[string]any {
	return map[string]any{
		"devices":            float64(m.Devices),
		"online":             float64(m.Online),
		"potentiallyOffline": float64(m.PotentiallyOffline),
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

// EventVars is the `event` variable of an event: the keys of rules.Fields
// with Var "event" that its kind has. It is nil (and no error) for a type
// rules do not see, and an error for data that does not decode.
func EventVars(e events.Event) (map[string]any, error) {
	m := map[string]any{"time": e.Time, "id": e.ID, "type": e.Type, "source": e.Source}
	switch e.Type {
	case events.TypeShadowReported:
		var d events.ShadowReportedData
		if err := e.DecodeData(&d); err != nil {
			return nil, err
		}
		m["kind"] = rules.KindReported
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
		m["kind"] = rules.KindDesired
		m["typeId"], m["deviceId"] = d.TypeID, d.DeviceID
		m["jobId"], m["wave"], m["targetVersion"] = d.JobID, float64(d.Wave), d.Firmware.Version
	case events.TypeDevicePresence:
		var d events.DevicePresenceData
		if err := e.DecodeData(&d); err != nil {
			return nil, err
		}
		m["kind"] = rules.KindPresence
		m["typeId"], m["deviceId"] = d.TypeID, d.DeviceID
		m["state"], m["lastSeen"] = d.State, d.LastSeen
	default:
		name := events.RolloutEventName(e.Type)
		if name == "" {
			return nil, nil
		}
		var d events.RolloutData
		if err := e.DecodeData(&d); err != nil {
			return nil, err
		}
		m["kind"] = rules.KindRollout
		m["name"], m["jobId"], m["wave"], m["reason"] = name, d.JobID, float64(d.Wave), d.Reason
		if d.Target != nil {
			m["targetVersion"] = d.Target.Version
		}
	}
	return m, nil
}
