// Package silence is how silences are recorded: events on NOTIFY
// (notify.silence.created, notify.silence.expired, events.SilenceData)
// that the notify service folds and the CLI and the API write and read.
// A silence is checked here, with the matcher parser the service uses,
// before it is recorded.
package silence

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/match"
)

// NewID returns a fresh silence id.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Check reports what is wrong with a silence to be created: no
// matcher, a bad one, an end not after its start, no author.
func Check(s events.SilenceData) error {
	var errs []error
	if len(s.Matchers) == 0 {
		errs = append(errs, errors.New("a silence needs at least one matcher"))
	} else if _, err := match.ParseAll(s.Matchers); err != nil {
		errs = append(errs, err)
	}
	if !s.EndsAt.After(s.StartsAt) {
		errs = append(errs, fmt.Errorf("ends at %s, not after its start %s", s.EndsAt.Format(time.RFC3339), s.StartsAt.Format(time.RFC3339)))
	}
	if s.CreatedBy == "" {
		errs = append(errs, errors.New("a silence needs an author"))
	}
	if err := events.ValidateID("silence id", s.ID); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CreatedEvent is the event that creates s (at is when), for
// notify.silence.created.
func CreatedEvent(s events.SilenceData, at time.Time) (events.Event, error) {
	if err := Check(s); err != nil {
		return events.Event{}, fmt.Errorf("silence %s: %w", s.ID, err)
	}
	return events.New(events.SilenceEventID(s.ID, events.SilenceCreated), events.SourceNotify,
		events.TypeSilenceCreated, s.ID, at, s)
}

// ExpiredEvent is the event that ends silence e.ID at e.At, for
// notify.silence.expired.
func ExpiredEvent(e events.SilenceExpiredData) (events.Event, error) {
	if e.ID == "" || e.By == "" {
		return events.Event{}, fmt.Errorf("expire silence %q by %q: want an id and who", e.ID, e.By)
	}
	return events.New(events.SilenceEventID(e.ID, events.SilenceExpired), events.SourceNotify,
		events.TypeSilenceExpired, e.ID, e.At, e)
}

// Silence is a silence as NOTIFY records it, with its expiry.
type Silence struct {
	events.SilenceData
	// ExpiredAt and ExpiredBy are set when it was expired early.
	ExpiredAt *time.Time `json:"expiredAt,omitempty"`
	ExpiredBy string     `json:"expiredBy,omitempty"`
}

// State is "pending", "active" or "expired" at now.
func (s Silence) State(now time.Time) string {
	end := s.EndsAt
	if s.ExpiredAt != nil && s.ExpiredAt.Before(end) {
		end = *s.ExpiredAt
	}
	switch {
	case !now.Before(end):
		return "expired"
	case now.Before(s.StartsAt):
		return "pending"
	}
	return "active"
}

// Read reads every silence from NOTIFY (its silence subjects
// only), oldest first.
func Read(ctx context.Context, js jetstream.JetStream) ([]Silence, error) {
	st, err := js.Stream(ctx, events.StreamNotify)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", events.StreamNotify, err)
	}
	subject := events.SilenceSubject("*")
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", events.StreamNotify, err)
	}
	var want uint64
	for _, n := range info.State.Subjects {
		want += n
	}
	byID := map[string]*Silence{}
	var order []string
	if want == 0 {
		return nil, nil
	}
	cons, err := js.OrderedConsumer(ctx, events.StreamNotify, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return nil, fmt.Errorf("read silences: %w", err)
	}
	for got := uint64(0); got < want; {
		batch, err := cons.Fetch(int(min(want-got, 512)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read silences: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			ev, err := events.Decode(m.Data())
			if err != nil {
				continue // on REJECTED by the service's follower
			}
			switch ev.Type {
			case events.TypeSilenceCreated:
				var d events.SilenceData
				if ev.DecodeData(&d) == nil && byID[d.ID] == nil {
					byID[d.ID] = &Silence{SilenceData: d}
					order = append(order, d.ID)
				}
			case events.TypeSilenceExpired:
				var d events.SilenceExpiredData
				if ev.DecodeData(&d) == nil && byID[d.ID] != nil && byID[d.ID].ExpiredAt == nil {
					at := d.At
					byID[d.ID].ExpiredAt, byID[d.ID].ExpiredBy = &at, d.By
				}
			}
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("read silences: %w", err)
		}
		if n == 0 {
			break
		}
		got += uint64(n)
	}
	out := make([]Silence, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartsAt.Before(out[j].StartsAt) })
	return out, nil
}

// FormatMatchers joins a silence's matchers for a table.
func FormatMatchers(ms []string) string { return strings.Join(ms, ",") }
