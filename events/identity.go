package events

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// Identities on the NATS port. The embedded server admits these (see
// services/natsd), and a deploy config for a cluster gives them the same
// permissions (deploy/nats/cluster.conf). Each may send rollout commands
// only under its own name, so the rollout service records who asked.
const (
	// IdentityServices is every otawatch service (otawatch run).
	IdentityServices = "otawatch"
	// IdentityCLI is the command line (otawatch rollout, replay, ...).
	IdentityCLI = "otawatch-cli"
	// IdentityAnonymous is a client without credentials, admitted only on
	// a loopback listener when the configuration allows it.
	IdentityAnonymous = "anonymous"
)

// ConnIdentity is the identity a NATS connection authenticated as: its
// user name, or IdentityAnonymous without one.
func ConnIdentity(nc *nats.Conn) string {
	if nc != nil && nc.Opts.User != "" {
		return nc.Opts.User
	}
	return IdentityAnonymous
}

// The last tokens of the device topics (MQTT topic
// iot-2/type/{typeId}/id/{deviceId}/{topic}, NATS subject with dots).
const (
	TopicReport   = "update.shadow" // device -> cloud: a firmware report
	TopicPresence = "presence"      // device -> cloud: online / offline (will)
	TopicDelta    = "shadow.delta"  // cloud -> device: desired firmware
)

// DeviceTopicSubject is the NATS subject of a device topic: the MQTT topic
// iot-2/type/{typeID}/id/{deviceID}/{topic} with "/" as ".". typeID and
// deviceID may be "*" for a pattern.
func DeviceTopicSubject(typeID, deviceID, topic string) string {
	return "iot-2.type." + typeID + ".id." + deviceID + "." + topic
}

// DeviceTopicSubjects are the patterns of the whole device topic space:
// every device's reports, presence and desired state. Nothing else is
// shared between devices and the log.
func DeviceTopicSubjects() []string {
	return []string{
		DeviceTopicSubject("*", "*", TopicReport),
		DeviceTopicSubject("*", "*", TopicPresence),
		DeviceTopicSubject("*", "*", TopicDelta),
	}
}

// CommandActor is who a rollout command is recorded as coming from: the
// sender's identity (the last token of its subject, which the server's
// permissions tie to the connection's user) and, from a front end that
// acts for its own users, the name it put in RolloutActorHeader. The
// services' identity (the HTTP API) names its token's user; the CLI names
// the local user, recorded as "cli:NAME". A request body never names the
// actor. An identity otawatch does not know is refused.
func CommandActor(identity, header string) (string, error) {
	switch identity {
	case IdentityServices, IdentityAnonymous:
		if header != "" {
			return header, nil
		}
		return identity, nil
	case IdentityCLI:
		if header != "" {
			return "cli:" + header, nil
		}
		return "cli", nil
	default:
		return "", fmt.Errorf("identity %q may not send rollout commands", identity)
	}
}
