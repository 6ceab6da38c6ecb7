package app

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/otawatch/otawatch/services/internal/testutil"
)

// oneProcess is the environment of an "otawatch run" with the embedded
// server and its MQTT listener on free loopback ports, its bridge reading
// that listener, its probes on httpPort, and no projector.
type oneProcess struct {
	env                          []string
	natsPort, mqttPort, httpPort int
}

func newOneProcess(t *testing.T, dataDir string, extra ...string) oneProcess {
	t.Helper()
	o := oneProcess{natsPort: testutil.FreePort(t), mqttPort: testutil.FreePort(t), httpPort: testutil.FreePort(t)}
	o.env = append([]string{
		"OTAWATCH_DATA_DIR=" + dataDir,
		fmt.Sprintf("OTAWATCH_NATS_LISTEN=127.0.0.1:%d", o.natsPort),
		fmt.Sprintf("OTAWATCH_NATS_MQTT_LISTEN=127.0.0.1:%d", o.mqttPort),
		fmt.Sprintf("OTAWATCH_MQTT_BROKER=tcp://127.0.0.1:%d", o.mqttPort),
		fmt.Sprintf("OTAWATCH_HTTP_LISTEN=127.0.0.1:%d", o.httpPort),
		"OTAWATCH_CLICKHOUSE_ADDR=",
	}, extra...)
	return o
}

// readyz reports whether the process probed on port answers /readyz with
// 200.
func readyz(port int) func() bool {
	return func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}
