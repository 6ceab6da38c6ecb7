package app

import (
	"slices"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/alerting"
	"github.com/otawatch/otawatch/services/bridge"
	"github.com/otawatch/otawatch/services/internal/ops"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/projector"
	"github.com/otawatch/otawatch/services/rollout"
)

// serviceStreams are the streams each service reads or writes: while one of
// a process's is missing, its /readyz fails naming it. (OpenInfra creates
// every stream at start; this is what notices one gone later.)
var serviceStreams = map[string][]string{
	"bridge":    {events.StreamShadow, events.StreamRejected},
	"projector": {events.StreamShadow, events.StreamRollout, events.StreamAlerts, events.StreamNotify, events.StreamRejected},
	"alerting":  {events.StreamShadow, events.StreamRollout, events.StreamAlerts, events.StreamRejected},
	"rollout":   {events.StreamShadow, events.StreamRollout, events.StreamRejected},
	"api":       {events.StreamShadow, events.StreamRollout, events.StreamAlerts, events.StreamNotify, events.StreamRejected},
	"notify":    {events.StreamAlerts, events.StreamNotify, events.StreamRejected},
	"audit":     {events.StreamShadow, events.StreamRollout, events.StreamAlerts, events.StreamNotify, events.StreamRejected, events.StreamAudit},
}

// neededStreams maps each stream the named services need to those
// services.
func neededStreams(names []string) map[string][]string {
	out := map[string][]string{}
	for _, n := range names {
		for _, s := range serviceStreams[n] {
			out[s] = append(out[s], n)
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

// opsAddr is where this process's ops listener binds, "" for none: ops.listen
// when set; with it empty, http.listen unless the api runs (it serves
// /healthz, /readyz and /metrics itself).
func opsAddr(cfg *Config, names []string) string {
	switch cfg.Ops.Listen {
	case ops.ListenOff:
		return ""
	case "":
		if slices.Contains(names, "api") {
			return ""
		}
		return cfg.HTTP.Listen
	}
	return cfg.Ops.Listen
}

// registerServiceMetrics exposes a service's counters (its Stats or
// Status, read at scrape time) on reg. A service without counters of its
// own (the api registers its metrics itself) adds nothing.
func registerServiceMetrics(reg prometheus.Registerer, s svc.Service) error {
	var c prometheus.Collector
	switch s := s.(type) {
	case *bridge.Service:
		c = bridgeCollector{s}
	case *projector.Service:
		c = projectorCollector{s}
	case *alerting.Service:
		c = alertingCollector{s}
	case *rollout.Service:
		c = rolloutCollector{s}
	case *notify.Service:
		c = notifyCollector{s}
	default:
		return nil
	}
	return reg.Register(c)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

var (
	descBridgeReports = prometheus.NewDesc("otawatch_bridge_reports_total",
		"Reports the bridge handled, by outcome: accepted (stored on SHADOW), duplicate (already stored: a redelivery or a device's retry), rejected (recorded on REJECTED).",
		[]string{"outcome"}, nil)
	descBridgeRetries = prometheus.NewDesc("otawatch_bridge_publish_retries_total",
		"JetStream publishes the bridge tried again after a failure or a full window.", nil, nil)
	descBridgeInFlight = prometheus.NewDesc("otawatch_bridge_reports_in_flight",
		"Reports received over MQTT and not yet stored and acknowledged.", nil, nil)
)

type bridgeCollector struct{ s *bridge.Service }

func (c bridgeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBridgeReports
	ch <- descBridgeRetries
	ch <- descBridgeInFlight
}

func (c bridgeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	counter(ch, descBridgeReports, float64(st.Accepted), "accepted")
	counter(ch, descBridgeReports, float64(st.Duplicates), "duplicate")
	counter(ch, descBridgeReports, float64(st.Rejected), "rejected")
	counter(ch, descBridgeRetries, float64(st.PublishRetries))
	ch <- prometheus.MustNewConstMetric(descBridgeInFlight, prometheus.GaugeValue, float64(st.InFlight))
}

var (
	descProjectorRows = prometheus.NewDesc("otawatch_projector_rows_total",
		"Rows ClickHouse accepted from the projector, by source stream.", []string{"stream"}, nil)
	descProjectorBatches = prometheus.NewDesc("otawatch_projector_batches_total",
		"Batches the projector wrote and acknowledged, by source stream.", []string{"stream"}, nil)
	descProjectorRejected = prometheus.NewDesc("otawatch_projector_rejected_total",
		"Events the projector recorded on REJECTED instead of projecting them, by source stream.", []string{"stream"}, nil)
)

type projectorCollector struct{ s *projector.Service }

func (c projectorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descProjectorRows
	ch <- descProjectorBatches
	ch <- descProjectorRejected
}

func (c projectorCollector) Collect(ch chan<- prometheus.Metric) {
	for stream, st := range c.s.Stats() {
		counter(ch, descProjectorRows, float64(st.Rows), stream)
		counter(ch, descProjectorBatches, float64(st.Batches), stream)
		counter(ch, descProjectorRejected, float64(st.Rejected), stream)
	}
}

var descAlerts = prometheus.NewDesc("otawatch_alerting_alerts_total",
	"Alert events this process stored on ALERTS, by state (raised, resolved) and severity.", []string{"state", "severity"}, nil)

type alertingCollector struct{ s *alerting.Service }

func (c alertingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descAlerts }

func (c alertingCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Status()
	for _, sev := range []string{"critical", "warning", "info"} {
		// The usual severities are always there, so a rate() starts at 0.
		counter(ch, descAlerts, float64(st.Raised[sev]), events.AlertRaised, sev)
		counter(ch, descAlerts, float64(st.Resolved[sev]), events.AlertResolved, sev)
	}
	for state, m := range map[string]map[string]uint64{events.AlertRaised: st.Raised, events.AlertResolved: st.Resolved} {
		for sev, n := range m {
			if sev != "critical" && sev != "warning" && sev != "info" {
				counter(ch, descAlerts, float64(n), state, sev)
			}
		}
	}
}

var (
	descDeltasSent = prometheus.NewDesc("otawatch_rollout_deltas_sent_total",
		"Desired-state messages the broker acknowledged from the rollout service.", nil, nil)
	descDeltasRetracted = prometheus.NewDesc("otawatch_rollout_deltas_retracted_total",
		"Retained desired states of aborted jobs cleared on the broker.", nil, nil)
	descDesiredRecorded = prometheus.NewDesc("otawatch_rollout_desired_recorded_total",
		"shadow.desired events the rollout service appended.", nil, nil)
	descRolloutEvents = prometheus.NewDesc("otawatch_rollout_events_appended_total",
		"ROLLOUT events the rollout service appended.", nil, nil)
)

type rolloutCollector struct{ s *rollout.Service }

func (c rolloutCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDeltasSent
	ch <- descDeltasRetracted
	ch <- descDesiredRecorded
	ch <- descRolloutEvents
}

func (c rolloutCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	counter(ch, descDeltasSent, float64(st.DeltasPublished))
	counter(ch, descDeltasRetracted, float64(st.DeltasRetracted))
	counter(ch, descDesiredRecorded, float64(st.DesiredRecorded))
	counter(ch, descRolloutEvents, float64(st.EventsAppended))
}
