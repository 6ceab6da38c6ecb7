package events

import (
	"strings"
	"testing"
	"time"
)

func TestValidateID(t *testing.T) {
	tests := []struct {
		name, id string
		wantErr  string
	}{
		{"plain", "dev-0001_a", ""},
		{"max length", strings.Repeat("a", MaxIDLen), ""},
		{"empty", "", "is empty"},
		{"too long", strings.Repeat("a", MaxIDLen+1), "limit is 64"},
		{"dot", "a.b", `'.'`},
		{"star", "a*", `'*'`},
		{"gt", ">", `'>'`},
		{"space", "a b", `"a b" has a space at byte 1;`},
		{"slash", "a/b", `'/'`},
		{"plus", "a+b", `'+'`},
		{"hash", "#", `'#'`},
		{"non-ascii", "défaut", "allowed are"},
		// The character, not its first byte ('Ã'), and its code point.
		{"accent", "dév", `device id "dév" has 'é' (U+00E9) at byte 1; allowed are A-Z a-z 0-9 _ -`},
		{"cjk", "日本", `has '日' (U+65E5) at byte 0;`},
		{"emoji", "ok\U0001F600", `has '😀' (U+1F600) at byte 2;`},
		{"tab", "a\tb", `"a\tb" has a control character (U+0009) at byte 1;`},
		{"nul", "a\x00", `has a control character (U+0000) at byte 1;`},
		{"no-break space", "a\u00a0b", `has a white-space character (U+00A0) at byte 1;`},
		{"zero-width space", "a\u200bb", `has an invisible character (U+200B) at byte 1;`},
		{"invalid utf-8", "d\xc3", `device id "d\xc3" is not valid UTF-8 (byte 0xC3 at byte 1); allowed are`},
		{"lone continuation byte", "\x80x", `is not valid UTF-8 (byte 0x80 at byte 0);`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateID("device id", tt.id)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ValidateID(%q) = %v, want nil", tt.id, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ValidateID(%q) = %v, want error containing %q", tt.id, err, tt.wantErr)
			}
		})
	}
}

func TestParseReportTopic(t *testing.T) {
	tests := []struct {
		topic, typ, dev string
		ok              bool
	}{
		{"iot-2/type/gw/id/d1/update/shadow", "gw", "d1", true},
		{"iot-2/type/gw/id/d.1/update/shadow", "", "", false},
		{"iot-2/type/gw/id//update/shadow", "", "", false},
		{"iot-2/type/gw/id/d1/update/other", "", "", false},
		{"iot-2/type/gw/id/d1/update/shadow/x", "", "", false},
		{"iot-3/type/gw/id/d1/update/shadow", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			typ, dev, err := ParseReportTopic(tt.topic)
			if (err == nil) != tt.ok || typ != tt.typ || dev != tt.dev {
				t.Fatalf("ParseReportTopic(%q) = %q, %q, %v; want %q, %q, ok=%v", tt.topic, typ, dev, err, tt.typ, tt.dev, tt.ok)
			}
			if tt.ok {
				if got := ShadowReportedSubject(typ, dev); got != "shadow.reported.gw.d1" {
					t.Fatalf("subject = %q", got)
				}
			}
		})
	}
}

func TestDecodeRefusesIncompleteEnvelopes(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"not json", `{`, "invalid event"},
		{"wrong spec", `{"specversion":"0.3","id":"x","source":"s","type":"t","time":"2025-01-01T00:00:00Z"}`, "specversion"},
		{"missing id and type", `{"specversion":"1.0","source":"s","time":"2025-01-01T00:00:00Z"}`, "missing id, type"},
		{"missing time", `{"specversion":"1.0","id":"x","source":"s","type":"t"}`, "missing time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestReportEventIDIsTheReportsIdentity(t *testing.T) {
	at := time.Date(2025, 7, 22, 11, 30, 0, 0, time.UTC)
	base := Firmware{Version: "4.2.1", Status: StatusCompleted, Timestamp: at, UpdateDuration: 127}
	same := base
	same.UpdateDuration = 128 // not part of the identity: a retry may differ in detail
	if ReportEventID("t", "d", base) != ReportEventID("t", "d", same) {
		t.Error("a retried report got a different id")
	}
	for name, f := range map[string]Firmware{
		"status":  {Version: "4.2.1", Status: StatusFailed, Timestamp: at},
		"version": {Version: "4.2.2", Status: StatusCompleted, Timestamp: at},
		"time":    {Version: "4.2.1", Status: StatusCompleted, Timestamp: at.Add(time.Second)},
	} {
		if ReportEventID("t", "d", base) == ReportEventID("t", "d", f) {
			t.Errorf("reports differing in %s share an id", name)
		}
	}
	if ReportEventID("t", "d", base) == ReportEventID("t", "e", base) {
		t.Error("two devices share an id")
	}
}
