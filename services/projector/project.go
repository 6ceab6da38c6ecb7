package projector

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/otawatch/otawatch/events"
)

// kind says which table an item's row goes to.
type kind uint8

const (
	kindNone kind = iota // poison: no row
	kindShadow
	kindDevice
	kindRollout
	kindAlert
	kindNotification
)

// item is one message of the log, decoded once and projected to its row.
type item struct {
	stream  string
	seq     uint64
	subject string
	raw     []byte
	kind    kind
	// poison says why the event cannot be projected (kind is kindNone).
	poison string

	// The row, by kind: a report's inline (most events are reports), the
	// others behind a pointer, which keeps an item small.
	shadow       shadowRow
	device       *deviceEventRow
	rollout      *rolloutRow
	alert        *alertRow
	notification *notificationRow
}

// deviceKey names a device.
type deviceKey struct{ typeID, deviceID string }

// desiredEntry is one shadow.desired event of a device.
type desiredEntry struct {
	seq   uint64
	jobID string
	wave  uint32
}

// desiredIndex folds the SHADOW stream's desired-state events: for each
// device, every desired event by stream sequence. A report takes the job and
// wave of the last desired event before it in the stream, which depends only
// on the log, not on the order the projector sees messages in: a
// redelivery, a restart or a replay from the middle gives the same answer,
// as long as the index holds every desired event before the report.
//
// through says how far it does: every desired event up to that sequence
// is in the index. warmDesired fills it up to where the stream was at
// start; after that, an instance that is delivered every message of the
// stream in order (one projector, a replay) moves it on as it prepares
// them (seen). Instances sharing the durable consumer are each delivered
// part of the stream, so a report's desired event may have gone to the
// other one: before a batch's reports take their job and wave, catchUp
// reads the desired events this instance was not delivered.
//
// The reader goroutine (prepare) and the batches being written use it at
// once, hence the lock.
type desiredIndex struct {
	mu      sync.Mutex
	m       map[deviceKey][]desiredEntry
	through uint64
	// catching serialises catchUp, so two batches do not read the same
	// events.
	catching sync.Mutex
}

func newDesiredIndex() *desiredIndex { return &desiredIndex{m: map[deviceKey][]desiredEntry{}} }

// add records a desired event; adding one twice is harmless.
func (x *desiredIndex) add(k deviceKey, e desiredEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	list := x.m[k]
	i := sort.Search(len(list), func(i int) bool { return list[i].seq >= e.seq })
	if i < len(list) && list[i].seq == e.seq {
		list[i] = e
		return
	}
	list = append(list, desiredEntry{})
	copy(list[i+1:], list[i:])
	list[i] = e
	x.m[k] = list
}

// at returns the last desired event of the device before seq.
func (x *desiredIndex) at(k deviceKey, seq uint64) (desiredEntry, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	list := x.m[k]
	i := sort.Search(len(list), func(i int) bool { return list[i].seq >= seq })
	if i == 0 {
		return desiredEntry{}, false
	}
	return list[i-1], true
}

// seen records that the event at seq was projected (its desired event, if
// it is one, added): when it follows the complete part, that part now
// ends at seq.
func (x *desiredIndex) seen(seq uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if seq == x.through+1 {
		x.through = seq
	}
}

// cover records that every desired event up to seq is in the index.
func (x *desiredIndex) cover(seq uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.through = max(x.through, seq)
}

// complete is the sequence up to which the index holds every desired event.
func (x *desiredIndex) complete() uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.through
}

// size is the number of desired events held.
func (x *desiredIndex) size() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for _, l := range x.m {
		n += len(l)
	}
	return n
}

// minTime and maxTime bound what a ClickHouse DateTime holds: seconds
// since 1970 in a UInt32, 1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z.
var (
	minTime = time.Unix(0, 0).UTC()
	maxTime = time.Unix(1<<32-1, 0).UTC()
)

