package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// deviceIDs returns the validated {typeId} and {deviceId} of the path, or
// answers 400 naming the bad one. The ids become subject tokens, so this is
// what keeps a wildcard or a dot out of a consumer's filter.
func deviceIDs(w http.ResponseWriter, r *http.Request) (typeID, deviceID string, ok bool) {
	typeID, deviceID = r.PathValue("typeId"), r.PathValue("deviceId")
	if err := events.ValidateID("type id", typeID); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", "", false
	}
	if err := events.ValidateID("device id", deviceID); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", "", false
	}
	return typeID, deviceID, true
}

// streamStart is where an event stream begins.
type streamStart struct {
	policy jetstream.DeliverPolicy
	seq    uint64
	time   time.Time
}

// parseStreamStart reads where a client wants its stream to start: after
// the sequence in Last-Event-ID (a reconnecting EventSource sends it), else
// from ?since= — a stream sequence (events after it; 0 is the whole
// history) or an RFC 3339 time (events stored at or after it) — else by
// def: the device stream starts from the device's latest event of each
// kind (DeliverLastPerSubjectPolicy: latest report, desired state and
// presence), so a client starts with the current state and then follows;
// the fleet-wide stream with new events only (DeliverNewPolicy).
func parseStreamStart(lastEventID, since string, def jetstream.DeliverPolicy) (streamStart, error) {
	if lastEventID != "" {
		n, err := strconv.ParseUint(strings.TrimSpace(lastEventID), 10, 64)
		if err != nil || n == math.MaxUint64 {
			return streamStart{}, fmt.Errorf("Last-Event-ID %q is not a stream sequence", lastEventID)
		}
		return streamStart{policy: jetstream.DeliverByStartSequencePolicy, seq: n + 1}, nil
	}
	if since == "" {
		return streamStart{policy: def}, nil
	}
	if n, err := strconv.ParseUint(since, 10, 64); err == nil && n < math.MaxUint64 {
		return streamStart{policy: jetstream.DeliverByStartSequencePolicy, seq: n + 1}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, since)
	if err != nil {
		return streamStart{}, fmt.Errorf("since %q is neither a stream sequence nor an RFC 3339 time", since)
	}
	return streamStart{policy: jetstream.DeliverByStartTimePolicy, time: t}, nil
}

// requestStreamStart is parseStreamStart on a request: its Last-Event-ID
// header (or ?lastEventId=, which EventSource polyfills that cannot set
// headers send) and its ?since=.
func requestStreamStart(r *http.Request, def jetstream.DeliverPolicy) (streamStart, error) {
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("lastEventId")
	}
	return parseStreamStart(lastID, r.URL.Query().Get("since"), def)
}

// handleShadowEvents is the seed's
// GET /api/v0002/device/types/{typeId}/devices/{deviceId}/events/shadow:
// Server-Sent Events of one device's SHADOW events (reported, desired,
// presence) as they arrive (see serveSSE).
func (s *Service) handleShadowEvents(w http.ResponseWriter, r *http.Request) {
	typeID, deviceID, ok := deviceIDs(w, r)
	if !ok {
		return
	}
	start, err := requestStreamStart(r, jetstream.DeliverLastPerSubjectPolicy)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.serveSSE(w, r, sseSource{
		stream: events.StreamShadow,
		filters: []string{
			events.ShadowReportedSubject(typeID, deviceID),
			events.ShadowDesiredSubject(typeID, deviceID),
			events.DevicePresenceSubject(typeID, deviceID),
		},
		start:  start,
		banner: "otawatch shadow events of " + typeID + "/" + deviceID,
	})
}

// sseSource is what one Server-Sent Events stream serves: the events of a
// log stream whose subjects match filters, from start.
type sseSource struct {
	stream  string
	filters []string
	start   streamStart
	// banner is the comment line that opens the stream.
	banner string
}

