package schemas_test

import (
	"bytes"
	"testing"

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
