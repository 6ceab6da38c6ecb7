package bridge

import (
	"strings"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
)

// DefaultPresenceTopic is the default subscription filter for device
// presence messages (mqtt.presence_topic): every device's will and
// "online" (events.PresenceTopic).
const DefaultPresenceTopic = events.PresenceTopicFilter

// A presence message takes the path of a report (pipeline.go): the same
// per-device line, since its topic names the same device
// (deviceKey), so a device's "online", its reports and its will are
// stored on SHADOW in the order the broker delivered them; the same slots;
// and the MQTT ack only after the JetStream PubAck. What differs is the
// decoding: the payload is one word, "online" or "offline", and anything
// else goes to REJECTED with the reason, like a bad report.
//
// A presence message has no timestamp or sequence of its own, so its
// event id is the device, the state and the time the bridge received it
// (events.PresenceMessageID): a retried publish keeps its id (prepared
// once), but a message the broker redelivers in a later session is stored
// again. That is harmless: the fleet state takes a presence event as the
// device's current state, and the same state twice is one state.

// subscriptions are the bridge's filters at QoS 1: reports, and presence
// unless mqtt.presence_topic is empty.
func (s *Service) subscriptions() map[string]byte {
	subs := map[string]byte{s.cfg.Topic: 1}
	if s.cfg.PresenceTopic != "" {
		subs[s.cfg.PresenceTopic] = 1
	}
	return subs
}

// preparePresence decodes a presence message into its SHADOW event
// (device.presence.{typeId}.{deviceId}, state online or offline, source
// the bridge), or its REJECTED event with the reason. Every message on a
// presence topic comes here, presence_topic set or not: a session
// subscribed before it was turned off may still deliver some, and they
// are presence, not reports of the wrong shape. A payload of any size
// that is not exactly "online" or "offline" is refused (the REJECTED
// record keeps its start, length and digest).
func (s *Service) preparePresence(m mqtt.Message) (*pending, error) {
	topic := m.Topic()
	typeID, deviceID, err := events.ParsePresenceTopic(topic)
	if err != nil {
		return s.prepareRefusal(m, err.Error())
	}
	state, err := events.ParsePresencePayload(m.Payload())
	if err != nil {
		return s.prepareRefusal(m, err.Error())
	}
	now := s.clock.Now()
	p := &pending{
		m:       m,
		subject: events.DevicePresenceSubject(typeID, deviceID),
		msgID:   events.PresenceMessageID(typeID, deviceID, state, now),
		stream:  events.StreamShadow,
	}
	p.body, err = events.Encode(p.msgID, events.SourceBridge, events.TypeDevicePresence, p.subject, now,
		&events.DevicePresenceData{TypeID: typeID, DeviceID: deviceID, State: state})
	return p, err
}

// validatePresenceTopic checks mqtt.presence_topic: empty (off) or a
// filter of the presence topic's shape that is not the report filter.
func validatePresenceTopic(p conf.Problems, topic, reportTopic string) {
	if topic == "" {
		return
	}
	if strings.Count(topic, "/") != 5 || !strings.HasSuffix(topic, "/presence") {
		p.Addf("presence_topic", "%q does not look like iot-2/type/{typeId}/id/{deviceId}/presence (empty turns presence off)", topic)
	}
	if topic == reportTopic {
		p.Addf("presence_topic", "%q is the report topic too", topic)
	}
}