// serveSSE serves src as Server-Sent Events until the client goes or the
// server stops: an ordered consumer on the stream, each event's id its
// stream sequence (what a client sends back as Last-Event-ID) and its data
// the CloudEvents envelope as stored. A comment line every SSEHeartbeat
// keeps an idle connection open through proxies. The device stream of
// /api/v0002 and the fleet-wide /api/v1/events are both this.
func (s *Service) serveSSE(w http.ResponseWriter, r *http.Request, src sseSource) {
	ctx := r.Context()
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: src.filters,
		DeliverPolicy:  src.start.policy,
		OptStartSeq:    src.start.seq,
		// A client that went away leaves no consumer behind for long.
		InactiveThreshold: 30 * time.Second,
	}
	if !src.start.time.IsZero() {
		cfg.OptStartTime = &src.start.time
	}
	cons, err := s.deps.JS.OrderedConsumer(ctx, src.stream, cfg)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "event log unavailable: "+err.Error())
		return
	}
	msgs := make(chan jetstream.Msg, 64)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done():
		}
	})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "event log unavailable: "+err.Error())
		return
	}
	defer cc.Stop()

	rc := http.NewResponseController(w)
	// The stream is meant to outlive the server's read and write timeouts.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "retry: 3000\n: "+src.banner+"\n\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	s.metrics.streams.WithLabelValues("sse").Inc()
	defer s.metrics.streams.WithLabelValues("sse").Dec()

	hb := time.NewTicker(s.cfg.SSEHeartbeat)
	defer hb.Stop()
	var buf bytes.Buffer
	for {
		select {
		case <-ctx.Done():
			return
		case <-hb.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				return
			}
		case m := <-msgs:
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			buf.Reset()
			writeSSE(&buf, meta.Sequence.Stream, m.Data())
			// Send what else is already waiting in the same write.
			for more := true; more && buf.Len() < 64<<10; {
				select {
				case m := <-msgs:
					if meta, err := m.Metadata(); err == nil {
						writeSSE(&buf, meta.Sequence.Stream, m.Data())
					}
				default:
					more = false
				}
			}
			if _, err := w.Write(buf.Bytes()); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// writeSSE appends one event: id is the stream sequence, data the envelope
// on one line (SSE data lines end at a newline).
func writeSSE(b *bytes.Buffer, seq uint64, data []byte) {
	b.WriteString("id: ")
	b.WriteString(strconv.FormatUint(seq, 10))
	b.WriteString("\ndata: ")
	if bytes.ContainsAny(data, "\r\n") {
		var c bytes.Buffer
		if err := json.Compact(&c, data); err == nil {
			data = c.Bytes()
		} else {
			data = bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r"), nil), []byte("\n"), []byte(" "))
		}
	}
	b.Write(data)
	b.WriteString("\n\n")
}

// handleShadowDelta is the seed's
// GET /api/v0002/device/types/{typeId}/devices/{deviceId}/shadow/delta: the
// difference between the device's desired firmware (the latest rollout's
// target) and what it reported. A device that reported the target as
// completed, or that no rollout targets, is in sync: {"state":{}}; so is
// one whose latest rollout was aborted (the rollout service clears its
// retained delta too). The timestamp is the time of the newest event the
// answer rests on.
func (s *Service) handleShadowDelta(w http.ResponseWriter, r *http.Request) {
	typeID, deviceID, ok := deviceIDs(w, r)
	if !ok {
		return
	}
	s.model.mu.RLock()
	d, found := s.model.fleet.Device(typeID, deviceID)
	aborted := false
	if j := s.model.jobs[d.JobID]; found && j != nil {
		aborted = j.Status == events.RolloutAborted
	}
	s.model.mu.RUnlock()
	if !found {
		writeError(w, http.StatusNotFound, fmt.Sprintf("device %s/%s is unknown", typeID, deviceID))
		return
	}
	delta := events.ShadowDelta{Timestamp: d.LastSeen}
	if d.DesiredAt.After(delta.Timestamp) {
		delta.Timestamp = d.DesiredAt
	}
	if d.Target != nil && !aborted && (d.Version != d.Target.Version || d.Status != events.StatusCompleted) {
		delta.State.Firmware = &events.DeltaFirmware{
			Version: d.Target.Version, Checksum: d.Target.Checksum, URL: d.Target.URL, JobID: d.JobID,
		}
	}
	writeJSON(w, http.StatusOK, delta)
}