// chTime is t for a DateTime column, and whether the column can hold it.
// ClickHouse stores a time outside the range as 0000-00-00 00:00:00 and
// reports no error, and clamping would store a date that never happened:
// an event with such a time is poison instead, recorded on REJECTED with
// the reason (timeReason). The bridge refuses report timestamps outside a
// narrower window (schemas.ReportTimeOK), so only an event written before
// that check, or by another writer, gets here.
func chTime(t time.Time) (time.Time, bool) {
	if s := t.Unix(); s < 0 || s > 1<<32-1 {
		return time.Time{}, false
	}
	return t.UTC(), true
}

// timeReason is the REJECTED reason for a time chTime refuses; what names
// it ("event time", "firmware timestamp").
func timeReason(what string, t time.Time) string {
	return fmt.Sprintf("%s %s is outside what a ClickHouse DateTime holds (%s to %s)",
		what, t.UTC().Format(time.RFC3339Nano), minTime.Format(time.RFC3339), maxTime.Format(time.RFC3339))
}

func waveOf(n int) uint32 {
	if n < 0 || n > 1<<31 {
		return 0
	}
	return uint32(n)
}

// project decodes one message's envelope and data and fills the item's row.
// An envelope that does not decode, or a report whose data does not, makes
// the item poison. index is the desired fold of the SHADOW stream (nil for
// other streams); project updates it with desired events.
func project(it *item, index *desiredIndex) {
	ev, err := events.Decode(it.raw)
	if err != nil {
		it.kind, it.poison = kindNone, fmt.Sprintf("decode envelope: %v", err)
		return
	}
	eventTime, ok := chTime(ev.Time)
	if !ok && it.stream != events.StreamShadow {
		it.kind, it.poison = kindNone, timeReason("event time", ev.Time)
		return
	}
	switch it.stream {
	case events.StreamShadow:
		// The shadow projection checks the time itself: a desired event
		// must reach the index even when its row cannot be written.
		projectShadow(it, ev, eventTime, ok, index)
	case events.StreamRollout:
		r := rolloutRow{Seq: it.seq, EventID: ev.ID, Type: ev.Type, Source: ev.Source, Subject: it.subject,
			EventTime: eventTime, Data: string(ev.Data)}
		r.JobID, r.Event, _ = events.ParseRolloutSubject(it.subject)
		var d struct {
			JobID string `json:"jobId"`
			Wave  int    `json:"wave"`
		}
		// The data's shape belongs to the rollout service; only the wave
		// (and the job when the subject lacks it) is read, leniently.
		if ev.DecodeData(&d) == nil {
			r.Wave = waveOf(d.Wave)
			if r.JobID == "" {
				r.JobID = d.JobID
			}
		}
		it.kind, it.rollout = kindRollout, &r
	case events.StreamAlerts:
		r := alertRow{Seq: it.seq, EventID: ev.ID, Type: ev.Type, Source: ev.Source, Subject: it.subject,
			EventTime: eventTime, Data: string(ev.Data)}
		if a, ok := events.ParseAlertSubject(it.subject); ok {
			r.State, r.Severity, r.RuleID = a.State, a.Severity, a.RuleID
		}
		// The alerting service owns the data's shape (events.AlertData);
		// the identifying fields are read leniently, the rest stays raw.
		var d struct {
			Key      string `json:"key"`
			JobID    string `json:"jobId"`
			TypeID   string `json:"typeId"`
			DeviceID string `json:"deviceId"`
		}
		if ev.DecodeData(&d) == nil {
			r.AlertKey, r.JobID, r.TypeID, r.DeviceID = d.Key, d.JobID, d.TypeID, d.DeviceID
		}
		it.kind, it.alert = kindAlert, &r
	case events.StreamNotify:
		r := notificationRow{Seq: it.seq, EventID: ev.ID, Type: ev.Type, Source: ev.Source, Subject: it.subject,
			EventTime: eventTime, Data: string(ev.Data)}
		r.Receiver, r.Outcome, _ = events.ParseNotifySubject(it.subject)
		it.kind, it.notification = kindNotification, &r
	default:
		it.kind, it.poison = kindNone, fmt.Sprintf("stream %s is not projected", it.stream)
	}
}

