package bridge

import (
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// benchMessage is an MQTT message as paho hands it to the bridge.
type benchMessage struct {
	mqtt.Message // nil: only the methods below are called
	topic        string
	payload      []byte
}

func (m *benchMessage) Topic() string   { return m.topic }
func (m *benchMessage) Payload() []byte { return m.payload }

// BenchmarkPrepare is the bridge's own work per report between paho and
// the JetStream publish: check and decode the report, derive its id and
// subject, encode its event (Service.prepare). It is the part of
// BenchmarkIngest's CPU per message that is the bridge's code rather than
// paho's, nats.go's or the server's, measured without their noise.
func BenchmarkPrepare(b *testing.B) {
	js := testutil.StartJetStream(b, testutil.JetStreamOptions{})
	s, err := New(Config{}, svc.Deps{NC: js.NC})
	if err != nil {
		b.Fatal(err)
	}
	_, r := report(5)
	m := &benchMessage{topic: r.topic, payload: r.payload}
	b.ReportAllocs()
	for b.Loop() {
		p, err := s.prepare(m)
		if err != nil || p.reason != "" {
			b.Fatalf("prepare: %v %q", err, p.reason)
		}
	}
}
