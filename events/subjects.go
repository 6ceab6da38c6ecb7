package events

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Subject roots. Every subject of the log starts with one of these.
const (
	SubjectShadowReported = "shadow.reported" // shadow.reported.{typeId}.{deviceId}
	SubjectShadowDesired  = "shadow.desired"  // shadow.desired.{typeId}.{deviceId}
	SubjectDevicePresence = "device.presence" // device.presence.{typeId}.{deviceId}
	SubjectRollout        = "rollout"         // rollout.{jobId}.{event}
	SubjectAlert          = "alert"           // alert.{raised,resolved}.{severity}.{ruleId}
	SubjectNotify         = "notify"          // notify.{receiver}.{sent,failed,suppressed}
	SubjectRejected       = "rejected"        // rejected.{source}
)

// MaxIDLen is the longest type, device, job, rule or receiver id accepted.
const MaxIDLen = 64

// ValidateID checks that id may become a subject token: 1 to MaxIDLen
// characters from [A-Za-z0-9_-]. Dots, wildcards (* and >), spaces and every
// other character are refused, because NATS (and its MQTT mapping) would turn
// them into extra tokens, wildcards or a dropped connection. kind names the id
// in the error ("device id").
func ValidateID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%s is empty", kind)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%s is %d bytes long, the limit is %d", kind, len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !idChar(c) {
			return fmt.Errorf("%s %q %s; allowed are A-Z a-z 0-9 _ -", kind, id, badIDChar(id, i))
		}
	}
	return nil
}

// badIDChar says, for a person, what is wrong with the character at byte i
// of id. A byte alone would show 'Ã' for the first byte of "é", so it reads
// the character as UTF-8: "has 'é' (U+00E9) at byte 1", "has a space at
// byte 3", "has a control character (U+0009) at byte 3", or "is not valid
// UTF-8 (byte 0xC3 at byte 1)".
func badIDChar(id string, i int) string {
	r, size := utf8.DecodeRuneInString(id[i:])
	switch {
	case r == utf8.RuneError && size <= 1:
		return fmt.Sprintf("is not valid UTF-8 (byte 0x%02X at byte %d)", id[i], i)
	case r == ' ':
		return fmt.Sprintf("has a space at byte %d", i)
	case unicode.IsControl(r):
		return fmt.Sprintf("has a control character (%U) at byte %d", r, i)
	case unicode.IsSpace(r):
		return fmt.Sprintf("has a white-space character (%U) at byte %d", r, i)
	case r < utf8.RuneSelf:
		return fmt.Sprintf("has %q at byte %d", r, i)
	case !unicode.IsPrint(r):
		return fmt.Sprintf("has an invisible character (%U) at byte %d", r, i)
	}
	return fmt.Sprintf("has %q (%U) at byte %d", r, r, i)
}

func idChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// ShadowReportedSubject is the subject of a device's accepted reports. The ids
// must have passed ValidateID.
func ShadowReportedSubject(typeID, deviceID string) string {
	return SubjectShadowReported + "." + typeID + "." + deviceID
}

// ShadowDesiredSubject is the subject of a device's desired-state changes.
func ShadowDesiredSubject(typeID, deviceID string) string {
	return SubjectShadowDesired + "." + typeID + "." + deviceID
}

// DevicePresenceSubject is the subject of a device's online/offline transitions.
func DevicePresenceSubject(typeID, deviceID string) string {
	return SubjectDevicePresence + "." + typeID + "." + deviceID
}

// RolloutSubject is the subject of a rollout job's event (event is the last
// token of the job event's type, e.g. "wave_started").
func RolloutSubject(jobID, event string) string {
	return SubjectRollout + "." + jobID + "." + event
}

// AlertSubject is the subject of an alert lifecycle event; state is "raised"
// or "resolved".
func AlertSubject(state, severity, ruleID string) string {
	return SubjectAlert + "." + state + "." + severity + "." + ruleID
}

// NotifySubject is the subject of a notification decision; outcome is "sent",
// "failed" or "suppressed".
func NotifySubject(receiver, outcome string) string {
	return SubjectNotify + "." + receiver + "." + outcome
}

// RejectedSubject is the subject of input a source could not accept.
func RejectedSubject(source string) string { return SubjectRejected + "." + source }

// DeviceFromSubject returns the type and device id of a shadow or presence
// subject ("shadow.reported.{typeId}.{deviceId}" and the like).
func DeviceFromSubject(subject string) (typeID, deviceID string, ok bool) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 {
		return "", "", false
	}
	return parts[2], parts[3], true
}
