package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// maxEventFilters bounds the ?subject= filters of one fleet-wide stream.
const maxEventFilters = 16

// sseRoot is a subject root the fleet-wide stream serves, and the log
// stream that holds it.
type sseRoot struct {
	prefix []string // the root's literal tokens
	stream string
}

// sseRoots are the subjects GET /api/v1/events serves: the device events of
// SHADOW, the rollout and the alert lifecycles. NOTIFY (whose records carry
// receivers' answers) and REJECTED (raw, untrusted input) are left out; so
// is everything that is not the log ($JS, $KV, _INBOX, otawatch.>): the
// stream reads a log stream through a consumer, never a NATS subject, and
// the subject only filters within it.
var sseRoots = []sseRoot{
	{[]string{"shadow", "reported"}, events.StreamShadow},
	{[]string{"shadow", "desired"}, events.StreamShadow},
	{[]string{"device", "presence"}, events.StreamShadow},
	{[]string{"rollout"}, events.StreamRollout},
	{[]string{"alert"}, events.StreamAlerts},
}

// sseRootList names the roots for an error message.
func sseRootList() string {
	var b strings.Builder
	for i, r := range sseRoots {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strings.Join(r.prefix, ".") + ".>")
	}
	return b.String()
}

// eventStreamOf checks one subject filter of GET /api/v1/events and returns
// the log stream it reads. A filter is dot-separated tokens, each "*", ">"
// (last only) or an id (events.ValidateID's characters); it must lie
// within sseRoots of one stream: its first token is a root's, and after it
// a wildcard may stand for a root's token ("shadow.*.sensor.>" reads
// reports and desired states of type sensor).
func eventStreamOf(subject string) (string, error) {
	if subject == "" {
		return "", fmt.Errorf("subject is empty; serve one of %s", sseRootList())
	}
	toks := strings.Split(subject, ".")
	for i, t := range toks {
		switch {
		case t == ">":
			if i != len(toks)-1 {
				return "", fmt.Errorf("subject %q has '>' at token %d; it may only be the last token", subject, i+1)
			}
		case t == "*":
		default:
			if err := events.ValidateID(fmt.Sprintf("subject %q token %d", subject, i+1), t); err != nil {
				return "", err
			}
		}
	}
	if toks[0] == "*" || toks[0] == ">" {
		return "", fmt.Errorf("subject %q starts with a wildcard; it must start with the root of one of %s", subject, sseRootList())
	}
	stream := ""
	for _, root := range sseRoots {
		if !withinRoot(toks, root.prefix) {
			continue
		}
		if stream != "" && stream != root.stream {
			return "", fmt.Errorf("subject %q spans the streams %s and %s; event ids are sequences of one stream, so open one event stream per log stream", subject, stream, root.stream)
		}
		stream = root.stream
	}
	if stream == "" {
		return "", fmt.Errorf("subject %q is outside the subjects served here: %s", subject, sseRootList())
	}
	return stream, nil
}

// withinRoot reports whether a filter can match a subject under prefix:
// each of the prefix's tokens is matched literally or by "*", or a ">"
// covers the rest. A filter shorter than the prefix without ">" matches
// nothing under it.
func withinRoot(toks, prefix []string) bool {
	for i, p := range prefix {
		if i >= len(toks) {
			return false
		}
		switch toks[i] {
		case ">":
			return true
		case "*", p:
		default:
			return false
		}
	}
	return len(toks) > len(prefix)
}

// handleEvents is GET /api/v1/events?subject=...: Server-Sent Events of the
// log for subscribers who do not speak NATS. ?subject= (repeatable, all in
// one log stream) filters; Last-Event-ID (the stream sequence of the last
// event the client had) resumes right after it, ?since= starts after a
// sequence or at a time as on the device stream, and without either the
// stream starts with the next new event.
func (s *Service) handleEvents(w http.ResponseWriter, r *http.Request) {
	filters := r.URL.Query()["subject"]
	if len(filters) == 0 {
		writeError(w, http.StatusBadRequest, "?subject= is required: one or more of "+sseRootList()+" or a narrower filter, all in one log stream")
		return
	}
	if len(filters) > maxEventFilters {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%d subject filters; at most %d", len(filters), maxEventFilters))
		return
	}
	stream := ""
	for _, f := range filters {
		st, err := eventStreamOf(f)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if stream != "" && st != stream {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("the subjects are in the streams %s and %s; event ids are sequences of one stream, so open one event stream per log stream", stream, st))
			return
		}
		stream = st
	}
	for i := range filters {
		for _, g := range filters[:i] {
			if filtersOverlap(filters[i], g) {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("subjects %q and %q overlap; a stream's filters must not (give the wider one alone)", g, filters[i]))
				return
			}
		}
	}
	start, err := requestStreamStart(r, jetstream.DeliverNewPolicy)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.serveSSE(w, r, sseSource{
		stream:  stream,
		filters: filters,
		start:   start,
		banner:  "otawatch events of " + stream + ": " + strings.Join(filters, " "),
	})
}

// filtersOverlap reports whether some subject matches both filters, which
// JetStream refuses among one consumer's filters.
func filtersOverlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		if at[i] == ">" || bt[i] == ">" {
			return true
		}
		if at[i] != bt[i] && at[i] != "*" && bt[i] != "*" {
			return false
		}
	}
	return len(at) == len(bt)
}
