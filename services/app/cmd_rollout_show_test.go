package app

import (
	"bytes"
	"strings"
	"testing"

	"github.com/otawatch/otawatch/events"
)

func TestPrintRolloutJobRetracted(t *testing.T) {
	tests := []struct {
		name string
		job  events.RolloutJob
		want string // a line of the output; empty: no retracted line
	}{
		{"running job", events.RolloutJob{ID: "j", Status: events.RolloutRunning}, ""},
		{"aborted, all cleared", events.RolloutJob{ID: "j", Status: events.RolloutAborted, Retracted: 12},
			"  retracted: 12 delta(s) cleared from the broker"},
		{"aborted, some pending", events.RolloutJob{ID: "j", Status: events.RolloutAborted, Retracted: 12, RetractPending: 3},
			"  retracted: 12 delta(s) cleared from the broker, 3 pending"},
		{"aborted before anything was sent", events.RolloutJob{ID: "j", Status: events.RolloutAborted},
			"  retracted: 0 delta(s) cleared from the broker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			printRolloutJob(&b, &tt.job)
			var got string
			for _, l := range strings.Split(b.String(), "\n") {
				if strings.HasPrefix(l, "  retracted:") {
					got = l
				}
			}
			if got != tt.want {
				t.Errorf("retracted line %q, want %q\n%s", got, tt.want, b.String())
			}
		})
	}
}
