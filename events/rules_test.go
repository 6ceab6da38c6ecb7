package events_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

func rulesLoadedEvent(t testing.TB, d events.RulesLoadedData) events.Event {
	t.Helper()
	at := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	ev, err := events.New(events.RulesLoadedEventID(d.SHA256, d.ShadowSeq, d.RolloutSeq, at), events.SourceAlerting,
		events.TypeRulesLoaded, d.Dir, at, d)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestRulesLoaded(t *testing.T) {
	files := []events.RuleFile{{Name: "b.yaml", Text: "id: b\n"}, {Name: "a.yaml", Text: "id: a\n"}}
	hash := events.RulesHash(files)
	if hash != events.RulesHash([]events.RuleFile{files[1], files[0]}) {
		t.Error("RulesHash depends on the order of the files")
	}
	for _, other := range [][]events.RuleFile{
		{{Name: "b.yaml", Text: "id: b\n"}, {Name: "a.yaml", Text: "id: A\n"}},
		{{Name: "b.yaml", Text: "id: b\n"}, {Name: "c.yaml", Text: "id: a\n"}},
		{{Name: "b.yaml", Text: "id: b\n"}},
		{{Name: "b.yaml", Text: "id: b\n"}, {Name: "a.yaml\x00", Text: "id: a\n"}},
	} {
		if events.RulesHash(other) == hash {
			t.Errorf("RulesHash(%q) = RulesHash(%q)", other, files)
		}
	}
	if events.SubjectRulesLoaded != "alert.rules.loaded" {
		t.Errorf("SubjectRulesLoaded = %q", events.SubjectRulesLoaded)
	}
	if _, ok := events.ParseAlertSubject(events.SubjectRulesLoaded); ok {
		t.Error("ParseAlertSubject takes the rules_loaded subject for an alert's")
	}

	good := events.RulesLoadedData{Dir: "/etc/otawatch/rules", SHA256: hash, Rules: []string{"a", "b"}, Files: files,
		ShadowSeq: 7, RolloutSeq: 2, Reason: events.RulesLoadedReload}
	tests := []struct {
		name    string
		ev      func() events.Event
		wantErr string
	}{
		{"good", func() events.Event { return rulesLoadedEvent(t, good) }, ""},
		{"text changed", func() events.Event {
			d := good
			d.Files = []events.RuleFile{files[0], {Name: "a.yaml", Text: "id: a\nseverity: info\n"}}
			return rulesLoadedEvent(t, d)
		}, "its files hash to"},
		{"file missing", func() events.Event {
			d := good
			d.Files = files[:1]
			return rulesLoadedEvent(t, d)
		}, "its files hash to"},
		{"file twice", func() events.Event {
			d := good
			d.Files = []events.RuleFile{files[0], files[0]}
			d.SHA256 = events.RulesHash(d.Files)
			return rulesLoadedEvent(t, d)
		}, `file "b.yaml" appears twice`},
		{"file without a name", func() events.Event {
			d := good
			d.Files = []events.RuleFile{{Text: "id: x\n"}}
			d.SHA256 = events.RulesHash(d.Files)
			return rulesLoadedEvent(t, d)
		}, "file 1 has no name"},
		{"other type", func() events.Event {
			ev := rulesLoadedEvent(t, good)
			ev.Type = events.TypeAlertRaised
			return ev
		}, "not a rules_loaded event"},
		{"not json", func() events.Event {
			ev := rulesLoadedEvent(t, good)
			ev.Data = []byte(`{"files":7}`)
			return ev
		}, "decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := tt.ev()
			// Through the wire format, as a reader of ALERTS gets it.
			b, err := ev.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if ev, err = events.Decode(b); err != nil {
				t.Fatal(err)
			}
			got, err := events.DecodeRulesLoaded(ev)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("DecodeRulesLoaded: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("DecodeRulesLoaded error %v, want one with %q", err, tt.wantErr)
			case tt.wantErr == "":
				if got.SHA256 != hash || got.Dir != good.Dir || len(got.Files) != 2 || got.Files[1].Text != "id: a\n" ||
					got.ShadowSeq != 7 || got.RolloutSeq != 2 || got.Reason != events.RulesLoadedReload {
					t.Errorf("DecodeRulesLoaded = %+v, want %+v", got, good)
				}
			}
		})
	}
	ev := rulesLoadedEvent(t, good)
	ev.Type = "io.otawatch.alert.raised.v1"
	if _, err := events.DecodeRulesLoaded(ev); !errors.Is(err, events.ErrNotRulesLoaded) {
		t.Errorf("another type: %v, want ErrNotRulesLoaded", err)
	}
	at := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	if events.RulesLoadedEventID(hash, 7, 2, at) == events.RulesLoadedEventID(hash, 7, 2, at.Add(time.Second)) {
		t.Error("a set that comes back later has the same event id")
	}
}

// FuzzDecodeRulesLoaded: any data decodes or is refused, never panics, and
// what decodes hashes to what it says.
func FuzzDecodeRulesLoaded(f *testing.F) {
	files := []events.RuleFile{{Name: "a.yaml", Text: "id: a\n"}}
	f.Add([]byte(`{"dir":"rules","sha256":"` + events.RulesHash(files) + `","files":[{"name":"a.yaml","text":"id: a\n"}]}`))
	f.Add([]byte(`{"files":[{"name":"","text":""}]}`))
	f.Add([]byte(`{"files":null,"sha256":"` + events.RulesHash(nil) + `"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev := events.Event{SpecVersion: events.SpecVersion, ID: "x", Source: events.SourceAlerting,
			Type: events.TypeRulesLoaded, Time: time.Unix(1, 0), Data: data}
		d, err := events.DecodeRulesLoaded(ev)
		if err == nil && events.RulesHash(d.Files) != d.SHA256 {
			t.Fatalf("decoded %+v, whose hash is not its SHA256", d)
		}
	})
}
