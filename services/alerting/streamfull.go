package alerting

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
)

// StreamFullRule is the id of the built-in alert raised when an audit
// stream (SHADOW, ROLLOUT, ALERTS, NOTIFY) is at or near its byte limit.
// Those streams refuse new events at their limit rather than drop old
// ones, so everything that writes them stops: the bridge holds reports at
// the broker, this service stops moving on. It is not a CEL rule: rules
// see the fleet, not the log's storage.
const StreamFullRule = "stream-full"

// StreamFullHealth is the health component that is not ready while an
// audit stream is at or over StreamFullRatio of its limit.
const StreamFullHealth = "streams"

// StreamFullRatio is the share of its byte limit from which a stream is
// reported full.
const StreamFullRatio = 0.95

// streamWatch is the state of the stream-full alerts: the raised one of
// each stream, by alert key. It lives outside the rule engine, which would
// resolve an alert of a rule it does not run.
type streamWatch struct {
	active map[string]events.AlertData
	// loaded is true once the raised alerts were read back from ALERTS.
	loaded bool
}

// auditStreams are the streams that refuse new events at their limit.
// REJECTED drops its oldest records instead and never refuses.
func auditStreams() []string {
	return []string{events.StreamShadow, events.StreamRollout, events.StreamAlerts, events.StreamNotify}
}

func streamFullKey(stream string) string { return StreamFullRule + "/" + stream }

// checkStreams reads every audit stream's size and raises or resolves its
// stream-full alert, at time at (a tick). The alert is also logged, and
// the health registry says which streams are full, because the full
// stream may be ALERTS itself.
func (s *Service) checkStreams(ctx context.Context, r *run, at time.Time) {
	w := &r.streams
	if !w.loaded {
		active, err := loadStreamAlerts(ctx, s.deps.JS)
		if err != nil {
			s.log.Warn("read stream-full alerts back; the next tick tries again", "err", err)
			return
		}
		w.active, w.loaded = active, true
	}
	var full []string
	for _, name := range auditStreams() {
		info, err := streamInfo(ctx, s.deps.JS, name)
		if err != nil {
			s.log.Warn("stream info for stream-full", "stream", name, "err", err)
			continue
		}
		limit := info.Config.MaxBytes
		key := streamFullKey(name)
		a, raised := w.active[key]
		used := 0.0
		if limit > 0 && info.Config.Discard == jetstream.DiscardNew {
			used = float64(info.State.Bytes) / float64(limit)
		}
		msg := fmt.Sprintf("%s stream is %.0f%% full (%d of max_bytes %d): at its limit it refuses new events (the bridge holds reports at the broker); raise nats.stream_max_bytes.%s or nats.max_bytes",
			name, 100*used, info.State.Bytes, limit, name)
		switch {
		case used >= StreamFullRatio:
			full = append(full, msg)
			if raised {
				continue
			}
			a = events.AlertData{Key: key, RuleID: StreamFullRule, Severity: rules.SeverityCritical, State: events.AlertRaised,
				Labels: map[string]string{"stream": name}, Message: msg, Value: &used, StartsAt: at}
			s.log.Error("stream full: alert raised", "stream", name, "bytes", info.State.Bytes, "max_bytes", limit)
			w.active[key] = a
		case raised:
			end := at
			a.State, a.EndsAt, a.Reason = events.AlertResolved, &end, events.ResolvedCleared
			s.log.Info("stream no longer full: alert resolved", "stream", name, "bytes", info.State.Bytes, "max_bytes", limit)
			delete(w.active, key)
		default:
			continue
		}
		ev, err := events.New(events.AlertEventID(a.Key, a.Severity, a.StartsAt, a.State), events.SourceAlerting,
			events.AlertEventType(a.State), a.Key, at, a)
		if err == nil {
			err = r.pub.add(events.AlertSubject(a.State, a.Severity, a.RuleID), ev, nil)
		}
		if err != nil {
			s.log.Error("publish stream-full alert", "stream", name, "err", err)
		}
	}
	if len(full) == 0 {
		s.deps.Health.Set(StreamFullHealth, nil)
		return
	}
	sort.Strings(full)
	s.deps.Health.Set(StreamFullHealth, errors.New(strings.Join(full, "; ")))
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, events.APITimeout)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	return st.Info(ctx)
}

// loadStreamAlerts folds the stream-full events on ALERTS into the raised
// alerts by key. There are few: one raise and one resolve per episode.
func loadStreamAlerts(ctx context.Context, js jetstream.JetStream) (map[string]events.AlertData, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*events.APITimeout)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, events.StreamAlerts, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.AlertSubject("*", "*", StreamFullRule)},
	})
	if err != nil {
		return nil, fmt.Errorf("read %s alerts: %w", StreamFullRule, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s alerts: %w", StreamFullRule, err)
	}
	active := map[string]events.AlertData{}
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 256)), jetstream.FetchMaxWait(events.APITimeout))
		if err != nil {
			return nil, fmt.Errorf("read %s alerts: %w", StreamFullRule, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var a events.AlertData
			ev, err := events.Decode(m.Data())
			if err == nil {
				err = ev.DecodeData(&a)
			}
			if err != nil {
				continue // the ALERTS fold of a start records it on REJECTED
			}
			switch a.State {
			case events.AlertRaised:
				active[a.Key] = a
			case events.AlertResolved:
				if cur, ok := active[a.Key]; ok && cur.StartsAt.Equal(a.StartsAt) {
					delete(active, a.Key)
				}
			}
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("read %s alerts: %w", StreamFullRule, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("read %s alerts: %d messages pending, none came", StreamFullRule, left)
		}
		left -= uint64(n)
	}
	return active, nil
}
