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
	s, ok := ParseShadowSubject(subject)
	return s.TypeID, s.DeviceID, ok
}

// ShadowSubject is a SHADOW stream subject taken apart.
type ShadowSubject struct {
	// Kind is SubjectShadowReported, SubjectShadowDesired or
	// SubjectDevicePresence.
	Kind             string
	TypeID, DeviceID string
}

// ParseShadowSubject takes apart shadow.reported.{typeId}.{deviceId},
// shadow.desired.{typeId}.{deviceId} and device.presence.{typeId}.{deviceId}.
func ParseShadowSubject(subject string) (ShadowSubject, bool) {
	for _, kind := range []string{SubjectShadowReported, SubjectShadowDesired, SubjectDevicePresence} {
		if rest, ok := strings.CutPrefix(subject, kind+"."); ok {
			t, ok := tokens(rest, 2)
			if !ok {
				return ShadowSubject{}, false
			}
			return ShadowSubject{Kind: kind, TypeID: t[0], DeviceID: t[1]}, true
		}
	}
	return ShadowSubject{}, false
}

// ParseRolloutSubject takes apart rollout.{jobId}.{event}.
func ParseRolloutSubject(subject string) (jobID, event string, ok bool) {
	t, ok := cutTokens(subject, SubjectRollout, 2)
	if !ok {
		return "", "", false
	}
	return t[0], t[1], true
}

// AlertSubjectParts is an ALERTS stream subject taken apart.
type AlertSubjectParts struct {
	State, Severity, RuleID string
}

// ParseAlertSubject takes apart alert.{raised,resolved}.{severity}.{ruleId}.
func ParseAlertSubject(subject string) (AlertSubjectParts, bool) {
	t, ok := cutTokens(subject, SubjectAlert, 3)
	if !ok {
		return AlertSubjectParts{}, false
	}
	return AlertSubjectParts{State: t[0], Severity: t[1], RuleID: t[2]}, true
}

// ParseNotifySubject takes apart notify.{receiver}.{outcome}.
func ParseNotifySubject(subject string) (receiver, outcome string, ok bool) {
	t, ok := cutTokens(subject, SubjectNotify, 2)
	if !ok {
		return "", "", false
	}
	return t[0], t[1], true
}

// cutTokens splits subject into root and exactly n more non-empty tokens.
func cutTokens(subject, root string, n int) ([]string, bool) {
	rest, ok := strings.CutPrefix(subject, root+".")
	if !ok {
		return nil, false
	}
	return tokens(rest, n)
}

// tokens splits s at dots into exactly n non-empty tokens.
func tokens(s string, n int) ([]string, bool) {
	t := strings.Split(s, ".")
	if len(t) != n {
		return nil, false
	}
	for _, x := range t {
		if x == "" {
			return nil, false
		}
	}
	return t, true
}
