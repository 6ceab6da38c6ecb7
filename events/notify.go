package events

import (
	"strconv"
	"strings"
	"time"
)

// Notification event types, on NOTIFY (services/notify). Every routing and
// delivery decision is one of them:
//
//   - attempt (notify.{receiver}.attempt): a group of alerts became a
//     notification and one delivery attempt of it starts. It is stored
//     before the receiver is called, so an attempt whose answer was lost
//     (a crash) is still on the record.
//   - sent (notify.{receiver}.sent): the receiver accepted it, with its
//     answer. A sent notification is never sent again, whoever replays
//     what.
//   - failed (notify.{receiver}.failed): one attempt failed, with the
//     error; Final says no further attempt follows.
//   - suppressed (notify.{receiver}.suppressed): an alert was kept out of
//     the receiver's notifications by a silence or an inhibition.
//
// Silences live on the same stream, on notify.silence.{created,expired},
// so they survive restarts and replays like every other decision.
const (
	TypeNotifyAttempt    = "io.otawatch.notify.attempt.v1"
	TypeNotifySent       = "io.otawatch.notify.sent.v1"
	TypeNotifyFailed     = "io.otawatch.notify.failed.v1"
	TypeNotifySuppressed = "io.otawatch.notify.suppressed.v1"
	TypeSilenceCreated   = "io.otawatch.notify.silence.created.v1"
	TypeSilenceExpired   = "io.otawatch.notify.silence.expired.v1"
)

// Notification outcomes: the last token of notify.{receiver}.{outcome}.
const (
	NotifyAttempt    = "attempt"
	NotifySent       = "sent"
	NotifyFailed     = "failed"
	NotifySuppressed = "suppressed"
)

// NotifySilences is the second token of the silence subjects
// (notify.silence.created, notify.silence.expired): no receiver may be
// named so.
const NotifySilences = "silence"

// Silence actions: the last token of a silence subject.
const (
	SilenceCreated = "created"
	SilenceExpired = "expired"
)

// SilenceSubject is the subject of a silence event; action is
// SilenceCreated or SilenceExpired.
func SilenceSubject(action string) string {
	return SubjectNotify + "." + NotifySilences + "." + action
}

// Suppression reasons (SuppressedData.Reason).
const (
	SuppressedSilence   = "silence"
	SuppressedInhibited = "inhibited"
)

// NotificationData is the data of the attempt, sent and failed events: one
// notification (a group of alerts for one receiver) and, for sent and
// failed, how one attempt ended.
type NotificationData struct {
	// ID identifies the notification: the same receiver, group, alerts
	// and count of earlier notifications of the group make the same id,
	// whichever instance computes it.
	ID       string `json:"id"`
	Receiver string `json:"receiver"`
	// GroupKey is the group (route and group_by values): a receiver that
	// deduplicates derives its key from it.
	GroupKey    string            `json:"groupKey"`
	GroupLabels map[string]string `json:"groupLabels,omitempty"`
	// Status is "firing" or "resolved".
	Status string `json:"status"`
	// Firing and Resolved are the alerts the notification reports
	// (NotifyAlertID), sorted.
	Firing   []string `json:"firing,omitempty"`
	Resolved []string `json:"resolved,omitempty"`
	// Count is the number of notifications of the group sent before this
	// one.
	Count int `json:"count"`
	// DecidedAt is when the notification was first decided: every
	// attempt at it, by whichever instance, carries this time (a
	// receiver's idempotency key may derive from it).
	DecidedAt time.Time `json:"decidedAt"`
	// Attempt numbers the delivery attempts of this notification from 1.
	Attempt int `json:"attempt"`
	// Code is the receiver's HTTP status or SMTP reply code, Answer what
	// it said (sent and failed).
	Code   int    `json:"code,omitempty"`
	Answer string `json:"answer,omitempty"`
	// Error is why the attempt failed; Retry whether another attempt may
	// succeed; Final that none follows (failed).
	Error string `json:"error,omitempty"`
	Retry bool   `json:"retry,omitempty"`
	Final bool   `json:"final,omitempty"`
}

// NotificationID is the deterministic id of a notification (see
// NotificationData.ID). firing and resolved must be sorted.
func NotificationID(receiver, groupKey, status string, count int, firing, resolved []string) string {
	return IdentityID("nt", receiver, groupKey, status, strconv.Itoa(count), strings.Join(firing, ","), strings.Join(resolved, ","))
}

// NotifyEventID is the id (and Nats-Msg-Id) of a notification's event of
// outcome for attempt: an attempt recorded twice (a restart) is stored
// once.
func NotifyEventID(notificationID, outcome string, attempt int) string {
	return IdentityID("nf", notificationID, outcome, strconv.Itoa(attempt))
}

// SuppressedData is the data of TypeNotifySuppressed: one alert kept from
// one receiver, and why.
type SuppressedData struct {
	Receiver string `json:"receiver"`
	GroupKey string `json:"groupKey"`
	// AlertID is the alert (NotifyAlertID); Key, RuleID, Severity, JobID
	// and DeviceID repeat it for readers of the stream.
	AlertID  string `json:"alertId"`
	Key      string `json:"key"`
	RuleID   string `json:"ruleId"`
	Severity string `json:"severity"`
	JobID    string `json:"jobId,omitempty"`
	DeviceID string `json:"deviceId,omitempty"`
	// Reason is SuppressedSilence (SilenceID says which) or
	// SuppressedInhibited (InhibitedBy is the inhibiting alert's id).
	Reason      string `json:"reason"`
	SilenceID   string `json:"silenceId,omitempty"`
	InhibitedBy string `json:"inhibitedBy,omitempty"`
}

// SuppressedEventID is the id of an alert's suppression for a receiver by
// one silence or inhibiting alert (cause): recorded once.
func SuppressedEventID(receiver, alertID, reason, cause string) string {
	return IdentityID("ns", receiver, alertID, reason, cause)
}

// NotifyAlertID identifies an alert (not one of its events): its key,
// severity and start. The raised and the resolved event of one alert have
// the same NotifyAlertID.
func NotifyAlertID(a AlertData) string {
	return IdentityID("na", a.Key, a.Severity, a.StartsAt.UTC().Format(time.RFC3339Nano))
}

// SilenceData is the data of TypeSilenceCreated.
type SilenceData struct {
	// ID names the silence (generated by whoever creates it).
	ID string `json:"id"`
	// Matchers select the alerts it silences, Alertmanager's syntax:
	// name="value", name!="value", name=~"regex", name!~"regex"; all must
	// match. Names are an alert's labels (services/notify: severity,
	// rule, job, wave, device_type, device and the rule's labels).
	Matchers []string `json:"matchers"`
	// StartsAt and EndsAt bound when it silences.
	StartsAt time.Time `json:"startsAt"`
	EndsAt   time.Time `json:"endsAt"`
	// CreatedBy is the identity that created it; Comment why.
	CreatedBy string `json:"createdBy"`
	Comment   string `json:"comment,omitempty"`
}

// SilenceExpiredData is the data of TypeSilenceExpired: a silence ended
// before its EndsAt.
type SilenceExpiredData struct {
	ID string `json:"id"`
	// At is when it was expired; By is who expired it.
	At time.Time `json:"at"`
	By string    `json:"by"`
}

// SilenceEventID is the id of a silence's created or expired event.
func SilenceEventID(silenceID, action string) string {
	return IdentityID("sl", silenceID, action)
}
