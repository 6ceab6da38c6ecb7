package natsd

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/otawatch/otawatch/events"
)

// A QoS 1 report the MQTT listener acknowledges is kept only for the
// sessions subscribed to it at that moment: the server stores it in the
// devices account's MQTT stream, and each persistent QoS 1 subscription is
// a durable consumer of that stream that starts at the messages after it.
// On a fresh store the bridge's session does not exist until it first
// subscribes (about 70 ms after the listener opens, measured with
// otawatch run), and a device that reported in that window had its report
// acknowledged and lost. With Config.HoldDevices the server answers a
// device's CONNECT only once a subscription that keeps reports exists, so
// it cannot publish before. On a store that has the bridge's session (every
// start after the first), that is at once.

const (
	// mqttMsgsStream and mqttMsgsPrefix are the devices account's stream
	// of QoS 1 messages and its subjects' prefix (nats-server's MQTT
	// implementation).
	mqttMsgsStream = "$MQTT_msgs"
	mqttMsgsPrefix = "$MQTT.msgs."
	// holdPoll is how often the server is asked for the subscription
	// while devices are held.
	holdPoll = 20 * time.Millisecond
	// DefaultHoldTimeout bounds a held device's wait: then it is refused
	// (CONNACK "not authorized") and retries as after any refusal. It is
	// below common client connect timeouts (10 s in the simulator), so
	// the device hears a refusal rather than times out.
	DefaultHoldTimeout = 5 * time.Second
)

// errNoReportSubscriber is a held device's refusal.
var errNoReportSubscriber = errors.New("held: no persistent session subscribes to device reports yet (is the bridge running?)")

// deviceHold holds device connections until a persistent session
// subscribes to device reports. A nil deviceHold holds nothing.
type deviceHold struct {
	open    chan struct{} // closed once reports have a subscriber
	stop    chan struct{} // closed at shutdown
	timeout time.Duration
	log     *slog.Logger
	since   time.Time

	waiting  atomic.Int64
	refused  atomic.Int64
	warn     sync.Once
	stopOnce sync.Once
}

func newDeviceHold(timeout time.Duration, log *slog.Logger) *deviceHold {
	if timeout <= 0 {
		timeout = DefaultHoldTimeout
	}
	return &deviceHold{open: make(chan struct{}), stop: make(chan struct{}), timeout: timeout, log: log, since: time.Now()}
}

// wait returns nil once devices are admitted, or an error after the
// timeout or at shutdown.
func (h *deviceHold) wait() error {
	if h == nil {
		return nil
	}
	select {
	case <-h.open:
		return nil
	default:
	}
	h.waiting.Add(1)
	defer h.waiting.Add(-1)
	t := time.NewTimer(h.timeout)
	defer t.Stop()
	select {
	case <-h.open:
		return nil
	case <-h.stop:
		return errors.New("server shutting down")
	case <-t.C:
		h.refused.Add(1)
		h.warn.Do(func() {
			h.log.Warn("refusing devices on the MQTT listener until a persistent session subscribes to their reports (the bridge)",
				"held_for", time.Since(h.since).Round(time.Millisecond))
		})
		return errNoReportSubscriber
	}
}

// watch polls subscribed until it reports true, then admits devices; it
// returns then or at shutdown.
func (h *deviceHold) watch(subscribed func() (bool, error)) {
	tick := time.NewTicker(holdPoll)
	defer tick.Stop()
	for {
		ok, err := subscribed()
		if err != nil {
			h.log.Debug("look for a subscription to device reports", "err", err)
		}
		if ok {
			close(h.open)
			h.log.Info("MQTT listener admits devices: a persistent session subscribes to their reports",
				"held_for", time.Since(h.since).Round(time.Millisecond), "devices_waiting", h.waiting.Load(),
				"devices_refused", h.refused.Load())
			return
		}
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
	}
}

// shutdown ends the watch and every wait; it may be called again.
func (h *deviceHold) shutdown() {
	if h != nil {
		h.stopOnce.Do(func() { close(h.stop) })
	}
}

// reportsSubscribed reports whether a durable consumer of the devices
// account's MQTT message stream (a persistent session's QoS 1
// subscription) takes device reports.
func reportsSubscribed(srv *server.Server) (bool, error) {
	d, err := srv.JszAccount(&server.JSzOptions{Account: DevicesAccount, Streams: true, Consumer: true, Config: true})
	if err != nil {
		return false, err
	}
	reports := mqttMsgsPrefix + events.DeviceTopicSubject("*", "*", events.TopicReport)
	for _, st := range d.Streams {
		if st.Name != mqttMsgsStream {
			continue
		}
		for _, c := range st.Consumer {
			if c == nil || c.Config == nil || c.Config.Durable == "" {
				continue
			}
			for _, f := range append([]string{c.Config.FilterSubject}, c.Config.FilterSubjects...) {
				if strings.HasPrefix(f, mqttMsgsPrefix) && server.SubjectsCollide(f, reports) {
					return true, nil
				}
			}
		}
	}
	return false, nil
}
