package events

import (
	"time"
)

// Event types. A type's suffix is its version: a change that breaks a
// decoder gets a new type, and both are decoded for as long as the log holds
// the old one.
const (
	TypeShadowReported = "io.otawatch.shadow.reported.v1"
	TypeShadowDesired  = "io.otawatch.shadow.desired.v1"
	TypeDevicePresence = "io.otawatch.device.presence.v1"
	TypeRejected       = "io.otawatch.rejected.v1"
)

// Event sources (the CloudEvents source attribute) of otawatch's services.
const (
	SourceBridge    = "otawatch/bridge"
	SourceProjector = "otawatch/projector"
	SourceAlerting  = "otawatch/alerting"
	SourceRollout   = "otawatch/rollout"
	SourceNotify    = "otawatch/notify"
	SourceAPI       = "otawatch/api"
)

// Firmware statuses a device reports.
const (
	StatusInProgress = "in_progress"
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
)

// Firmware is the firmware part of a device shadow report, as the device sent
// it (the seed system's payload).
type Firmware struct {
	Version         string    `json:"version"`
	Timestamp       time.Time `json:"timestamp"`
	Status          string    `json:"status"`
	Checksum        string    `json:"checksum,omitempty"`
	PreviousVersion string    `json:"previousVersion,omitempty"`
	// UpdateDuration is in seconds; absent (0) while in progress.
	UpdateDuration float64 `json:"updateDuration,omitempty"`
	// ErrorCode is nil unless the update failed.
	ErrorCode *string `json:"errorCode"`
}

// ShadowReportedData is the data of TypeShadowReported: one accepted report.
// The envelope's time is when the bridge accepted it; Firmware.Timestamp is
// the device's own clock.
type ShadowReportedData struct {
	TypeID   string   `json:"typeId"`
	DeviceID string   `json:"deviceId"`
	Topic    string   `json:"topic"`
	Firmware Firmware `json:"firmware"`
	// PayloadSHA256 is the SHA-256 (lower-case hex) of the MQTT payload
	// exactly as the device sent it, so a device-side log can be matched to
	// the record (README, "Audit: tamper evidence"). Empty on events
	// recorded before it was added.
	PayloadSHA256 string `json:"payloadSha256,omitempty"`
}

// ReportEventID is the deterministic id (and Nats-Msg-Id) of a report: the
// same device, firmware timestamp, status and version make the same id, so a
// redelivered or retried report is stored once.
func ReportEventID(typeID, deviceID string, fw Firmware) string {
	// IdentityID("sr", typeID, deviceID, fw.Timestamp.UTC().Format(time.RFC3339Nano),
	// fw.Status, fw.Version), without its allocations: the bridge makes one
	// per report.
	var buf [256]byte
	b := append(append(buf[:0], typeID...), 0)
	b = append(append(b, deviceID...), 0)
	b = append(fw.Timestamp.UTC().AppendFormat(b, time.RFC3339Nano), 0)
	b = append(append(b, fw.Status...), 0)
	b = append(append(b, fw.Version...), 0)
	return identityOf("sr", b)
}

// DesiredFirmware is the target a rollout asks a device to install.
type DesiredFirmware struct {
	Version  string `json:"version"`
	Checksum string `json:"checksum"`
	URL      string `json:"url"`
}

// ShadowDesiredData is the data of TypeShadowDesired: the desired firmware
// sent to one device by a rollout job's wave.
type ShadowDesiredData struct {
	TypeID   string          `json:"typeId"`
	DeviceID string          `json:"deviceId"`
	JobID    string          `json:"jobId"`
	Wave     int             `json:"wave"`
	Firmware DesiredFirmware `json:"firmware"`
	// Attempt is 0 for a wave's first send and n for the job's n-th
	// retry-failed round, so a retried send is a new event (its Nats-Msg-Id
	// differs) and a restarted orchestrator knows which round it recorded.
	Attempt int `json:"attempt,omitempty"`
}

// Presence states of TypeDevicePresence.
const (
	PresenceOnline             = "online"
	PresencePotentiallyOffline = "potentially_offline"
)

// DevicePresenceData is the data of TypeDevicePresence.
type DevicePresenceData struct {
	TypeID   string    `json:"typeId"`
	DeviceID string    `json:"deviceId"`
	State    string    `json:"state"`
	LastSeen time.Time `json:"lastSeen"`
}

// RejectedData is the data of TypeRejected: input that could not be accepted,
// kept raw with the reason so nothing silently disappears.
type RejectedData struct {
	Source string `json:"source"`
	Reason string `json:"reason"`
	// Topic is the MQTT topic, for input from the bridge.
	Topic string `json:"topic,omitempty"`
	// Stream and StreamSeq locate the event, for input from the log.
	Stream    string `json:"stream,omitempty"`
	StreamSeq uint64 `json:"streamSeq,omitempty"`
	// Raw is the input as received (base64 in JSON), at most its first
	// MaxRejectedRaw bytes.
	Raw []byte `json:"raw"`
	// Size and SHA256 (hex) are the length and digest of the whole input,
	// so a record whose Raw was cut still identifies what was sent.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	// Truncated is true when Raw holds only the start of the input.
	Truncated bool `json:"truncated,omitempty"`
}
