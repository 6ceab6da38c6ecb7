package ops

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"
)

// quietPaths are probed and scraped every few seconds: their lines go to
// debug, so a Kubernetes probe or a Prometheus scrape does not fill the log
// (a component that is not ready says why in its own log).
var quietPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// callerKey holds a *atomic.Value (string) that SetCaller fills.
type callerKey struct{}

// SetCaller names the caller of the request whose context ctx is, for its
// access log line: the name of the token that authenticated it, never the
// token. It does nothing outside AccessLog.
func SetCaller(ctx context.Context, name string) {
	if v, ok := ctx.Value(callerKey{}).(*atomic.Value); ok {
		v.Store(name)
	}
}

// AccessLog wraps next so that every request ends in one log line: method,
// path (without the query, which may carry an access_token), status, bytes
// written, duration, the remote address and, when the handler named one
// with SetCaller, the caller. Event streams (SSE, WebSocket) log when they
// end.
func AccessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		caller := new(atomic.Value)
		rw := &countingWriter{ResponseWriter: w}
		next.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller)))
		status := rw.status
		if status == 0 {
			status = http.StatusOK
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", status),
			slog.Int64("bytes", rw.bytes),
			slog.Duration("duration", time.Since(start)),
			slog.String("remote", r.RemoteAddr),
		}
		if name, _ := caller.Load().(string); name != "" {
			attrs = append(attrs, slog.String("caller", name))
		}
		level := slog.LevelInfo
		if quietPaths[r.URL.Path] {
			level = slog.LevelDebug
		}
		log.LogAttrs(r.Context(), level, "http request", attrs...)
	})
}

// countingWriter records the status and counts the body's bytes. Unwrap
// lets http.ResponseController and the WebSocket upgrade reach the
// server's writer (to flush, lift deadlines and hijack).
type countingWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush passes a flush through; SSE needs it on every event.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap returns the server's writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
