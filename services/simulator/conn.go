package simulator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/otawatch/otawatch/services/internal/svc"
)

// errAckTimeout is a report the broker did not acknowledge in AckTimeout.
var errAckTimeout = errors.New("no PUBACK within the ack timeout")

// subscribeChunk is how many topics one SUBSCRIBE carries on a multiplexed
// connection.
const subscribeChunk = 500

// conn is one MQTT connection, serving one device (the default) or many
// (Connections > 0). Reconnection is ours, not paho's: after a lost
// connection we must know whether the broker kept the session, to
// subscribe again only what it does not have (a needless SUBSCRIBE replays
// the retained desired state, and on the NATS MQTT listener costs a
// JetStream consumer update, which is what an overloaded broker can least
// afford).
type conn struct {
	f         *Fleet
	clientID  string
	devs      []*device
	byTopic   map[string]*device
	own       bool // one device, whose outage is the connection's
	subscribe bool // fleet mode: devices listen to their delta topics
	// presenceTopic is the device's presence topic when it follows the
	// presence contract (presence.go), else empty.
	presenceTopic string
	// filters are the wildcard filters of a Wildcard connection, one per
	// device type; nil subscribes each device's topic.
	filters []string
	client  mqtt.Client

	mu           sync.Mutex
	wantUp       bool // false during a device's outage and at shutdown
	up           bool
	reconnecting bool
	connects     int
	lastUp       time.Time // when the connection last came up
	losses       int       // connections lost soon after coming up, in a row
	// subscribed are the devices of a multiplexed connection whose topic
	// the broker's session holds, as far as we know.
	subscribed map[*device]bool
	// raw is the connection's socket when the simulator opened it
	// (presence over plain TCP), so an outage can cut it.
	raw net.Conn
}

// quickLoss is how soon after connecting a lost connection counts toward
// the reconnect backoff: a broker that drops connections under load must
// not be hammered by every client reconnecting at once, again and again.
const quickLoss = 30 * time.Second

func newConn(f *Fleet, clientID string, devs []*device, own bool) *conn {
	c := &conn{
		f: f, clientID: clientID, devs: devs, own: own, subscribe: f.cfg.Mode == ModeFleet,
		byTopic: make(map[string]*device, len(devs)), wantUp: true, subscribed: map[*device]bool{},
	}
	types := map[string]bool{}
	for _, d := range devs {
		c.byTopic[d.deltaTopic] = d
		if f.cfg.Wildcard && !types[d.typeID] {
			types[d.typeID] = true
			c.filters = append(c.filters, "iot-2/type/"+d.typeID+"/id/+/shadow/delta")
		}
	}
	user, password := f.cfg.Username, f.cfg.Password
	if own && f.cfg.deviceAuth() {
		// The device authenticates as itself.
		user, password = devs[0].id, f.cfg.devicePassword(devs[0].id)
	}
	opts := mqtt.NewClientOptions().
		AddBroker(f.cfg.Broker).
		SetClientID(clientID).
		SetUsername(user).
		SetPassword(password).
		// A device keeps its session (and subscription) across outages,
		// so what was published meanwhile reaches it; standalone devices
		// only publish and need none.
		SetCleanSession(!c.subscribe).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).
		SetKeepAlive(60 * time.Second).
		SetWriteTimeout(10 * time.Second).
		// Handlers may publish; with OrderMatters they would have to not.
		SetOrderMatters(false).
		// Every message goes to the default handler: a message redelivered
		// on reconnect arrives before Subscribe registers a handler (paho
		// would drop it), and paho matches per-subscription handlers by a
		// linear scan that splits every filter, which costs a multiplexed
		// connection with thousands of topics more than the rest of the
		// simulation. So subscriptions register none.
		SetDefaultPublishHandler(c.onMessage).
		SetConnectionLostHandler(c.onLost)
	c.setPresence(opts) // presence.go
	c.client = mqtt.NewClient(opts)
	return c
}

