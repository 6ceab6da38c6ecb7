package conf

import (
	"net/url"
	"strings"
)

// mqttSchemes are the broker URL schemes paho connects with.
var mqttSchemes = map[string]bool{"tcp": true, "mqtt": true, "ssl": true, "tls": true, "mqtts": true, "ws": true, "wss": true}

// CheckMQTTBroker adds a problem under key unless broker is an MQTT broker
// URL paho can connect to (tcp://host:port, ssl://, ws://, ...).
func CheckMQTTBroker(p Problems, key, broker string) {
	u, err := url.Parse(broker)
	switch {
	case err != nil:
		p.Addf(key, "%v", err)
	case !mqttSchemes[u.Scheme] || u.Host == "":
		p.Addf(key, "%q is not an MQTT broker URL (tcp://host:port, ssl://, ws://)", broker)
	}
}

// CheckMQTTClientID adds a problem under key when id holds a character an
// MQTT client id must not: the wildcards + and #, the level separator /, or
// a space.
func CheckMQTTClientID(p Problems, key, id string) {
	if strings.ContainsAny(id, "+#/ ") {
		p.Addf(key, "%q has one of + # / or a space", id)
	}
}

// CheckMQTTTLS adds a problem under key (the section's "tls") when TLS
// files are set for a broker URL that is not TLS (ssl://, tls://, mqtts://,
// wss://). The files themselves are checked by TLSClient.Validate, which
// the config walk calls.
func CheckMQTTTLS(p Problems, key, broker string, t TLSClient) {
	if t == (TLSClient{}) {
		return
	}
	if u, err := url.Parse(broker); err == nil && !tlsSchemes[u.Scheme] {
		p.Addf(key, "is set but broker %q is not a TLS URL (ssl://, tls://, mqtts://, wss://)", broker)
	}
}

var tlsSchemes = map[string]bool{"ssl": true, "tls": true, "mqtts": true, "wss": true}
