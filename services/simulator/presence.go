package simulator

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
)

// The presence contract (events.PresenceTopic), as a fleet-mode device
// with its own connection keeps it: its will is "offline" on its presence
// topic, it publishes "online" there (QoS 1, not retained) every time it
// connects, after subscribing to its desired state, and it goes away
// without a DISCONNECT (an outage, or the fleet stopping), as a device that
// loses power or network does, so that the broker publishes the will. Over
// plain TCP the simulator opens the socket itself and closes it; over TLS
// or WebSocket, where paho opens it, a device says "offline" itself before
// a clean disconnect, which tells otawatch the same.
//
// Neither message is retained: the bridge has a persistent session, so
// the broker queues them for it while it is away, and a retained "online"
// would outlive a will that is not.

// setPresence makes the connection's device follow the presence contract,
// unless the fleet turned it off or the connection serves many devices.
func (c *conn) setPresence(opts *mqtt.ClientOptions) {
	if !c.own || c.f.cfg.Mode != ModeFleet || c.f.cfg.NoPresence {
		return
	}
	d := c.devs[0]
	c.presenceTopic = events.PresenceTopic(d.typeID, d.id)
	opts.SetWill(c.presenceTopic, events.PresencePayloadOffline, 1, false)
	if u, err := url.Parse(c.f.cfg.Broker); err == nil && (u.Scheme == "tcp" || u.Scheme == "mqtt") {
		opts.SetCustomOpenConnectionFn(c.open)
	}
}

// open dials the broker as paho would for tcp:// and keeps the socket, so
// vanish can cut it.
func (c *conn) open(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	d := o.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: o.ConnectTimeout}
	}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.raw = conn
	c.mu.Unlock()
	return conn, nil
}

// sayOnline publishes "online" on the device's presence topic and waits
// for the PUBACK; it does nothing for a device without presence.
func (c *conn) sayOnline(ctx context.Context) error {
	if c.presenceTopic == "" {
		return nil
	}
	tok := c.client.Publish(c.presenceTopic, 1, false, events.PresencePayloadOnline)
	if err := wait(ctx, tok, c.f.cfg.AckTimeout); err != nil {
		return fmt.Errorf("publish online on %s: %w", c.presenceTopic, err)
	}
	c.f.counters.presence.Add(1)
	return nil
}

// vanish takes the device off the broker the way presence is about: it
// cuts the socket without a DISCONNECT (the broker then publishes the
// will), or, where paho owns the socket, says "offline" and disconnects.
func (c *conn) vanish() {
	c.mu.Lock()
	raw := c.raw
	c.raw = nil
	c.mu.Unlock()
	if raw != nil {
		raw.Close()
		// paho sees the connection lost (onLost: not wanted, so no
		// reconnect); Disconnect only stops its goroutines, as nothing
		// can be sent any more.
		c.client.Disconnect(0)
		return
	}
	if !c.client.IsConnectionOpen() {
		return
	}
	tok := c.client.Publish(c.presenceTopic, 1, false, events.PresencePayloadOffline)
	tok.WaitTimeout(2 * time.Second)
	c.client.Disconnect(100)
}
