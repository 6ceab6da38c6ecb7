package bridge

import (
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// willDevice connects a device that follows the presence contract: its
// will is "offline" on its presence topic. drop cuts its TCP connection
// without a DISCONNECT, as a device that loses power or network does, so
// the broker publishes the will.
func (e *env) willDevice(t *testing.T, typeID, deviceID string) (c mqtt.Client, drop func()) {
	t.Helper()
	var mu sync.Mutex
	var raw net.Conn
	opts := mqtt.NewClientOptions().AddBroker(e.mqttURL).SetClientID("dev-"+deviceID).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5*time.Second).SetKeepAlive(30*time.Second).
		SetWill(events.PresenceTopic(typeID, deviceID), events.PresencePayloadOffline, 1, false).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			mu.Lock()
			raw = conn
			mu.Unlock()
			return conn, err
		})
	c = mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device %s connect: %v", deviceID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, func() {
		mu.Lock()
		defer mu.Unlock()
		raw.Close()
	}
}

// A device says "online" on connect, reports, and its connection drops:
// SHADOW holds its presence online, its report and its presence offline
// (the will, published by the broker), each from the bridge, in that
// order on Mosquitto. A presence payload that is neither word goes to
// REJECTED.
func TestWillMessageLandsAsPresence(t *testing.T) {
	for _, bk := range brokerKinds {
		t.Run(bk.name, func(t *testing.T) {
			e := bk.start(t)
			r := e.startBridge(t, Config{PresenceTopic: DefaultPresenceTopic}, hooks{})

			c, drop := e.willDevice(t, "gateway", "w1")
			_, rep := report(1)
			rep.topic = events.ReportTopic("gateway", "w1")
			publishAll(t, c, []msg{
				{topic: events.PresenceTopic("gateway", "w1"), payload: []byte(events.PresencePayloadOnline)},
				rep,
				{topic: events.PresenceTopic("gateway", "w1"), payload: []byte("asleep")},
			})
			r.settle(t, 3)
			drop()
			testutil.Eventually(t, 30*time.Second, func() bool { return r.s.Stats().Accepted >= 3 },
				"the will did not arrive: %+v", r.s.Stats())
			r.settle(t, 4)

			var got []string
			for _, se := range readEvents(t, e, events.StreamShadow) {
				switch se.ev.Type {
				case events.TypeDevicePresence:
					var d events.DevicePresenceData
					if err := se.ev.DecodeData(&d); err != nil {
						t.Fatal(err)
					}
					if d.TypeID != "gateway" || d.DeviceID != "w1" || se.raw.Subject != events.DevicePresenceSubject("gateway", "w1") {
						t.Errorf("presence event %+v on %s", d, se.raw.Subject)
					}
					if se.ev.ID != events.PresenceMessageID("gateway", "w1", d.State, se.ev.Time) {
						t.Errorf("presence event id %s is not PresenceMessageID", se.ev.ID)
					}
					got = append(got, "presence "+d.State)
				case events.TypeShadowReported:
					got = append(got, "report")
				}
			}
			want := "presence online,report,presence offline"
			if e.mosq == nil {
				// The NATS listener feeds each subscription from its own
				// JetStream consumer: a device's presence messages are in
				// order, and its reports, but not the two with each other.
				var pres []string
				reports := 0
				for _, g := range got {
					if g == "report" {
						reports++
					} else {
						pres = append(pres, g)
					}
				}
				got, want = append(pres, strings.Repeat("report", reports)), "presence online,presence offline,report"
			}
			if strings.Join(got, ",") != want {
				t.Errorf("SHADOW holds %v, want %s", got, want)
			}
			rej := readEvents(t, e, events.StreamRejected)
			if len(rej) != 1 {
				t.Fatalf("REJECTED holds %d events, want the bad presence payload", len(rej))
			}
			var d events.RejectedData
			if err := rej[0].ev.DecodeData(&d); err != nil {
				t.Fatal(err)
			}
			if d.Topic != events.PresenceTopic("gateway", "w1") || string(d.Raw) != "asleep" ||
				!strings.Contains(d.Reason, `presence payload "asleep" (6 bytes) is not "online" or "offline"`) {
				t.Errorf("rejected %+v (reason %q)", d, d.Reason)
			}
		})
	}
}

// With presence_topic empty the bridge does not subscribe to presence:
// a device's "online" is not stored.
func TestPresenceTopicOff(t *testing.T) {
	e := brokerKinds[1].start(t)
	r := e.startBridge(t, Config{}, hooks{})
	c := e.publisher(t, "dev-off")
	_, rep := report(2)
	publishAll(t, c, []msg{{topic: events.PresenceTopic("gateway", "off"), payload: []byte("online")}, rep})
	r.settle(t, 1)
	for _, se := range readEvents(t, e, events.StreamShadow) {
		if se.ev.Type == events.TypeDevicePresence {
			t.Errorf("presence stored with presence_topic empty: %s", se.raw.Subject)
		}
	}
}

func TestValidatePresenceTopic(t *testing.T) {
	tests := []struct {
		name, topic, want string
	}{
		{"default", DefaultPresenceTopic, ""},
		{"off", "", ""},
		{"one type", "iot-2/type/gateway/id/+/presence", ""},
		{"report shape", "iot-2/type/+/id/+/update/shadow", "does not look like iot-2/type/{typeId}/id/{deviceId}/presence"},
		{"hash", "iot-2/#", "does not look like"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := conf.NewProblems()
			validatePresenceTopic(p, tt.topic, DefaultTopic)
			got := ""
			for _, pr := range p.List() {
				got += pr.Key + ": " + pr.Reason
			}
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("validate %q = %q, want %q", tt.topic, got, tt.want)
			}
		})
	}
}
