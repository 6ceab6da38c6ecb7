package api

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/ops"
)

// streamInfoTTL is how long stream counts are cached: a scrape or a
// dashboard push reads the cache, so JetStream sees at most one info
// request per stream per TTL however many clients watch.
const streamInfoTTL = 5 * time.Second

// allStreams are the streams whose counts /metrics and the dashboard show.
var allStreams = []string{events.StreamShadow, events.StreamRollout, events.StreamAlerts, events.StreamNotify, events.StreamRejected}

// streamStat is one stream's counts.
type streamStat struct {
	Name      string `json:"name"`
	Messages  uint64 `json:"messages"`
	Bytes     uint64 `json:"bytes"`
	LastSeq   uint64 `json:"lastSeq"`
	Consumers int    `json:"consumers"`
}

// streamStats caches the streams' info.
type streamStats struct {
	js     jetstream.JetStream
	mu     sync.Mutex
	at     time.Time
	stats  []streamStat
	errors prometheus.Counter
}

// get returns the cached counts, refreshing them when older than the TTL.
// A stream whose info cannot be read is left out (and counted).
func (s *streamStats) get() []streamStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.at) < streamInfoTTL && s.stats != nil {
		return s.stats
	}
	out := make([]streamStat, 0, len(allStreams))
	for _, name := range allStreams {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := s.js.Stream(ctx, name)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		cancel()
		if err != nil {
			s.errors.Inc()
			continue
		}
		out = append(out, streamStat{Name: name, Messages: info.State.Msgs, Bytes: info.State.Bytes,
			LastSeq: info.State.LastSeq, Consumers: info.State.Consumers})
	}
	s.stats, s.at = out, time.Now()
	return out
}

// metrics are the service's Prometheus metrics, on the process's registry
// (svc.Deps.Metrics) or, without one, a registry of its own: nothing is
// registered on the global default registry.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	streams  *prometheus.GaugeVec
}

func newMetrics(reg *prometheus.Registry, m *model, ss *streamStats, folds []*fold) *metrics {
	if reg == nil {
		reg = ops.NewRegistry()
	}
	mt := &metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otawatch_http_requests_total",
			Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "otawatch_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern and method (event streams excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route", "method"}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "otawatch_http_streams_active",
			Help: "Open event streams by kind (sse, websocket).",
		}, []string{"kind"}),
	}
	ss.errors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "otawatch_stream_info_errors_total",
		Help: "Failed JetStream stream info requests.",
	})
	reg.MustRegister(mt.requests, mt.duration, mt.streams, ss.errors,
		&readModelCollector{m: m, folds: folds}, &streamCollector{s: ss})
	return mt
}

// instrument counts and times h under route.
func (mt *metrics) instrument(route string, stream bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		code := sw.status
		if code == 0 {
			code = http.StatusOK
		}
		mt.requests.WithLabelValues(route, r.Method, strconv.Itoa(code)).Inc()
		if !stream {
			mt.duration.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
		}
	})
}

var (
	descDevices = prometheus.NewDesc("otawatch_fleet_devices",
		"Devices that have reported at least once.", nil, nil)
	descOnline = prometheus.NewDesc("otawatch_fleet_devices_online",
		"Devices not marked potentially offline.", nil, nil)
	descOffline = prometheus.NewDesc("otawatch_fleet_devices_potentially_offline",
		"Devices silent for longer than the offline threshold (left out of the success rate).", nil, nil)
	descByStatus = prometheus.NewDesc("otawatch_fleet_devices_by_status",
		"Online devices by their latest reported firmware status.", []string{"status"}, nil)
	descSuccess = prometheus.NewDesc("otawatch_fleet_update_success_rate",
		"Completed / (completed + failed) over online devices; 1 when none finished.", nil, nil)
	descAvgDur = prometheus.NewDesc("otawatch_fleet_update_duration_avg_seconds",
		"Average duration of online devices' latest completed update.", nil, nil)
	descP95Dur = prometheus.NewDesc("otawatch_fleet_update_duration_p95_seconds",
		"95th percentile duration of online devices' latest completed update (one-second buckets).", nil, nil)
	descWave = prometheus.NewDesc("otawatch_rollout_wave_devices",
		"Devices of a rollout wave by job status (offline devices also count in their status).", []string{"job", "wave", "state"}, nil)
	descAlerts = prometheus.NewDesc("otawatch_alerts_active",
		"Active alerts by severity.", []string{"severity"}, nil)
	descFoldSeq = prometheus.NewDesc("otawatch_api_fold_sequence",
		"Last stream sequence the api's read model applied, by stream.", []string{"stream"}, nil)
	descFoldReady = prometheus.NewDesc("otawatch_api_fold_caught_up",
		"1 once the api's read model has replayed the stream's history.", []string{"stream"}, nil)
	descFoldLag = prometheus.NewDesc("otawatch_api_fold_lag",
		"Events of the stream waiting behind the last one the api's read model handled.", []string{"stream"}, nil)
	descFoldRejected = prometheus.NewDesc("otawatch_api_events_rejected_total",
		"Events the api's read model could not apply (recorded on REJECTED as rejected.api), by stream.", []string{"stream"}, nil)

	descStreamMsgs = prometheus.NewDesc("otawatch_stream_messages",
		"Messages stored in a JetStream stream (cached a few seconds).", []string{"stream"}, nil)
	descStreamBytes = prometheus.NewDesc("otawatch_stream_bytes",
		"Bytes stored in a JetStream stream (cached a few seconds).", []string{"stream"}, nil)
	descStreamLast = prometheus.NewDesc("otawatch_stream_last_sequence",
		"Last sequence of a JetStream stream (cached a few seconds).", []string{"stream"}, nil)
	descStreamCons = prometheus.NewDesc("otawatch_stream_consumers",
		"Consumers of a JetStream stream (cached a few seconds).", []string{"stream"}, nil)
)