// connectOnce makes one connection attempt. After the first connection,
// a session the broker kept already has the subscriptions.
func (c *conn) connectOnce(ctx context.Context) error {
	tok := c.client.Connect()
	if err := wait(ctx, tok, 15*time.Second); err != nil {
		return fmt.Errorf("connect %s: %w", c.clientID, err)
	}
	c.mu.Lock()
	first := c.connects == 0
	c.mu.Unlock()
	// The first connection subscribes whatever the broker kept: a session
	// left by an earlier run need not hold these topics.
	fresh := first || !tok.(*mqtt.ConnectToken).SessionPresent()
	if c.subscribe {
		if err := c.subscribeAll(ctx, fresh); err != nil {
			c.client.Disconnect(0)
			return err
		}
	}
	if err := c.sayOnline(ctx); err != nil {
		c.client.Disconnect(0)
		return err
	}
	c.mu.Lock()
	if !c.wantUp || c.f.stopped.Load() {
		// Shut down (or taken offline) while this attempt was under way.
		c.mu.Unlock()
		c.client.Disconnect(0)
		return errStopped
	}
	c.connects++
	c.up = true
	c.lastUp = time.Now()
	c.mu.Unlock()
	c.f.counters.connected.Add(int64(len(c.devs)))
	return nil
}

// subscribeAll makes the broker's session hold what the connection's
// devices need: its wildcard filters, or the topic of every online device
// (and not of an offline one). fresh says the session holds nothing; a kept
// session is only corrected where outages changed while the connection was
// down.
func (c *conn) subscribeAll(ctx context.Context, fresh bool) error {
	switch {
	case c.filters != nil:
		if !fresh {
			return nil
		}
		topics := make(map[string]byte, len(c.filters))
		for _, f := range c.filters {
			topics[f] = 1
		}
		if err := subscribed(ctx, c.client.SubscribeMultiple(topics, nil)); err != nil {
			return fmt.Errorf("subscribe %v on %s: %w", c.filters, c.clientID, err)
		}
		return nil
	case c.own:
		if !fresh {
			return nil
		}
		if err := subscribed(ctx, c.client.Subscribe(c.devs[0].deltaTopic, 1, nil)); err != nil {
			return fmt.Errorf("subscribe on %s: %w", c.clientID, err)
		}
		return nil
	}
	var sub, unsub []*device
	c.mu.Lock()
	if fresh {
		clear(c.subscribed)
	}
	for _, d := range c.devs {
		d.mu.Lock()
		on := d.online
		d.mu.Unlock()
		switch {
		case on && !c.subscribed[d]:
			sub = append(sub, d)
		case !on && c.subscribed[d]:
			unsub = append(unsub, d)
		}
	}
	c.mu.Unlock()
	for len(sub) > 0 {
		chunk := sub[:min(len(sub), subscribeChunk)]
		sub = sub[len(chunk):]
		topics := make(map[string]byte, len(chunk))
		for _, d := range chunk {
			topics[d.deltaTopic] = 1
		}
		if err := subscribed(ctx, c.client.SubscribeMultiple(topics, nil)); err != nil {
			return fmt.Errorf("subscribe %d delta topics on %s: %w", len(topics), c.clientID, err)
		}
		c.mark(chunk, true)
	}
	for len(unsub) > 0 {
		chunk := unsub[:min(len(unsub), subscribeChunk)]
		unsub = unsub[len(chunk):]
		topics := make([]string, len(chunk))
		for i, d := range chunk {
			topics[i] = d.deltaTopic
		}
		if err := wait(ctx, c.client.Unsubscribe(topics...), 30*time.Second); err != nil {
			return fmt.Errorf("unsubscribe %d delta topics on %s: %w", len(topics), c.clientID, err)
		}
		c.mark(chunk, false)
	}
	return nil
}

// mark records whether the session holds the topics of devs.
func (c *conn) mark(devs []*device, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range devs {
		c.subscribed[d] = on
	}
}

