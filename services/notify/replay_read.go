package notify

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
)

// recording is what a replay reads from the log: NOTIFY's notifications
// and suppressions (the record to compare with), and the silences and
// alerts to hand the service, each stream in its order.
type recording struct {
	o   ReplayOptions
	res *ReplayResult
	dry *dryRun
	// recorded are NOTIFY's notifications in the order of their first
	// attempt (dry.recorded holds them by id).
	recorded         []*RecordedNotification
	silences, alerts []input
}

func newRecording(o ReplayOptions) *recording {
	return &recording{o: o, res: &ReplayResult{},
		dry: &dryRun{recorded: map[string]*RecordedNotification{}, seen: map[string]bool{}, recordedSup: map[string]bool{},
			keys: map[string]string{}}}
}

// readNotify reads NOTIFY: the notifications and suppressions recorded,
// and the silences.
func (r *recording) readNotify(ctx context.Context, js jetstream.JetStream) error {
	return readStream(ctx, js, events.StreamNotify, &r.res.NotifySeq, r.o.Progress, func(rec ruleeval.Record) {
		if rec.DecodeErr != nil {
			r.res.Unreadable++
			return
		}
		ev := rec.Event
		switch ev.Type {
		case events.TypeNotifyAttempt, events.TypeNotifySent, events.TypeNotifyFailed:
			var nd events.NotificationData
			if ev.DecodeData(&nd) != nil || nd.ID == "" {
				r.res.Unreadable++
				return
			}
			r.noteNotification(rec.Seq, ev.Type, nd)
		case events.TypeNotifySuppressed:
			var sd events.SuppressedData
			if ev.DecodeData(&sd) != nil {
				r.res.Unreadable++
				return
			}
			sup := Suppression{Seq: rec.Seq, ID: ev.ID, At: ev.Time, Data: sd}
			r.dry.recordedSup[sup.ID] = true
			if inRange(sup.At, r.o.From, r.o.To) {
				r.res.RecordedSuppressed = append(r.res.RecordedSuppressed, sup)
			}
		case events.TypeSilenceCreated, events.TypeSilenceExpired:
			r.res.Silences++
			r.silences = append(r.silences, input{msg: msgOf(rec)})
		}
	})
}

// noteNotification folds a NOTIFY attempt, sent or failed record (of type
// typ, at sequence seq) into the recorded notification it is of.
func (r *recording) noteNotification(seq uint64, typ string, nd events.NotificationData) {
	rn := r.dry.recorded[nd.ID]
	if rn == nil {
		rn = &RecordedNotification{Data: nd, Seq: seq, Outcome: OutcomeAttempted}
		r.dry.recorded[nd.ID] = rn
		r.recorded = append(r.recorded, rn)
	}
	switch typ {
	case events.TypeNotifyAttempt:
		rn.Attempts = max(rn.Attempts, nd.Attempt)
	case events.TypeNotifySent:
		rn.Outcome = OutcomeSent
	case events.TypeNotifyFailed:
		if nd.Final && rn.Outcome != OutcomeSent {
			cp := nd
			rn.Outcome, rn.lastFailed = OutcomeFailed, &cp
		}
	}
}

// readAlerts reads ALERTS: the alerts' lifecycle events, and their keys.
func (r *recording) readAlerts(ctx context.Context, js jetstream.JetStream) error {
	return readStream(ctx, js, events.StreamAlerts, &r.res.AlertsSeq, r.o.Progress, func(rec ruleeval.Record) {
		if rec.DecodeErr != nil {
			r.res.Unreadable++
			return
		}
		if rec.Event.Type == events.TypeAlertRaised || rec.Event.Type == events.TypeAlertResolved {
			r.alerts = append(r.alerts, input{msg: msgOf(rec), alert: true})
			var a events.AlertData
			if rec.Event.DecodeData(&a) == nil {
				r.dry.keys[events.NotifyAlertID(a)] = a.Key
			}
		}
	})
}

// readStream hands every message of stream, from its start to its last
// now, to fn, and sets *last to the last sequence read; progress, if set,
// hears about it every second.
func readStream(ctx context.Context, js jetstream.JetStream, stream string, last *uint64, progress func(string), fn func(ruleeval.Record)) error {
	r, err := ruleeval.OpenReader(ctx, js, stream, 1)
	if err != nil {
		return err
	}
	defer r.Close()
	began, said := time.Now(), time.Now()
	for {
		if progress != nil && time.Since(said) >= time.Second {
			said = time.Now()
			progress(fmt.Sprintf("replay notify: %s reading %s %d/%d", time.Since(began).Round(100*time.Millisecond), stream, *last, r.Last))
		}
		rec, ok, err := r.Next(ctx)
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		if !ok {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("read %s: %w", stream, err)
			}
			return nil
		}
		*last = rec.Seq
		fn(rec)
	}
}

func msgOf(rec ruleeval.Record) consume.Msg {
	return consume.Msg{Stream: rec.Stream, Seq: rec.Seq, Subject: rec.Subject, Stored: rec.Stored, Data: rec.Raw, Event: rec.Event}
}
