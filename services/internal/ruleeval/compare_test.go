package ruleeval

import (
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// TestDiffAlerts pairs recorded and replayed alert events: by event id,
// then by key and state; fields that differ are named.
func TestDiffAlerts(t *testing.T) {
	raised := func(key, sev string, start time.Time, msg string) Transition {
		return Transition{At: start, Alert: events.AlertData{Key: key, RuleID: strings.Split(key, "/")[0], Severity: sev,
			State: events.AlertRaised, Message: msg, StartsAt: start}}
	}
	rec := func(tr Transition) RecordedAlert {
		return RecordedAlert{ID: tr.ID(), Subject: tr.Subject(), Time: tr.At, Alert: tr.Alert}
	}
	a := raised("device-failed/t/d1", "critical", mins(1), "d1 failed")
	b := raised("device-failed/t/d2", "critical", mins(2), "d2 failed")
	c := raised("success-rate-low/fleet", "warning", mins(3), "low")
	cLater := raised("success-rate-low/fleet", "warning", mins(5), "low")
	bOtherMsg := b
	bOtherMsg.Alert.Message = "d2 FAILED"
	tests := []struct {
		name                             string
		recorded                         []RecordedAlert
		replayed                         []Transition
		matched, missing, extra, differs int
		fields                           string
	}{
		{"same", []RecordedAlert{rec(a), rec(b)}, []Transition{a, b}, 2, 0, 0, 0, ""},
		{"other message", []RecordedAlert{rec(a), rec(b)}, []Transition{a, bOtherMsg}, 1, 0, 0, 1, `message: "d2 failed" -> "d2 FAILED"`},
		{"raised later", []RecordedAlert{rec(c)}, []Transition{cLater}, 0, 0, 0, 1, "startsAt: 2026-05-01T00:03:00Z -> 2026-05-01T00:05:00Z"},
		{"missing", []RecordedAlert{rec(a), rec(b)}, []Transition{a}, 1, 1, 0, 0, ""},
		{"extra", []RecordedAlert{rec(a)}, []Transition{a, c}, 1, 0, 1, 0, ""},
		{"none", nil, nil, 0, 0, 0, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DiffAlerts(tt.recorded, tt.replayed)
			if d.Matched != tt.matched || len(d.Missing) != tt.missing || len(d.Extra) != tt.extra || len(d.Different) != tt.differs {
				t.Fatalf("matched %d, missing %d, extra %d, different %d; want %d, %d, %d, %d",
					d.Matched, len(d.Missing), len(d.Extra), len(d.Different), tt.matched, tt.missing, tt.extra, tt.differs)
			}
			if d.Same() != (tt.missing+tt.extra+tt.differs == 0) {
				t.Errorf("Same() = %v", d.Same())
			}
			if tt.fields != "" && !strings.Contains(strings.Join(d.Different[0].Fields, "; "), tt.fields) {
				t.Errorf("fields %q, want %q among them", d.Different[0].Fields, tt.fields)
			}
		})
	}
}