// connectLoop connects, retrying with a jittered backoff until it works or
// ctx ends or the connection is no longer wanted.
func (c *conn) connectLoop(ctx context.Context) error {
	b := backoff.NewExponentialBackOff() // jittered, from 500 ms up to 10 s
	b.InitialInterval, b.MaxInterval = 500*time.Millisecond, 10*time.Second
	refusals := 0
	for {
		c.mu.Lock()
		want := c.wantUp
		c.mu.Unlock()
		if !want || c.f.stopped.Load() {
			return errStopped
		}
		err := c.f.withConnectSlot(ctx, c.connectOnce)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errStopped) {
			return err
		}
		// Credentials the broker refuses stay refused: say which device
		// and stop, rather than retry forever.
		if errors.Is(err, packets.ErrorRefusedNotAuthorised) || errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
			if refusals++; refusals == 3 {
				return fmt.Errorf("%w (the broker refused the credentials three times: is the device registered, with this password? see otawatch devices)", err)
			}
		}
		// A refusal can be a broker under load (NATS MQTT creates a
		// JetStream consumer per subscription), but three in a row are a
		// limit that retrying will not lift.
		if errors.Is(err, errSubscriptionRefused) {
			if refusals++; refusals == 3 {
				return fmt.Errorf("%w (a broker may cap a session's subscriptions: use more connections, or wildcard subscriptions)", err)
			}
		}
		c.f.warnConnect(err)
		if err := sleep(ctx, c.f.clock, b.NextBackOff()); err != nil {
			return err
		}
	}
}

var errStopped = errors.New("simulator stopped")

// onLost reconnects a connection the broker or the network dropped, and
// has its devices reconcile once it is back.
func (c *conn) onLost(_ mqtt.Client, err error) {
	c.mu.Lock()
	wasUp := c.up
	c.up = false
	again := c.wantUp && !c.reconnecting && !c.f.stopped.Load()
	if again {
		c.reconnecting = true
	}
	if time.Since(c.lastUp) < quickLoss {
		c.losses++
	} else {
		c.losses = 0
	}
	losses := c.losses
	c.mu.Unlock()
	if wasUp {
		c.f.counters.connected.Add(-int64(len(c.devs)))
	}
	if !again {
		return
	}
	c.f.log.Debug("connection lost", "client_id", c.clientID, "err", err)
	go func() {
		ctx := c.f.ctx()
		if losses > 0 {
			// Lost again soon after connecting: wait before trying, longer
			// each time, so an overloaded broker gets air.
			pause := min(10*time.Second, time.Duration(1<<min(losses-1, 5))*500*time.Millisecond)
			if sleep(ctx, c.f.clock, time.Duration(float64(pause)*(0.5+rand.Float64()))) != nil {
				c.mu.Lock()
				c.reconnecting = false
				c.mu.Unlock()
				return
			}
		}
		err := c.connectLoop(ctx)
		c.mu.Lock()
		c.reconnecting = false
		c.mu.Unlock()
		if err != nil {
			return
		}
		for _, d := range c.devs {
			d.mu.Lock()
			on := d.online
			d.mu.Unlock()
			if on {
				d.reconnected()
			}
		}
	}()
}

// disconnect closes the connection on purpose. A device that follows the
// presence contract goes as a real one does, without a DISCONNECT, so the
// broker publishes its will (presence.go).
func (c *conn) disconnect() {
	c.mu.Lock()
	c.wantUp = false
	wasUp := c.up
	c.up = false
	c.mu.Unlock()
	if wasUp {
		c.f.counters.connected.Add(-int64(len(c.devs)))
	}
	if c.presenceTopic != "" {
		c.vanish()
		return
	}
	if c.client.IsConnectionOpen() {
		c.client.Disconnect(100)
	}
}

func (c *conn) onMessage(_ mqtt.Client, m mqtt.Message) {
	if d := c.byTopic[m.Topic()]; d != nil {
		d.handleDelta(m.Payload(), m.Retained(), m.Duplicate())
	}
}