// projectShadow fills the row of a SHADOW event. eventTime is ev.Time as
// a DateTime, timeOK false when a DateTime cannot hold it (the event is
// then poison, after a desired event has reached the index).
func projectShadow(it *item, ev events.Event, eventTime time.Time, timeOK bool, index *desiredIndex) {
	typeID, deviceID, _ := events.DeviceFromSubject(it.subject)
	badTime := func() bool {
		if !timeOK {
			it.kind, it.poison = kindNone, timeReason("event time", ev.Time)
		}
		return !timeOK
	}
	switch ev.Type {
	case events.TypeShadowReported:
		var d events.ShadowReportedData
		if err := ev.DecodeData(&d); err != nil {
			it.kind, it.poison = kindNone, err.Error()
			return
		}
		if d.TypeID != "" {
			typeID = d.TypeID
		}
		if d.DeviceID != "" {
			deviceID = d.DeviceID
		}
		fw := d.Firmware
		if badTime() {
			return
		}
		deviceTime, ok := chTime(fw.Timestamp)
		if !ok {
			it.kind, it.poison = kindNone, timeReason("firmware timestamp", fw.Timestamp)
			return
		}
		r := shadowRow{
			Seq: it.seq, EventID: ev.ID, Type: ev.Type, TypeID: typeID, DeviceID: deviceID,
			EventTime: eventTime, DeviceTime: deviceTime,
			Version: fw.Version, Status: fw.Status, Checksum: fw.Checksum, PreviousVersion: fw.PreviousVersion,
			Duration: fw.UpdateDuration,
		}
		if fw.ErrorCode != nil {
			r.ErrorCode = *fw.ErrorCode
		}
		// The job and wave come from the desired index when the batch is
		// written (projection.jobs), once it holds every event before this.
		it.kind, it.shadow = kindShadow, r
	case events.TypeShadowDesired:
		var d events.ShadowDesiredData
		if err := ev.DecodeData(&d); err != nil {
			it.kind, it.poison = kindNone, err.Error()
			return
		}
		if d.TypeID != "" {
			typeID = d.TypeID
		}
		if d.DeviceID != "" {
			deviceID = d.DeviceID
		}
		if index != nil {
			index.add(deviceKey{typeID, deviceID}, desiredEntry{seq: it.seq, jobID: d.JobID, wave: waveOf(d.Wave)})
		}
		if badTime() {
			return
		}
		it.kind, it.device = kindDevice, &deviceEventRow{
			Seq: it.seq, EventID: ev.ID, Type: ev.Type, Subject: it.subject, TypeID: typeID, DeviceID: deviceID,
			EventTime: eventTime, JobID: d.JobID, Wave: waveOf(d.Wave),
			Version: d.Firmware.Version, Checksum: d.Firmware.Checksum, Data: string(ev.Data),
		}
	case events.TypeDevicePresence:
		var d events.DevicePresenceData
		if err := ev.DecodeData(&d); err != nil {
			it.kind, it.poison = kindNone, err.Error()
			return
		}
		if badTime() {
			return
		}
		it.kind, it.device = kindDevice, &deviceEventRow{
			Seq: it.seq, EventID: ev.ID, Type: ev.Type, Subject: it.subject, TypeID: typeID, DeviceID: deviceID,
			EventTime: eventTime, Status: d.State, Data: string(ev.Data),
		}
	default:
		// A type this version does not know (a newer version of an event,
		// say) is kept raw rather than refused: a later projector can read it.
		if badTime() {
			return
		}
		it.kind, it.device = kindDevice, &deviceEventRow{
			Seq: it.seq, EventID: ev.ID, Type: ev.Type, Subject: it.subject, TypeID: typeID, DeviceID: deviceID,
			EventTime: eventTime, Data: string(ev.Data),
		}
	}
}
