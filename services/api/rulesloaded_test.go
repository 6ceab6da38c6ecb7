package api

import (
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// TestAlertFoldSkipsRulesLoaded: the alerting service's rules_loaded
// record on ALERTS is not an alert; the fold takes it without an error
// (which would send it to REJECTED) and without an active alert.
func TestAlertFoldSkipsRulesLoaded(t *testing.T) {
	files := []events.RuleFile{{Name: "a.yaml", Text: "id: a\n"}}
	d := events.RulesLoadedData{Dir: events.RulesBuiltIn, SHA256: events.RulesHash(files), Files: files, Rules: []string{"a"}}
	at := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	ev, err := events.New(events.RulesLoadedEventID(d.SHA256, 0, 0, at), events.SourceAlerting, events.TypeRulesLoaded, d.Dir, at, d)
	if err != nil {
		t.Fatal(err)
	}
	m := newModel()
	if err := m.applyAlert(1, events.SubjectRulesLoaded, ev); err != nil {
		t.Fatalf("applyAlert(rules_loaded) = %v, want nil", err)
	}
	if n := len(m.activeAlerts()); n != 0 {
		t.Errorf("%d active alerts after a rules_loaded event, want 0", n)
	}
}
