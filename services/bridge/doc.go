// Package bridge turns device shadow reports arriving over MQTT into events
// on JetStream.
//
// One paho client (v1.5.1) subscribes at QoS 1 with cleanSession=false and a
// stable client id, so the broker keeps every report the bridge has not
// acknowledged, across bridge restarts. Auto-ack is off: a report is
// acknowledged on MQTT only after JetStream has acknowledged the event it
// became. Every message, including those the broker redelivers before the
// subscription's route exists, goes through the default publish handler.
//
// For each message the bridge checks, in order: the payload's size
// (mqtt.max_payload), the topic (iot-2/type/{typeId}/id/{deviceId}/update/shadow,
// ids of 1 to 64 characters from A-Z a-z 0-9 _ -, see events.ValidateID),
// the payload's JSON and the shadow report schema (schemas.ShadowReport).
// An accepted report is published to shadow.reported.{typeId}.{deviceId}
// (stream SHADOW) with Nats-Msg-Id set to events.ReportEventID, so a
// redelivery or a device's retry is stored once. A refused one is published
// to rejected.bridge (stream REJECTED) with the raw bytes, the topic and a
// reason a person can read, under an id derived from topic and bytes, and
// then acknowledged: the bridge moves on.
//
// Presence (the optional part of the device contract, events.PresenceTopic):
// the bridge also subscribes to mqtt.presence_topic (default
// iot-2/type/+/id/+/presence; empty turns it off), where a device says
// "online" when it connects and the broker publishes its will, "offline",
// when its connection drops. Each message becomes a device.presence event
// on SHADOW (state online or offline, source otawatch/bridge), through the
// same per-device line as the device's reports and acknowledged on MQTT
// only after its PubAck; any other payload goes to REJECTED. On Mosquitto
// a device's presence and reports reach SHADOW in the order it sent them;
// the NATS MQTT listener feeds each subscription from its own JetStream
// consumer, so there each kind is in order but not the two with each
// other. See presence.go.
//
// At most mqtt.max_in_flight reports are being stored at a time, the rest
// wait in arrival order; reports of different devices are decoded and
// published concurrently and acknowledged as their PubAcks come. A device's
// reports are stored in the order the broker delivered them, which for a
// device publishing over one connection is the order it sent them: at most
// one report per device is being stored, and the device's next report is
// published only after the previous one's PubAck. So SHADOW's order is each
// device's send order, which the read models take its state from. paho's
// inbound goroutine only hands reports over and never blocks. A publish
// that fails, or gets no PubAck within mqtt.publish_timeout, is tried again
// with backoff for as long as the bridge runs, holding back only its
// device's later reports; nothing is acknowledged that is not stored.
// Across sessions the broker decides: Mosquitto resends what the last
// session left unacknowledged first, in order, but the NATS MQTT listener
// resends it only after its ack wait (30 s), so a report a device sent
// after those can be stored before them.
//
// A stream at its byte limit refuses the publish (SHADOW does not drop old
// events to make room): the report is retried like any failed publish and
// stays unacknowledged, so the broker keeps it, and StoreHealthComponent
// is not ready, naming the stream and its limit, until a publish to it
// succeeds again. REJECTED records keep at most events.MaxRejectedRaw of
// a refused payload, with the length and SHA-256 of the whole.
//
// DecodeReport is the pure part (size, topic, JSON, schema) and is fuzzed.
// Plain reports (printable ASCII strings, a canonical RFC 3339 timestamp)
// are checked and decoded in one pass; everything else, and every refusal,
// goes through the JSON Schema, and FuzzDecodeFast holds the one-pass path
// to the schema's verdict.
//
// One bridge per client id is active: instances with the same
// mqtt.client_id share a lease in JetStream KV (package lease), and those
// without it stand by, unconnected, until it is free. Two connected
// instances would take the broker session from each other in turn.
//
// A broker in front of the bridge needs limits that do not drop QoS 1
// messages for a subscriber that falls behind: see deploy/mosquitto.
package bridge
