package api

import (
	"errors"
	"sort"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/silence"
)

// notifyCap is how many notification decisions the dashboard shows.
const notifyCap = 50

// maxDashboardSilences bounds the silences one push carries.
const maxDashboardSilences = 100

// notificationView is one line of the dashboard's notification list: a
// decision the notify service recorded on NOTIFY (sent, failed or
// suppressed). Attempts are not listed: each ends in a sent or failed
// event, or is made again.
type notificationView struct {
	// Seq is the NOTIFY sequence of the decision (of the latest one, for
	// suppressions merged into one line).
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Receiver string    `json:"receiver"`
	// Outcome is events.NotifySent, NotifyFailed or NotifySuppressed.
	Outcome string `json:"outcome"`
	// GroupKey is the group (route and group_by values); GroupLabels its
	// group_by values (sent and failed).
	GroupKey    string            `json:"groupKey"`
	GroupLabels map[string]string `json:"groupLabels,omitempty"`
	// Status is "firing" or "resolved" (sent and failed).
	Status string `json:"status,omitempty"`
	// Alerts is how many alerts the notification reported (firing and
	// resolved), or how many were suppressed.
	Alerts int `json:"alerts"`
	// Attempt, Code, Answer, Error and Final are the attempt's and what
	// the receiver made of it (events.NotificationData).
	Attempt int    `json:"attempt,omitempty"`
	Code    int    `json:"code,omitempty"`
	Answer  string `json:"answer,omitempty"`
	Error   string `json:"error,omitempty"`
	Final   bool   `json:"final,omitempty"`
	// Reason is why alerts were suppressed (events.SuppressedSilence, with
	// SilenceID, or events.SuppressedInhibited, with InhibitedBy).
	Reason      string `json:"reason,omitempty"`
	SilenceID   string `json:"silenceId,omitempty"`
	InhibitedBy string `json:"inhibitedBy,omitempty"`
}

// applyNotify folds one NOTIFY message: sent, failed and suppressed
// decisions go to the notification list, silences to the silence set.
// Attempts and types it does not know change nothing; a known event
// whose data does not decode is an error (the fold records it on
// REJECTED). Caller holds the write lock (apply).
func (m *model) applyNotify(seq uint64, subject string, e events.Event) error {
	switch e.Type {
	case events.TypeNotifySent, events.TypeNotifyFailed:
		var d events.NotificationData
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		n := notificationView{Seq: seq, Time: e.Time, Receiver: d.Receiver, Outcome: events.NotifySent,
			GroupKey: d.GroupKey, GroupLabels: d.GroupLabels, Status: d.Status, Alerts: len(d.Firing) + len(d.Resolved),
			Attempt: d.Attempt, Code: d.Code, Answer: d.Answer, Error: d.Error, Final: d.Final}
		if e.Type == events.TypeNotifyFailed {
			n.Outcome = events.NotifyFailed
		}
		if n.Receiver == "" {
			n.Receiver, _, _ = events.ParseNotifySubject(subject)
		}
		m.notifications.push(n)
	case events.TypeNotifySuppressed:
		var d events.SuppressedData
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		if d.Receiver == "" {
			d.Receiver, _, _ = events.ParseNotifySubject(subject)
		}
		// The notify service records a suppression per alert, and a group
		// of 200 silenced alerts would push everything else off the list:
		// one cause's suppressions in a row, for one group, are one line.
		if last := m.notifications.newest(); last != nil && last.Outcome == events.NotifySuppressed &&
			last.Receiver == d.Receiver && last.GroupKey == d.GroupKey && last.Reason == d.Reason &&
			last.SilenceID == d.SilenceID && last.InhibitedBy == d.InhibitedBy {
			last.Alerts++
			last.Seq, last.Time = seq, e.Time
			break
		}
		m.notifications.push(notificationView{Seq: seq, Time: e.Time, Receiver: d.Receiver, Outcome: events.NotifySuppressed,
			GroupKey: d.GroupKey, Alerts: 1, Reason: d.Reason, SilenceID: d.SilenceID, InhibitedBy: d.InhibitedBy})
	case events.TypeSilenceCreated:
		var d events.SilenceData
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		if d.ID == "" {
			return errors.New("silence without an id")
		}
		m.pruneSilences(e.Time)
		// The first record of an id holds (as in the notify service); one
		// that ended before this event is gone for good.
		if m.silences[d.ID] != nil || d.EndsAt.Before(e.Time) {
			return nil
		}
		m.silences[d.ID] = &silence.Silence{SilenceData: d}
	case events.TypeSilenceExpired:
		var d events.SilenceExpiredData
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		s := m.silences[d.ID]
		if s == nil || s.ExpiredAt != nil {
			return nil
		}
		at := d.At
		s.ExpiredAt, s.ExpiredBy = &at, d.By
	default:
		return nil
	}
	m.version.Add(1)
	return nil
}

// pruneSilences forgets the silences whose end is before at (an event's
// time). An expired one is kept until its EndsAt, so a late copy of its
// created event finds it and does not bring it back. Caller holds the
// lock.
func (m *model) pruneSilences(at time.Time) {
	for id, s := range m.silences {
		if s.EndsAt.Before(at) {
			delete(m.silences, id)
		}
	}
}

// recentNotifications returns the newest decisions first. Caller holds a
// lock.
func (m *model) recentNotifications() []notificationView { return m.notifications.list() }

// activeSilences returns the silences pending or active at now (created,
// not expired, not past their end), oldest first as GET /api/v1/silences
// lists them. Caller holds a lock.
func (m *model) activeSilences(now time.Time) []silenceView {
	out := []silenceView{}
	for _, s := range m.silences {
		if st := s.State(now); st != "expired" {
			out = append(out, silenceView{Silence: *s, State: st})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartsAt.Equal(out[j].StartsAt) {
			return out[i].StartsAt.Before(out[j].StartsAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}
