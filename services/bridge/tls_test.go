package bridge

import (
	"testing"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestBrokerOverTLS: the bridge reaches an ssl:// broker trusting the CA
// of mqtt.tls.ca_file and stores what a device sends there; without the CA
// it does not connect.
func TestBrokerOverTLS(t *testing.T) {
	ca := testutil.NewTestCA(t)
	certFile, keyFile := ca.Server("broker")
	serverTLS, err := conf.TLSServer{CertFile: certFile, KeyFile: keyFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{MQTT: true, MQTTTLS: serverTLS})
	e := &env{js: js, mqttURL: "ssl://" + js.Server.MQTTAddr()}

	untrusted := e.launchBridge(t, Config{ClientID: "bridge-untrusted"}, hooks{})
	r := e.startBridge(t, Config{TLS: conf.TLSClient{CAFile: ca.CAFile}}, hooks{})
	if untrusted.ready() {
		t.Error("a bridge that does not trust the broker's CA connected")
	}

	devTLS, err := conf.TLSClient{CAFile: ca.CAFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	dev := e.tlsPublisher(t, "dev-tls", devTLS)
	_, m := report(1)
	publishAll(t, dev, []msg{m})
	r.settle(t, 1)
	if n := js.Count(t, events.StreamShadow); n != 1 {
		t.Errorf("SHADOW holds %d events, want 1", n)
	}
}
