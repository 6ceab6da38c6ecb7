package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/notify"
)

var (
	descNotifyDecisions = prometheus.NewDesc("otawatch_notify_decisions_total",
		"Decisions this process recorded on NOTIFY, by outcome: attempt (before a receiver is called), sent, failed (one attempt), suppressed (an alert muted by a silence or an inhibition).",
		[]string{"outcome"}, nil)
	descNotifyHeld = prometheus.NewDesc("otawatch_notify_held",
		"What the active notify instance holds: alerts (raised, or resolved and not yet announced), groups, silences (0 standing by).",
		[]string{"kind"}, nil)
	descNotifyStandby = prometheus.NewDesc("otawatch_notify_standby",
		"1 while another instance holds the notify lease.", nil, nil)
)

// notifyCollector exposes the notify service's Status.
type notifyCollector struct{ s *notify.Service }

func (c notifyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descNotifyDecisions
	ch <- descNotifyHeld
	ch <- descNotifyStandby
}

func (c notifyCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Status()
	counter(ch, descNotifyDecisions, float64(st.Attempts), events.NotifyAttempt)
	counter(ch, descNotifyDecisions, float64(st.Sent), events.NotifySent)
	counter(ch, descNotifyDecisions, float64(st.Failed), events.NotifyFailed)
	counter(ch, descNotifyDecisions, float64(st.Suppressed), events.NotifySuppressed)
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	gauge(descNotifyHeld, st.Alerts, "alerts")
	gauge(descNotifyHeld, st.Groups, "groups")
	gauge(descNotifyHeld, st.Silences, "silences")
	standby := 0
	if st.Standby {
		standby = 1
	}
	gauge(descNotifyStandby, standby)
}
