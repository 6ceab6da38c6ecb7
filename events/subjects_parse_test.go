package events

import "testing"

func TestParseSubjects(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		want    string // the parts joined by "|", "" when refused
	}{
		{"reported", "shadow.reported.gw.dev-1", "shadow.reported|gw|dev-1"},
		{"desired", "shadow.desired.gw.dev-1", "shadow.desired|gw|dev-1"},
		{"presence", "device.presence.gw.dev-1", "device.presence|gw|dev-1"},
		{"shadow too short", "shadow.reported.gw", ""},
		{"shadow too long", "shadow.reported.gw.a.b", ""},
		{"shadow empty token", "shadow.reported..dev", ""},
		{"rollout", "rollout.job-1.wave_started", "job-1|wave_started"},
		{"rollout too long", "rollout.job.a.b", ""},
		{"alert", "alert.raised.critical.device-failed", "raised|critical|device-failed"},
		{"alert too short", "alert.raised.critical", ""},
		{"notify", "notify.slack.sent", "slack|sent"},
		{"foreign", "otawatch.rollout.cmd.x.y", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseAny(tt.subject); got != tt.want {
				t.Errorf("parse %q = %q, want %q", tt.subject, got, tt.want)
			}
		})
	}
}

// parseAny runs the parser of the subject's family and joins its parts.
func parseAny(subject string) string {
	if s, ok := ParseShadowSubject(subject); ok {
		return s.Kind + "|" + s.TypeID + "|" + s.DeviceID
	}
	if j, e, ok := ParseRolloutSubject(subject); ok {
		return j + "|" + e
	}
	if a, ok := ParseAlertSubject(subject); ok {
		return a.State + "|" + a.Severity + "|" + a.RuleID
	}
	if r, o, ok := ParseNotifySubject(subject); ok {
		return r + "|" + o
	}
	return ""
}

// FuzzSubjects: for ids that pass ValidateID, parsing what the builders
// make gives the ids back (parse(build(x)) == x), and a parser never
// accepts a subject whose tokens would not rebuild it.
func FuzzSubjects(f *testing.F) {
	f.Add("gw", "dev-1", "job-1", "wave_started")
	f.Add("a", "b", "c", "d")
	f.Add("x.y", "*", ">", "")
	f.Fuzz(func(t *testing.T, a, b, c, d string) {
		valid := ValidateID("a", a) == nil && ValidateID("b", b) == nil && ValidateID("c", c) == nil && ValidateID("d", d) == nil
		for _, build := range []func(string, string) string{ShadowReportedSubject, ShadowDesiredSubject, DevicePresenceSubject} {
			s, ok := ParseShadowSubject(build(a, b))
			if valid && (!ok || s.TypeID != a || s.DeviceID != b) {
				t.Fatalf("shadow %q: %+v %v", build(a, b), s, ok)
			}
			if ok && (s.Kind+"."+s.TypeID+"."+s.DeviceID) != build(a, b) && valid {
				t.Fatalf("shadow %q does not rebuild: %+v", build(a, b), s)
			}
		}
		if j, e, ok := ParseRolloutSubject(RolloutSubject(a, b)); valid && (!ok || j != a || e != b) {
			t.Fatalf("rollout: %q %q %v", j, e, ok)
		} else if ok && RolloutSubject(j, e) != RolloutSubject(a, b) {
			t.Fatalf("rollout %q does not rebuild", RolloutSubject(a, b))
		}
		if p, ok := ParseAlertSubject(AlertSubject(a, b, c)); valid && (!ok || p != (AlertSubjectParts{a, b, c})) {
			t.Fatalf("alert: %+v %v", p, ok)
		} else if ok && AlertSubject(p.State, p.Severity, p.RuleID) != AlertSubject(a, b, c) {
			t.Fatalf("alert %q does not rebuild", AlertSubject(a, b, c))
		}
		if r, o, ok := ParseNotifySubject(NotifySubject(c, d)); valid && (!ok || r != c || o != d) {
			t.Fatalf("notify: %q %q %v", r, o, ok)
		} else if ok && NotifySubject(r, o) != NotifySubject(c, d) {
			t.Fatalf("notify %q does not rebuild", NotifySubject(c, d))
		}
	})
}
