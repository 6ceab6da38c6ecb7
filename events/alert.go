package events

import (
	"time"
)

// Alert event types, on subject AlertSubject(state, severity, ruleId).
const (
	TypeAlertRaised   = "io.otawatch.alert.raised.v1"
	TypeAlertResolved = "io.otawatch.alert.resolved.v1"
)

// Alert states: the state token of an alert subject and AlertData.State.
const (
	AlertRaised   = "raised"
	AlertResolved = "resolved"
)

// Why an alert was resolved (AlertData.Reason).
const (
	// ResolvedCleared: the rule's condition no longer holds.
	ResolvedCleared = "cleared"
	// ResolvedSeverityChanged: the condition now holds at another level
	// of the rule (escalated or de-escalated); a raised event with the new
	// severity and the same key follows.
	ResolvedSeverityChanged = "severity_changed"
	// ResolvedRuleRemoved: the rule was deleted or disabled.
	ResolvedRuleRemoved = "rule_removed"
)

// AlertData is the data of TypeAlertRaised and TypeAlertResolved. An
// alert is one (Key, Severity, StartsAt): raised once, resolved once. A
// severity change of the same key resolves the old alert and raises a new
// one, so a receiver routing by severity sees both.
type AlertData struct {
	// Key is stable for what the alert is about: "rule/typeId/deviceId"
	// for a device rule, "rule/fleet" for a fleet rule.
	Key      string `json:"key"`
	RuleID   string `json:"ruleId"`
	Severity string `json:"severity"`
	// State is AlertRaised or AlertResolved.
	State    string `json:"state"`
	TypeID   string `json:"typeId,omitempty"`
	DeviceID string `json:"deviceId,omitempty"`
	// JobID and Wave are the rollout job and wave the alert happened in,
	// if any.
	JobID  string            `json:"jobId,omitempty"`
	Wave   int               `json:"wave,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// Message is the rule's message, rendered when the alert was raised.
	Message string `json:"message"`
	// Value is the rule's value expression when the alert was raised.
	Value *float64 `json:"value,omitempty"`
	// StartsAt is the event or tick time the condition started to hold
	// (before `for`, if the rule has one).
	StartsAt time.Time `json:"startsAt"`
	// EndsAt is the event or tick time it was resolved (resolved only).
	EndsAt *time.Time `json:"endsAt,omitempty"`
	// Reason says why it was resolved (Resolved* constants).
	Reason string `json:"reason,omitempty"`
}

// AlertEventID is the deterministic id (and Nats-Msg-Id) of an alert's
// raised or resolved event: the same alert computed again, by a restart or
// a replay, has the same id.
func AlertEventID(key, severity string, startsAt time.Time, state string) string {
	return IdentityID("al", key, severity, startsAt.UTC().Format(time.RFC3339Nano), state)
}

// AlertEventType is the event type of an alert state.
func AlertEventType(state string) string {
	if state == AlertResolved {
		return TypeAlertResolved
	}
	return TypeAlertRaised
}

// PresenceEventID is the deterministic id of a device's presence
// transition: one per device, state and silence (the last report before
// it), whoever computes it and whenever.
func PresenceEventID(typeID, deviceID, state string, lastSeen time.Time) string {
	return IdentityID("pr", typeID, deviceID, state, lastSeen.UTC().Format(time.RFC3339Nano))
}