// readModelCollector reads the fleet, waves and alerts at scrape time, so
// the gauges cost nothing between scrapes.
type readModelCollector struct {
	m     *model
	folds []*fold
}

func (c *readModelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDevices, descOnline, descOffline, descByStatus, descSuccess,
		descAvgDur, descP95Dur, descWave, descAlerts, descFoldSeq, descFoldReady, descFoldLag, descFoldRejected} {
		ch <- d
	}
}

func (c *readModelCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	c.m.mu.RLock()
	fm := c.m.fleet.Metrics()
	waves := c.m.waveRows(time.Now())
	bySeverity := map[string]int{}
	for _, a := range c.m.alerts {
		bySeverity[a.Severity]++
	}
	c.m.mu.RUnlock()

	gauge(descDevices, float64(fm.Devices))
	gauge(descOnline, float64(fm.Online))
	gauge(descOffline, float64(fm.PotentiallyOffline))
	gauge(descByStatus, float64(fm.InProgress), events.StatusInProgress)
	gauge(descByStatus, float64(fm.Completed), events.StatusCompleted)
	gauge(descByStatus, float64(fm.Failed), events.StatusFailed)
	gauge(descSuccess, fm.SuccessRate)
	gauge(descAvgDur, fm.AvgDuration)
	gauge(descP95Dur, fm.P95Duration)
	for _, w := range waves {
		wave := strconv.Itoa(w.Wave)
		gauge(descWave, float64(w.Targeted), w.JobID, wave, "targeted")
		gauge(descWave, float64(w.Pending), w.JobID, wave, "pending")
		gauge(descWave, float64(w.InProgress), w.JobID, wave, "in_progress")
		gauge(descWave, float64(w.Completed), w.JobID, wave, "completed")
		gauge(descWave, float64(w.Failed), w.JobID, wave, "failed")
		gauge(descWave, float64(w.Offline), w.JobID, wave, "offline")
	}
	for _, sev := range []string{"critical", "warning", "info"} {
		gauge(descAlerts, float64(bySeverity[sev]), sev)
		delete(bySeverity, sev)
	}
	for sev, n := range bySeverity {
		gauge(descAlerts, float64(n), sev)
	}
	for _, f := range c.folds {
		gauge(descFoldSeq, float64(f.Applied()), f.stream)
		ready := 0.0
		if f.caughtUp() {
			ready = 1
		}
		gauge(descFoldReady, ready, f.stream)
		gauge(descFoldLag, float64(f.Lag()), f.stream)
		ch <- prometheus.MustNewConstMetric(descFoldRejected, prometheus.CounterValue, float64(f.Rejected()), f.stream)
	}
}

// streamCollector exposes the cached stream counts.
type streamCollector struct{ s *streamStats }

func (c *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descStreamMsgs
	ch <- descStreamBytes
	ch <- descStreamLast
	ch <- descStreamCons
}

func (c *streamCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.s.get() {
		ch <- prometheus.MustNewConstMetric(descStreamMsgs, prometheus.GaugeValue, float64(st.Messages), st.Name)
		ch <- prometheus.MustNewConstMetric(descStreamBytes, prometheus.GaugeValue, float64(st.Bytes), st.Name)
		ch <- prometheus.MustNewConstMetric(descStreamLast, prometheus.GaugeValue, float64(st.LastSeq), st.Name)
		ch <- prometheus.MustNewConstMetric(descStreamCons, prometheus.GaugeValue, float64(st.Consumers), st.Name)
	}
}
