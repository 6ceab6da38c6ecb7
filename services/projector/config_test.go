package projector

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/svc"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestNewValidates: New applies the defaults and returns a *conf.Error that
// lists every problem of the section at once, each under its key.
func TestNewValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // "key: reason" prefixes, every one; nil: valid
	}{
		{"defaults are enough with an address", Config{Addr: "127.0.0.1:9000"}, nil},
		{"no address", Config{}, []string{"clickhouse.addr: is required"}},
		{"every problem at once", Config{Addr: "nohostport", Database: "a b", BatchSize: -1, BatchTimeout: -time.Second, AckWait: time.Millisecond},
			[]string{"clickhouse.addr: \"nohostport\" is not host:port", "clickhouse.database:", "clickhouse.batch_size: -1 is out of range",
				"clickhouse.batch_timeout: must be positive", "clickhouse.ack_wait: 1ms is shorter than 1s"}},
	}
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{}).JS
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, svc.Deps{JS: js})
			if tt.want == nil {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			var ce *conf.Error
			if !errors.As(err, &ce) {
				t.Fatalf("New returned %v (%T), want a *conf.Error", err, err)
			}
			var got []string
			for _, p := range ce.Problems {
				got = append(got, p.Key+": "+p.Reason)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("problems:\n %s\nwant %d:\n %s", strings.Join(got, "\n "), len(tt.want), strings.Join(tt.want, "\n "))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("problem %d = %q, want %q...", i, got[i], tt.want[i])
				}
			}
		})
	}
}
