package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// limitBody bounds every request body to max bytes (http.max_body_bytes).
// A body whose announced length is over the bound is answered 413 before
// any handler runs; one without a length (chunked) is cut where it passes
// the bound, and the handler reading it gets an error that says so (the
// rollout handlers answer that 413 too). The reader is http.MaxBytesReader
// on the server's own writer, so the server also closes the connection
// rather than reading the rest of an oversized body.
func limitBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf(
				"request body of %d bytes is over the limit of %d bytes (http.max_body_bytes)", r.ContentLength, max))
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &bodyLimitReader{ReadCloser: http.MaxBytesReader(w, r.Body, max), max: max}
		}
		next.ServeHTTP(w, r)
	})
}

// bodyLimitReader names the limit in the error a handler gets when the
// body passes it: http.MaxBytesError says only "request body too large".
type bodyLimitReader struct {
	io.ReadCloser
	max int64
}

func (b *bodyLimitReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		err = fmt.Errorf("request body is over the limit of %d bytes (http.max_body_bytes): %w", b.max, err)
	}
	return n, err
}

// streamLimiter bounds the event streams (SSE and WebSocket) open at once
// (http.max_streams). A stream holds its slot for as long as it lasts; one
// past the bound is refused with 503 and Retry-After, before it upgrades or
// creates a JetStream consumer, so a crowd of clients costs the server
// nothing beyond the bound.
type streamLimiter struct {
	slots chan struct{}
}

func newStreamLimiter(n int) *streamLimiter {
	return &streamLimiter{slots: make(chan struct{}, n)}
}

// limit wraps a streaming handler.
func (l *streamLimiter) limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case l.slots <- struct{}{}:
		default:
			w.Header().Set("Retry-After", strconv.Itoa(streamRetryAfter))
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
				"too many event streams open: all %d are in use (http.max_streams); retry later", cap(l.slots)))
			return
		}
		defer func() { <-l.slots }()
		next.ServeHTTP(w, r)
	})
}

// inUse is the number of streams open now.
func (l *streamLimiter) inUse() int { return len(l.slots) }

// streamRetryAfter is the Retry-After, in seconds, of a refused stream.
const streamRetryAfter = 5
