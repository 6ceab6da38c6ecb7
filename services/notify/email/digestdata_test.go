package email

import (
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

func TestNewDigestData(t *testing.T) {
	raised := alert("version-mismatch", "info", events.AlertRaised, "d1", "j1", 1, t0)
	resolved := raised
	resolved.State = events.AlertResolved
	later := alert("version-mismatch", "info", events.AlertRaised, "d1", "j1", 1, t0.Add(time.Hour)) // raised again: another alert
	other := alert("stale-shadow", "warning", events.AlertRaised, "d2", "j1", 1, t0)
	tests := []struct {
		name                          string
		in                            []events.AlertData
		total, firing, resolved, devs int
		groups                        []string // rule/job:alerts
		states                        []string // of the first group's alerts
	}{
		{name: "resolved wins over raised, whatever the order", in: []events.AlertData{resolved, raised, raised},
			total: 1, resolved: 1, devs: 1, groups: []string{"version-mismatch/j1:1"}, states: []string{"resolved"}},
		{name: "raised then resolved", in: []events.AlertData{raised, resolved},
			total: 1, resolved: 1, devs: 1, groups: []string{"version-mismatch/j1:1"}, states: []string{"resolved"}},
		{name: "a new start is a new alert", in: []events.AlertData{raised, resolved, later},
			total: 2, firing: 1, resolved: 1, devs: 1, groups: []string{"version-mismatch/j1:2"}, states: []string{"resolved", "raised"}},
		{name: "grouped by rule then job", in: []events.AlertData{raised, other},
			total: 2, firing: 2, devs: 2, groups: []string{"stale-shadow/j1:1", "version-mismatch/j1:1"}, states: []string{"raised"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDigestData("daily", t0, t0.Add(24*time.Hour), tt.in)
			var groups, states []string
			for _, g := range d.Groups {
				groups = append(groups, g.Rule+"/"+g.Job+":"+strconv.Itoa(len(g.Alerts)))
			}
			for _, a := range d.Groups[0].Alerts {
				states = append(states, a.State)
			}
			if d.Total != tt.total || d.Firing != tt.firing || d.Resolved != tt.resolved || d.Devices != tt.devs ||
				!reflect.DeepEqual(groups, tt.groups) || !reflect.DeepEqual(states, tt.states) {
				t.Errorf("got total %d firing %d resolved %d devices %d groups %v states %v\nwant total %d firing %d resolved %d devices %d groups %v states %v",
					d.Total, d.Firing, d.Resolved, d.Devices, groups, states,
					tt.total, tt.firing, tt.resolved, tt.devs, tt.groups, tt.states)
			}
		})
	}
}
