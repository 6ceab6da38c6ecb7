package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// StreamsComponent is the stream check's name in the health registry.
const StreamsComponent = "streams"

// callTimeout bounds each JetStream call of a check.
const callTimeout = 2 * time.Second

// Watcher checks the streams a process needs and reads the durable
// consumers' pending counts, every Interval, until its Run ends. It is a
// prometheus.Collector of what it read.
type Watcher struct {
	js       jetstream.JetStream
	need     map[string][]string // stream -> the services that need it
	streams  []string            // every stream whose consumers are read
	interval time.Duration
	health   *svc.Health
	log      *slog.Logger

	mu        sync.Mutex
	present   map[string]bool
	consumers []consumerStat
	missing   string // the last reported problem, to log transitions only
	errors    prometheus.Counter
}

// consumerStat is one durable consumer's counts.
type consumerStat struct {
	stream, name                     string
	pending, ackPending, redelivered uint64
}

// NewWatcher returns a watcher of the streams in need (stream name -> the
// services that need it), which also reads the consumers of every otawatch
// stream (events.StreamNames). Until its first check the streams
// component is not ready.
func NewWatcher(js jetstream.JetStream, need map[string][]string, interval time.Duration, health *svc.Health, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	health.Set(StreamsComponent, errors.New("not checked yet"))
	return &Watcher{
		js: js, need: need, streams: events.StreamNames(), interval: interval, health: health,
		log: log, present: map[string]bool{},
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "otawatch_ops_check_errors_total",
			Help: "JetStream calls of the stream and consumer checks that failed (a missing stream is not one).",
		}),
	}
}

// Run checks at once and then every interval until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		w.Check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check runs one round: every needed stream must exist, and every durable
// consumer's counts are read. It reports the outcome to the health
// registry and returns the problem, nil when every stream is there.
func (w *Watcher) Check(ctx context.Context) error {
	present := map[string]bool{}
	found := map[string]jetstream.Stream{}
	var problems []string
	for _, name := range w.allStreams() {
		_, needed := w.need[name]
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		st, err := w.js.Stream(cctx, name)
		cancel()
		switch {
		case err == nil:
			present[name], found[name] = true, st
		case errors.Is(err, jetstream.ErrStreamNotFound):
			if needed {
				problems = append(problems, fmt.Sprintf("stream %s is missing (needed by %s)", name, strings.Join(w.need[name], ", ")))
			}
		default:
			w.errors.Inc()
			if needed {
				problems = append(problems, fmt.Sprintf("check stream %s: %v", name, err))
			}
		}
	}
	var cons []consumerStat
	for _, name := range w.streams {
		if !present[name] {
			continue
		}
		cs, err := listConsumers(ctx, found[name])
		if err != nil {
			w.errors.Inc()
			w.log.Debug("list consumers failed", "stream", name, "err", err)
		}
		cons = append(cons, cs...)
	}
	var problem error
	if len(problems) > 0 {
		problem = errors.New(strings.Join(problems, "; "))
	}
	w.health.Set(StreamsComponent, problem)

	w.mu.Lock()
	w.present, w.consumers = present, cons
	last := w.missing
	w.missing = ""
	if problem != nil {
		w.missing = problem.Error()
	}
	w.mu.Unlock()
	switch {
	case problem != nil && problem.Error() != last:
		w.log.Warn("not ready: a stream this process needs cannot be read", "err", problem)
	case problem == nil && last != "":
		w.log.Info("every stream this process needs is there again")
	}
	return problem
}

// allStreams are the needed streams and the otawatch ones, sorted.
func (w *Watcher) allStreams() []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range w.streams {
		seen[s] = true
		out = append(out, s)
	}
	for s := range w.need {
		if !seen[s] {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// listConsumers reads the durable consumers of stream; ordered and other
// ephemeral consumers (the api's and alerting's readers) are left out.
func listConsumers(ctx context.Context, s jetstream.Stream) ([]consumerStat, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	stream := s.CachedInfo().Config.Name
	l := s.ListConsumers(cctx)
	var out []consumerStat
	for ci := range l.Info() {
		if ci.Config.Durable == "" {
			continue
		}
		out = append(out, consumerStat{stream: stream, name: ci.Name, pending: ci.NumPending,
			ackPending: uint64(ci.NumAckPending), redelivered: uint64(ci.NumRedelivered)})
	}
	return out, l.Err()
}

var (
	descPresent = prometheus.NewDesc("otawatch_stream_present",
		"1 when the stream could be read at the last check, 0 when it was missing or could not be read.", []string{"stream"}, nil)
	descPending = prometheus.NewDesc("otawatch_consumer_pending_messages",
		"Messages of the stream a durable consumer has not been delivered yet (read every ops.interval).", []string{"stream", "consumer"}, nil)
	descAckPending = prometheus.NewDesc("otawatch_consumer_ack_pending_messages",
		"Messages delivered to a durable consumer and not acknowledged yet (read every ops.interval).", []string{"stream", "consumer"}, nil)
	descRedelivered = prometheus.NewDesc("otawatch_consumer_redelivered_messages",
		"Messages a durable consumer has been delivered more than once and not acknowledged yet (read every ops.interval).", []string{"stream", "consumer"}, nil)
)

// Describe implements prometheus.Collector.
func (w *Watcher) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPresent
	ch <- descPending
	ch <- descAckPending
	ch <- descRedelivered
	w.errors.Describe(ch)
}

// Collect implements prometheus.Collector: what the last check read.
func (w *Watcher) Collect(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	present, cons := w.present, w.consumers
	w.mu.Unlock()
	for _, s := range w.allStreams() {
		v := 0.0
		if present[s] {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descPresent, prometheus.GaugeValue, v, s)
	}
	for _, c := range cons {
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(c.pending), c.stream, c.name)
		ch <- prometheus.MustNewConstMetric(descAckPending, prometheus.GaugeValue, float64(c.ackPending), c.stream, c.name)
		ch <- prometheus.MustNewConstMetric(descRedelivered, prometheus.GaugeValue, float64(c.redelivered), c.stream, c.name)
	}
	w.errors.Collect(ch)
}
