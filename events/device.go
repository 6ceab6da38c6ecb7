package events

import (
	"fmt"
	"strings"
	"time"
)

// MQTT topics of the device contract (the seed system's Watson IoT topics).
const (
	// ReportTopicFilter subscribes to every device's reports.
	ReportTopicFilter = "iot-2/type/+/id/+/update/shadow"
)

// ReportTopic is where a device publishes its shadow reports (QoS 1).
func ReportTopic(typeID, deviceID string) string {
	return "iot-2/type/" + typeID + "/id/" + deviceID + "/update/shadow"
}

// DeltaTopic is where otawatch publishes a device's desired firmware (QoS 1,
// retained), so a device that was offline receives it when it reconnects.
// When a job is aborted, otawatch clears the retained message with a
// zero-length retained publish (MQTT's way to delete one). A subscribed
// device receives that empty message (after its queued copy of the delta,
// if it was offline with a persistent session) and should take it as
// "nothing desired": drop a desired state it has not started installing.
func DeltaTopic(typeID, deviceID string) string {
	return "iot-2/type/" + typeID + "/id/" + deviceID + "/shadow/delta"
}

// ParseReportTopic returns the type and device id of a report topic, and an
// error naming what is wrong with a topic that is not one or whose ids are
// not valid subject tokens (see ValidateID).
func ParseReportTopic(topic string) (typeID, deviceID string, err error) {
	parts := strings.Split(topic, "/")
	if len(parts) != 7 || parts[0] != "iot-2" || parts[1] != "type" || parts[3] != "id" || parts[5] != "update" || parts[6] != "shadow" {
		return "", "", fmt.Errorf("topic %q is not iot-2/type/{typeId}/id/{deviceId}/update/shadow", topic)
	}
	if err := ValidateID("type id", parts[2]); err != nil {
		return "", "", err
	}
	if err := ValidateID("device id", parts[4]); err != nil {
		return "", "", err
	}
	return parts[2], parts[4], nil
}

// ShadowDelta is the desired-state message on DeltaTopic and the body of
// GET /api/v0002/device/types/{typeId}/devices/{deviceId}/shadow/delta. An
// empty State means the device is in sync.
type ShadowDelta struct {
	State     DeltaState `json:"state"`
	Timestamp time.Time  `json:"timestamp"`
}

// DeltaState holds the parts of the shadow that differ.
type DeltaState struct {
	Firmware *DeltaFirmware `json:"firmware,omitempty"`
}

// DeltaFirmware is the firmware a device should install, and the job that
// asks for it.
type DeltaFirmware struct {
	Version  string `json:"version"`
	Checksum string `json:"checksum"`
	URL      string `json:"url"`
	JobID    string `json:"jobId"`
}
