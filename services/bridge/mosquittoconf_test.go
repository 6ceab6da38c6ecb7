package bridge

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/otawatch/otawatch/services/internal/testutil"
)

// confValues reads "key value" lines of a Mosquitto configuration.
func confValues(text string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		out[k] = strings.TrimSpace(v)
	}
	return out
}

// TestShippedMosquittoLimits: the broker configuration the project ships
// sets the limits explicitly, the tests run Mosquitto with the same ones,
// and the broker's in-flight window fits the bridge's default.
func TestShippedMosquittoLimits(t *testing.T) {
	b, err := os.ReadFile("../../deploy/mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	shipped, tested := confValues(string(b)), confValues(testutil.MosquittoConfig)
	for _, key := range []string{"persistence", "max_inflight_messages", "max_queued_messages", "max_queued_bytes",
		"max_packet_size", "message_size_limit", "autosave_interval"} {
		if shipped[key] == "" {
			t.Errorf("deploy/mosquitto/mosquitto.conf does not set %s", key)
		}
		if shipped[key] != tested[key] {
			t.Errorf("%s: deploy/mosquitto has %q, testutil.MosquittoConfig %q", key, shipped[key], tested[key])
		}
	}
	if shipped["persistence"] != "true" {
		t.Errorf("persistence is %q: the bridge's session would not survive a broker restart", shipped["persistence"])
	}
	if n, err := strconv.Atoi(shipped["max_inflight_messages"]); err != nil || n < 1 || n > DefaultMaxInFlight {
		t.Errorf("max_inflight_messages %q: keep it between 1 and the bridge's max_in_flight default %d",
			shipped["max_inflight_messages"], DefaultMaxInFlight)
	}
}
