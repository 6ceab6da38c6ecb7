package schemas_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/otawatch/otawatch/schemas"
)

// TestShadowReportSchema: the embedded schema compiles as draft 2020-12
// under its $id, takes the seed system's example report and refuses an
// unknown status.
func TestShadowReportSchema(t *testing.T) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemas.ShadowReport))
	if err != nil {
		t.Fatal(err)
	}
	if got := doc.(map[string]any)["$schema"]; got != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema is %v", got)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(schemas.ShadowReportID, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(schemas.ShadowReportID)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		json  string
		valid bool
	}{
		{"seed example", `{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"2025-07-22T11:30:00Z","status":"completed","checksum":"sha256:abc123def456...","previousVersion":"4.1.5","updateDuration":127,"errorCode":null}}}}`, true},
		{"failed with code", `{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"2025-07-22T11:30:00Z","status":"failed","errorCode":"E1"}}}}`, true},
		{"unknown status", `{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"2025-07-22T11:30:00Z","status":"done"}}}}`, false},
		{"negative duration", `{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":-1}}}}`, false},
		{"duration of 7 days", `{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":604800}}}}`, true},
		{"duration over 7 days", `{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":604800.5}}}}`, false},
		{"duration beyond float64", `{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"2025-07-22T11:30:00Z","status":"completed","updateDuration":1e999}}}}`, false},
		{"timestamp not a date-time", `{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"today","status":"completed"}}}}`, false},
		{"error code a number", `{"state":{"reported":{"firmware":{"version":"4.2.1","timestamp":"2025-07-22T11:30:00Z","status":"failed","errorCode":3}}}}`, false},
		{"no firmware", `{"state":{"reported":{}}}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inst, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(tc.json)))
			if err != nil {
				t.Fatal(err)
			}
			err = sch.Validate(inst)
			if (err == nil) != tc.valid {
				t.Errorf("valid = %v, want %v (%v)", err == nil, tc.valid, err)
			}
		})
	}
}

// TestReportLimitsMatchSchema: the Go limits are the ones the schema file
// states, and the window's Unix seconds are its strings.
func TestReportLimitsMatchSchema(t *testing.T) {
	var doc struct {
		Defs struct {
			Firmware struct {
				Properties struct {
					UpdateDuration struct {
						Maximum float64 `json:"maximum"`
					} `json:"updateDuration"`
				} `json:"properties"`
			} `json:"firmware"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(schemas.ShadowReport, &doc); err != nil {
		t.Fatal(err)
	}
	if got := doc.Defs.Firmware.Properties.UpdateDuration.Maximum; got != schemas.MaxUpdateDuration {
		t.Errorf("schema's updateDuration maximum is %v, MaxUpdateDuration %v", got, schemas.MaxUpdateDuration)
	}
	from, err := time.Parse(time.RFC3339, schemas.ReportTimeFrom)
	if err != nil {
		t.Fatal(err)
	}
	until, err := time.Parse(time.RFC3339, schemas.ReportTimeUntil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		at   time.Time
		ok   bool
	}{
		{"first instant", from, true},
		{"a nanosecond before", from.Add(-time.Nanosecond), false},
		{"last instant", until.Add(-time.Nanosecond), true},
		{"the end", until, false},
		{"unix zero", time.Unix(0, 0), false},
		{"1969", time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC), false},
		{"year 9999", time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), false},
		{"zero time", time.Time{}, false},
		{"2025", time.Date(2025, 7, 22, 11, 30, 0, 0, time.UTC), true},
		{"2099 in UTC, 2100 in its zone", time.Date(2100, 1, 1, 0, 30, 0, 0, time.FixedZone("+01:00", 3600)), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := schemas.ReportTimeOK(tc.at); got != tc.ok {
				t.Errorf("ReportTimeOK(%s) = %v, want %v", tc.at.Format(time.RFC3339Nano), got, tc.ok)
			}
		})
	}
}
