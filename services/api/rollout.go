package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
)

// ActorHeader carries the API caller's token name on a rollout command, so
// the rollout service can record who asked.
const ActorHeader = "Otawatch-Actor"

// rolloutCommands are the commands POST /api/v1/rollouts/{job}/{cmd} sends.
var rolloutCommands = map[string]bool{"start": true, "pause": true, "resume": true, "abort": true, "retry-failed": true}

func (s *Service) handleRolloutList(w http.ResponseWriter, r *http.Request) {
	s.rolloutProxy(w, r, "list", "", nil, http.StatusOK)
}

func (s *Service) handleRolloutShow(w http.ResponseWriter, r *http.Request) {
	job := r.PathValue("job")
	if err := events.ValidateID("job id", job); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.rolloutProxy(w, r, "show", job, nil, http.StatusOK)
}

func (s *Service) handleRolloutCreate(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, "create")
	if !ok {
		return
	}
	s.rolloutProxy(w, r, "create", "", body, http.StatusCreated)
}

func (s *Service) handleRolloutCommand(w http.ResponseWriter, r *http.Request) {
	job, cmd := r.PathValue("job"), r.PathValue("cmd")
	if !rolloutCommands[cmd] {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no rollout command %q (commands: start, pause, resume, abort, retry-failed)", cmd))
		return
	}
	if err := events.ValidateID("job id", job); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	body, ok := readBody(w, r, cmd)
	if !ok {
		return
	}
	s.rolloutProxy(w, r, cmd, job, body, http.StatusOK)
}

// readBody reads the body of rollout command cmd: empty, or a JSON object
// that events.DecodeRolloutRequest takes (no unknown field, no field cmd
// does not use, no "actor", nothing after the object). A refusal is a 400
// naming the field. The rollout service decodes the forwarded body the
// same way; checking here too answers a bad body without a round trip.
func readBody(w http.ResponseWriter, r *http.Request, cmd string) (map[string]json.RawMessage, bool) {
	// The body is bounded by http.max_body_bytes (limitBody); past it
	// the read fails with an error that names the limit.
	b, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("read body: %v", err))
		return nil, false
	}
	obj := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(b)) == 0 {
		return obj, true
	}
	if _, err := events.DecodeRolloutRequest(cmd, b); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("body is not a JSON object: %v", err))
		return nil, false
	}
	return obj, true
}

// rolloutProxy sends a command to the rollout service over NATS
// request/reply (events.RolloutCommandSubject) and answers with its reply.
// The body, once readBody has checked it, goes through as it came, with
// jobId set from the path. A reply that refuses (an "error"
// field, or NATS service error headers) becomes a 4xx/5xx, see
// replyStatus; no rollout service is 503, no answer in time 504.
func (s *Service) rolloutProxy(w http.ResponseWriter, r *http.Request, cmd, job string, body map[string]json.RawMessage, okStatus int) {
	if body == nil {
		body = map[string]json.RawMessage{}
	}
	if job != "" {
		if raw, ok := body["jobId"]; ok {
			var inBody string
			if json.Unmarshal(raw, &inBody) != nil || inBody != job {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("body jobId %s does not match the path's job %q", raw, job))
				return
			}
		}
		body["jobId"], _ = json.Marshal(job)
	}
	data, err := json.Marshal(body)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode request: "+err.Error())
		return
	}
	msg := nats.NewMsg(events.RolloutCommandSubject(cmd, events.ConnIdentity(s.deps.NC)))
	msg.Data = data
	if p := principalFrom(r.Context()); p.Name != "" {
		msg.Header.Set(ActorHeader, p.Name)
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RolloutTimeout)
	defer cancel()
	reply, err := s.deps.NC.RequestMsgWithContext(ctx, msg)
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		// A body within http.max_body_bytes can still be over what the
		// NATS server carries (max_payload, 1 MiB by default).
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("rollout %s: the request is %d bytes, over the NATS server's max payload of %d bytes", cmd, len(data), s.deps.NC.MaxPayload()))
		return
	case errors.Is(err, nats.ErrNoResponders):
		writeError(w, http.StatusServiceUnavailable, "rollout service not running")
		return
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("rollout service did not answer %s within %s", cmd, s.cfg.RolloutTimeout))
		return
	case err != nil:
		writeError(w, http.StatusBadGateway, fmt.Sprintf("rollout %s: %v", cmd, err))
		return
	}
	status, out := replyStatus(reply, okStatus)
	writeRawJSON(w, status, out)
}

// replyStatus maps a rollout service reply to an HTTP status and body.
//
//   - NATS service error headers (Nats-Service-Error-Code, as nats micro
//     sends them): that code when it is 400..599, else 500.
//   - a JSON object with a non-empty "error" (events.RolloutReply): a
//     numeric "status" of 400..599 when present, else by "code"
//     (events.RolloutErr*): invalid 400, not_found 404, conflict 409,
//     unavailable 503, none 400, a number of 400..599 itself, any other 500.
//   - otherwise okStatus with the reply as it came.
//
// A reply that is not JSON is a 502: the body is what the client reads.
func replyStatus(m *nats.Msg, okStatus int) (int, []byte) {
	if m.Header != nil {
		if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
			status, err := strconv.Atoi(code)
			if err != nil || status < 400 || status > 599 {
				status = http.StatusInternalServerError
			}
			if json.Valid(m.Data) && len(bytes.TrimSpace(m.Data)) > 0 {
				return status, m.Data
			}
			b, _ := json.Marshal(errorBody{Error: m.Header.Get("Nats-Service-Error")})
			return status, b
		}
	}
	var rep struct {
		Error  string          `json:"error"`
		Code   json.RawMessage `json:"code"`
		Status int             `json:"status"`
	}
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		b, _ := json.Marshal(errorBody{Error: fmt.Sprintf("rollout service sent a reply that is not a JSON object: %v", err)})
		return http.StatusBadGateway, b
	}
	if rep.Error == "" {
		return okStatus, m.Data
	}
	if rep.Status >= 400 && rep.Status <= 599 {
		return rep.Status, m.Data
	}
	var code string
	if json.Unmarshal(rep.Code, &code) != nil {
		var n int
		if json.Unmarshal(rep.Code, &n) == nil {
			code = strconv.Itoa(n)
		}
	}
	switch code {
	case "", events.RolloutErrInvalid:
		return http.StatusBadRequest, m.Data
	case events.RolloutErrNotFound:
		return http.StatusNotFound, m.Data
	case events.RolloutErrConflict:
		return http.StatusConflict, m.Data
	case events.RolloutErrForbidden:
		return http.StatusForbidden, m.Data
	case events.RolloutErrUnavailable:
		return http.StatusServiceUnavailable, m.Data
	}
	if n, err := strconv.Atoi(code); err == nil && n >= 400 && n <= 599 {
		return n, m.Data
	}
	return http.StatusInternalServerError, m.Data
}
