package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/silence"
)

// silenceRequest is the body of POST /api/v1/silences. The author is the
// caller's token, never the body.
type silenceRequest struct {
	// Matchers select the alerts (Alertmanager's syntax, all must hold).
	Matchers []string `json:"matchers"`
	// StartsAt defaults to now; EndsAt or Duration ("2h") bound it
	// (default one hour).
	StartsAt *time.Time `json:"startsAt,omitempty"`
	EndsAt   *time.Time `json:"endsAt,omitempty"`
	Duration string     `json:"duration,omitempty"`
	Comment  string     `json:"comment,omitempty"`
}

// silenceView is a silence as the API shows it: its record and its state
// now (pending, active, expired).
type silenceView struct {
	silence.Silence
	State string `json:"state"`
}

// handleSilenceList answers GET /api/v1/silences: the pending and active
// silences, with ?all=true the expired ones too, oldest first.
func (s *Service) handleSilenceList(w http.ResponseWriter, r *http.Request) {
	list, err := silence.Read(r.Context(), s.deps.JS)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	now := s.deps.ClockOf().Now()
	all := r.URL.Query().Get("all") == "true"
	out := []silenceView{}
	for _, sl := range list {
		st := sl.State(now)
		if all || st != "expired" {
			out = append(out, silenceView{Silence: sl, State: st})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// handleSilenceCreate answers POST /api/v1/silences: it records the
// silence on NOTIFY (notify.silence.created) and answers 201 with it.
func (s *Service) handleSilenceCreate(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("read body: %v", err))
		return
	}
	var req silenceRequest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("silence body: %v", err))
		return
	}
	now := s.deps.ClockOf().Now().UTC()
	sl := events.SilenceData{ID: silence.NewID(), Matchers: req.Matchers, StartsAt: now, Comment: req.Comment,
		CreatedBy: principalFrom(r.Context()).Name}
	if sl.CreatedBy == "" {
		sl.CreatedBy = events.IdentityAnonymous
	}
	if req.StartsAt != nil {
		sl.StartsAt = req.StartsAt.UTC()
	}
	switch {
	case req.EndsAt != nil && req.Duration != "":
		writeError(w, http.StatusBadRequest, "give endsAt or duration, not both")
		return
	case req.EndsAt != nil:
		sl.EndsAt = req.EndsAt.UTC()
	case req.Duration != "":
		d, err := time.ParseDuration(req.Duration)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("duration %q: %v", req.Duration, err))
			return
		}
		sl.EndsAt = sl.StartsAt.Add(d)
	default:
		sl.EndsAt = sl.StartsAt.Add(time.Hour)
	}
	ev, err := silence.CreatedEvent(sl, now)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.publishNotify(r.Context(), events.SilenceSubject(events.SilenceCreated), ev); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, silenceView{Silence: silence.Silence{SilenceData: sl}, State: silence.Silence{SilenceData: sl}.State(now)})
}

// handleSilenceExpire answers DELETE /api/v1/silences/{id}: it ends the
// silence now (notify.silence.expired). An unknown silence is 404, one
// already expired 409.
func (s *Service) handleSilenceExpire(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	list, err := silence.Read(r.Context(), s.deps.JS)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	var found *silence.Silence
	for i := range list {
		if list[i].ID == id {
			found = &list[i]
		}
	}
	if found == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no silence %q", id))
		return
	}
	now := s.deps.ClockOf().Now().UTC()
	if found.State(now) == "expired" {
		writeError(w, http.StatusConflict, fmt.Sprintf("silence %s has already expired", id))
		return
	}
	by := principalFrom(r.Context()).Name
	if by == "" {
		by = events.IdentityAnonymous
	}
	ev, err := silence.ExpiredEvent(events.SilenceExpiredData{ID: id, At: now, By: by})
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.publishNotify(r.Context(), events.SilenceSubject(events.SilenceExpired), ev); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	found.ExpiredAt, found.ExpiredBy = &now, by
	writeJSON(w, http.StatusOK, silenceView{Silence: *found, State: found.State(now)})
}

// publishNotify stores ev on NOTIFY's subject with its id as Nats-Msg-Id.
func (s *Service) publishNotify(ctx context.Context, subject string, ev events.Event) error {
	b, err := ev.Marshal()
	if err != nil {
		return fmt.Errorf("marshal %s event: %w", ev.Type, err)
	}
	err = events.Retry(ctx, 3, func(ctx context.Context) error {
		_, err := s.deps.JS.Publish(ctx, subject, b, jetstream.WithMsgID(ev.ID))
		return err
	})
	if err != nil {
		return fmt.Errorf("record on %s: %w", subject, err)
	}
	return nil
}
