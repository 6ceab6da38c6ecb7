package app

import (
	"reflect"
	"strings"
	"testing"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
)

// TestStreamByteLimitsConfig: nats.max_bytes and nats.stream_max_bytes
// become the streams' limits; a negative, tiny or unknown one is a problem
// that names the key and the line.
func TestStreamByteLimitsConfig(t *testing.T) {
	const gib = int64(1) << 30
	tests := []struct {
		name    string
		yaml    string
		env     []string
		want    map[string]int64 // stream -> MaxBytesFor
		wantErr []string
	}{
		{name: "defaults", want: map[string]int64{events.StreamShadow: -1, events.StreamAlerts: -1,
			events.StreamRejected: events.DefaultRejectedMaxBytes}},
		{name: "max_bytes and overrides",
			yaml: "nats:\n  max_bytes: 10GiB\n  stream_max_bytes:\n    SHADOW: 50GiB\n    REJECTED: 512MiB\n",
			want: map[string]int64{events.StreamShadow: 50 * gib, events.StreamAlerts: 10 * gib, events.StreamRejected: gib / 2}},
		{name: "plain bytes and -1", yaml: "nats:\n  max_bytes: 2147483648\n  stream_max_bytes: {REJECTED: -1}\n",
			want: map[string]int64{events.StreamRollout: 2 * gib, events.StreamRejected: -1}},
		{name: "environment", env: []string{"OTAWATCH_NATS_MAX_BYTES=1GB", "OTAWATCH_NATS_STREAM_MAX_BYTES=NOTIFY=2GiB"},
			want: map[string]int64{events.StreamShadow: 1e9, events.StreamNotify: 2 * gib, events.StreamRejected: 1e9}},
		{name: "problems", yaml: "nats:\n  max_bytes: -5GiB\n  stream_max_bytes:\n    SHADDOW: 50GiB\n    ALERTS: 4096\n    NOTIFY: -2\n",
			wantErr: []string{
				"x.yaml:2: nats.max_bytes: -5368709120 must not be negative",
				`x.yaml:4: nats.stream_max_bytes.SHADDOW: "SHADDOW" is not a stream (one of SHADOW, ROLLOUT, ALERTS, NOTIFY, REJECTED, AUDIT)`,
				"x.yaml:5: nats.stream_max_bytes.ALERTS: 4096 bytes is below the minimum of 1MiB",
				"x.yaml:6: nats.stream_max_bytes.NOTIFY: -2 must not be negative",
			}},
		{name: "not a size", yaml: "nats:\n  max_bytes: 10 gigs\n", wantErr: []string{`x.yaml:2: nats.max_bytes: "10 gigs" is not a size`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			err := conf.Decode("x.yaml", []byte(tc.yaml), tc.env, &c)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			o := c.NATS.StreamOptions()
			got := map[string]int64{}
			for name := range tc.want {
				got[name] = o.MaxBytesFor(name)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("limits %v, want %v", got, tc.want)
			}
		})
	}
}