// publish sends a QoS 1 report and reports the PUBACK (or its absence).
func (c *conn) publish(topic string, payload []byte, done func(error)) {
	tok := c.client.Publish(topic, 1, false, payload)
	select {
	case <-tok.Done():
		done(tok.Error())
		return
	default:
	}
	go func() {
		if !tok.WaitTimeout(c.f.cfg.AckTimeout) {
			done(errAckTimeout)
			return
		}
		done(tok.Error())
	}()
}

// ownLink is the link of a device with its own connection: an outage is a
// disconnect, and coming back a reconnect to the kept session.
type ownLink struct{ *conn }

func (l ownLink) setOnline(ctx context.Context, on bool) error {
	if !on {
		l.disconnect()
		return nil
	}
	l.mu.Lock()
	l.wantUp = true
	l.mu.Unlock()
	return l.connectLoop(ctx)
}

// muxLink is a device's share of a multiplexed connection: an outage is
// an unsubscribe, and coming back a subscribe that replays the retained
// desired state. Under a wildcard filter an outage only drops what comes,
// and coming back subscribes the device's own topic just long enough for
// the broker to replay the retained desired state.
type muxLink struct {
	*conn
	d *device
}

func (l muxLink) setOnline(ctx context.Context, on bool) error {
	if l.filters != nil {
		if !on {
			return nil
		}
		if err := subscribed(ctx, l.client.Subscribe(l.d.deltaTopic, 1, nil)); err != nil {
			// Down: the device learns its desired state when the
			// connection's wildcard is back and the rollout sends again,
			// or from the API.
			return nil
		}
		// The broker sends the retained message before it reads the
		// UNSUBSCRIBE; keeping the subscription would deliver every later
		// message twice.
		_ = wait(ctx, l.client.Unsubscribe(l.d.deltaTopic), 30*time.Second)
		return ctx.Err()
	}
	for {
		var err error
		if on {
			err = subscribed(ctx, l.client.Subscribe(l.d.deltaTopic, 1, nil))
		} else {
			err = wait(ctx, l.client.Unsubscribe(l.d.deltaTopic), 30*time.Second)
		}
		if err == nil {
			l.mark([]*device{l.d}, on)
			return nil
		}
		if !on {
			// Down: the reconnect unsubscribes what an offline device
			// holds; until then the device drops what comes.
			return err
		}
		// Down: the connection's reconnect subscribes every online device
		// the session does not hold.
		if err := sleep(ctx, l.f.clock, time.Second); err != nil {
			return err
		}
		l.mu.Lock()
		up := l.up
		l.mu.Unlock()
		if !up {
			return nil
		}
	}
}

// wait waits for tok, ctx or timeout.
func wait(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("no answer from the broker in %s", timeout)
	}
}

// errSubscriptionRefused is a SUBACK with the failure code for a topic.
var errSubscriptionRefused = errors.New("the broker refused the subscription")

// subscribed waits for a SUBSCRIBE's SUBACK and checks every topic was
// granted: a broker refuses a subscription in the SUBACK (0x80), not as a
// protocol error, and paho reports that as success. The NATS MQTT listener
// refuses a session's 64th QoS 1 subscription at its default max_ack_pending
// (1024 each, 65535 per session).
func subscribed(ctx context.Context, tok mqtt.Token) error {
	if err := wait(ctx, tok, 30*time.Second); err != nil {
		return err
	}
	st, ok := tok.(*mqtt.SubscribeToken)
	if !ok {
		return nil
	}
	refused := 0
	for _, code := range st.Result() {
		if code >= 0x80 {
			refused++
		}
	}
	if refused > 0 {
		return fmt.Errorf("%w: %d of %d topics", errSubscriptionRefused, refused, len(st.Result()))
	}
	return nil
}

// sleep waits d on clock, or until ctx ends.
func sleep(ctx context.Context, clock svc.Clock, d time.Duration) error {
	ch := make(chan struct{})
	t := clock.AfterFunc(d, func() { close(ch) })
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}
