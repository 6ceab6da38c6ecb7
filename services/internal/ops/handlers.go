package ops

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/otawatch/otawatch/services/internal/svc"
)

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors: one per process, which every service registers its metrics
// on (nothing goes on the global default registry).
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Healthz answers 200 {"status":"ok"} while the process serves HTTP at
// all: the liveness probe.
func Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// ComponentStatus is one line of a failing /readyz.
type ComponentStatus struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// NotReady returns the components of h that are not ready, with why.
func NotReady(h *svc.Health) []ComponentStatus {
	var out []ComponentStatus
	for _, c := range h.Status() {
		if c.Err != nil {
			out = append(out, ComponentStatus{Name: c.Name, Reason: c.Err.Error()})
		}
	}
	return out
}

// Readyz answers 200 {"ready":true} when every component of h is ready,
// else 503 {"ready":false,"notReady":[{"name":...,"reason":...}]}: the
// readiness probe.
func Readyz(h *svc.Health) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		bad := NotReady(h)
		if len(bad) == 0 {
			writeJSON(w, http.StatusOK, map[string]any{"ready": true})
			return
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "notReady": bad})
	})
}

// Metrics serves reg in the Prometheus exposition format. A collector that
// fails is reported in the answer, and the rest is still served.
func Metrics(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Mux serves /healthz, /readyz and /metrics, each with an access log line
// (see AccessLog), and a JSON 404 for anything else.
func Mux(h *svc.Health, reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", Healthz())
	mux.Handle("GET /readyz", Readyz(h))
	mux.Handle("GET /metrics", Metrics(reg))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{
			"error": "no such endpoint: " + r.Method + " " + r.URL.Path + " (the ops listener serves GET /healthz, /readyz, /metrics)"})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
