package notify

import (
	"slices"
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/internal/conf"
)

// The routing tree as Alertmanager walks it: first matching child,
// continue, inheritance of receiver and timings.
func TestRouteMatch(t *testing.T) {
	cfg := Config[*testReceiver]{
		Receivers: []*testReceiver{{Name: "default"}, {Name: "pd"}, {Name: "slack"}, {Name: "gw-team"}},
		Route: &Route{Receiver: "default", GroupBy: []string{"rule"}, Routes: []*Route{
			{Receiver: "pd", Matchers: []string{`severity="critical"`}, Continue: true, GroupWait: dur(time.Second)},
			{Matchers: []string{`device_type="gw"`}, Receiver: "gw-team", GroupBy: []string{"..."}, Routes: []*Route{
				{Matchers: []string{`rule="stale-shadow"`}, RepeatInterval: dur(time.Hour)},
			}},
			{Receiver: "slack", Matchers: []string{`severity=~"critical|warning"`}},
		}},
	}
	cfg.SetDefaults()
	p := conf.NewProblems()
	cfg.Validate(p)
	if len(p.List()) > 0 {
		t.Fatalf("config problems: %v", p.List())
	}
	root, err := compileRoute(cfg.Route, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		labels    map[string]string
		receivers []string
	}{
		{"critical continues to slack", map[string]string{"severity": "critical", "rule": "device-failed"}, []string{"pd", "slack"}},
		{"critical gw continues to the gw team and stops", map[string]string{"severity": "critical", "device_type": "gw"}, []string{"pd", "gw-team"}},
		{"warning", map[string]string{"severity": "warning"}, []string{"slack"}},
		{"info falls back to the root", map[string]string{"severity": "info"}, []string{"default"}},
		{"nested inherits the receiver", map[string]string{"severity": "warning", "device_type": "gw", "rule": "stale-shadow"}, []string{"gw-team"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, r := range root.match(tt.labels) {
				got = append(got, r.receiver)
			}
			if !slices.Equal(got, tt.receivers) {
				t.Fatalf("receivers %v, want %v", got, tt.receivers)
			}
		})
	}
	pd := root.children[0]
	if pd.groupWait != time.Second || pd.groupInterval != DefaultGroupInterval || !slices.Equal(pd.groupBy, []string{"rule"}) {
		t.Fatalf("pd route: wait %s interval %s group_by %v, want 1s, the default, inherited [rule]", pd.groupWait, pd.groupInterval, pd.groupBy)
	}
	nested := root.children[1].children[0]
	if !nested.groupAll || nested.repeatInterval != time.Hour || nested.groupWait != DefaultGroupWait {
		t.Fatalf("nested route: all %v repeat %s wait %s", nested.groupAll, nested.repeatInterval, nested.groupWait)
	}
	gl := nested.groupLabels(map[string]string{"rule": "stale-shadow", "device": "d1"})
	if k := nested.groupKey(gl); k != `{}/{device_type="gw"}/{rule="stale-shadow"}:{device="d1",rule="stale-shadow"}` {
		t.Fatalf("group key %s", k)
	}
}

type kindReceiver struct {
	testReceiver
	kind string
}

func (r *kindReceiver) ReceiverKind() string { return r.kind }

// Without a route the seed's: critical -> the pagerduty receiver, warning
// -> slack, info -> email once a day; nothing routes without receivers.
func TestDefaultRoute(t *testing.T) {
	cfg := Config[*kindReceiver]{Receivers: []*kindReceiver{
		{testReceiver{Name: "hooks"}, KindWebhook}, {testReceiver{Name: "mail"}, KindEmail},
		{testReceiver{Name: "chat"}, KindSlack}, {testReceiver{Name: "pager"}, KindPagerDuty},
	}}
	cfg.SetDefaults()
	root, err := compileRoute(cfg.Route, nil)
	if err != nil {
		t.Fatal(err)
	}
	for sev, want := range map[string]string{"critical": "pager", "warning": "chat", "info": "mail", "other": ""} {
		got := root.match(map[string]string{"severity": sev})
		if len(got) != 1 || got[0].receiver != want {
			t.Errorf("severity %s: routes %v, want receiver %q", sev, got, want)
		}
	}
	if info := root.match(map[string]string{"severity": "info"})[0]; !info.digest || info.digestHour != 8 {
		t.Errorf("the info route is not the 08:00 digest: %+v", info)
	}

	none := Config[*kindReceiver]{}
	none.SetDefaults()
	if len(none.Route.Routes) != 0 || none.Route.Receiver != "" {
		t.Fatalf("without receivers the route is %+v, want an empty root", none.Route)
	}
}

func TestNextDigest(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	r := &route{digest: true, digestHour: 8, loc: berlin}
	tests := []struct {
		name string
		now  time.Time
		want time.Time
	}{
		{"before today's", time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC), time.Date(2026, 11, 30, 8, 0, 0, 0, berlin)},
		{"after today's", time.Date(2026, 11, 30, 7, 30, 0, 0, time.UTC), time.Date(2026, 12, 1, 8, 0, 0, 0, berlin)},
		{"exactly at it", time.Date(2026, 11, 30, 8, 0, 0, 0, berlin), time.Date(2026, 12, 1, 8, 0, 0, 0, berlin)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.nextDigest(tt.now); !got.Equal(tt.want) {
				t.Fatalf("nextDigest(%s) = %s, want %s", tt.now, got, tt.want)
			}
		})
	}
}
