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
	// PresenceTopicFilter subscribes to every device's presence messages.
	PresenceTopicFilter = "iot-2/type/+/id/+/presence"
)

// PresenceOffline is the state of TypeDevicePresence when the broker says a
// device is offline: its will message (the broker publishes it when the
// device's connection drops without a DISCONNECT), or the device's own
// "offline" before it disconnects. PresenceOnline is the state when the
// device says it is connected. Both come from the device's presence topic
// through the bridge (source SourceBridge); PresencePotentiallyOffline is
// otawatch's guess from silence (source SourceAlerting), made only for a
// device that owes a report and says nothing about its connection.
const PresenceOffline = "offline"

// Payloads of the presence topic: the whole message is one of these words,
// nothing else (no JSON, no newline).
const (
	PresencePayloadOnline  = "online"
	PresencePayloadOffline = "offline"
)

// PresenceTopic is where a device tells whether it is connected (QoS 1):
// its MQTT will is this topic with payload "offline", and it publishes
// "online" here when it connects. Both may be retained, but then both must
// be: a retained "online" with a will that is not retained would outlive
// the connection, and a bridge that subscribes again is sent it.
//
// The contract is optional. A device that follows it is online or offline
// by what the broker says (offline at once when its connection drops); one
// that does not is judged by silence, and only while it owes a report.
func PresenceTopic(typeID, deviceID string) string {
	return "iot-2/type/" + typeID + "/id/" + deviceID + "/presence"
}

// ParsePresenceTopic returns the type and device id of a presence topic,
// and an error naming what is wrong with a topic that is not one or whose
// ids are not valid subject tokens (see ValidateID).
func ParsePresenceTopic(topic string) (typeID, deviceID string, err error) {
	var levels [8]string
	parts := splitTopic(topic, &levels)
	if len(parts) != 6 || parts[0] != "iot-2" || parts[1] != "type" || parts[3] != "id" || parts[5] != "presence" {
		return "", "", fmt.Errorf("topic %q is not iot-2/type/{typeId}/id/{deviceId}/presence", topic)
	}
	if err := ValidateID("type id", parts[2]); err != nil {
		return "", "", err
	}
	if err := ValidateID("device id", parts[4]); err != nil {
		return "", "", err
	}
	return parts[2], parts[4], nil
}

// IsPresenceTopic reports whether topic is meant as a presence topic: its
// last level is "presence". The bridge sends such a message to
// ParsePresenceTopic and ParsePresencePayload, and every other one to the
// report decoder; each refuses what is not its shape with the reason.
func IsPresenceTopic(topic string) bool {
	return strings.HasSuffix(topic, "/presence")
}

// ParsePresencePayload returns the presence state (PresenceOnline or
// PresenceOffline) of a presence message, or an error quoting (the start
// of) a payload that is neither "online" nor "offline".
func ParsePresencePayload(payload []byte) (string, error) {
	switch string(payload) {
	case PresencePayloadOnline:
		return PresenceOnline, nil
	case PresencePayloadOffline:
		return PresenceOffline, nil
	}
	shown := payload
	if len(shown) > 32 {
		shown = shown[:32]
	}
	return "", fmt.Errorf("presence payload %q (%d bytes) is not \"online\" or \"offline\"", shown, len(payload))
}

// PresenceMessageID is the id (and Nats-Msg-Id) of a presence message the
// bridge stores: device, state and the time the bridge received it. A
// presence message carries no timestamp or sequence of its own, so two
// "online" messages of a device can only be told apart by when they came;
// an MQTT redelivery of the same message is stored again, which changes
// nothing (the state is the same).
func PresenceMessageID(typeID, deviceID, state string, received time.Time) string {
	return IdentityID("pb", typeID, deviceID, state, received.UTC().Format(time.RFC3339Nano))
}

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
	var levels [8]string
	parts := splitTopic(topic, &levels)
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

// splitTopic splits topic at "/" into levels, as strings.Split does, for a
// topic of at most 7 levels; a longer one gives 8 levels, the last holding
// the rest. The bridge parses every report's topic, and strings.Split
// allocated for each one.
func splitTopic(topic string, levels *[8]string) []string {
	n := 0
	for n < len(levels)-1 {
		level, rest, found := strings.Cut(topic, "/")
		levels[n] = level
		n++
		if !found {
			return levels[:n]
		}
		topic = rest
	}
	levels[n] = topic
	return levels[:n+1]
}
