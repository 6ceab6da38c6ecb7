package schemas

import _ "embed"

// ShadowReportID is the $id of the shadow report schema; a JSON Schema
// compiler should register ShadowReport under this URL.
const ShadowReportID = "https://otawatch.io/schemas/shadow-report.schema.json"

// ShadowReport is the JSON Schema (draft 2020-12) of a device's shadow report
// payload: {"state":{"reported":{"firmware":{...}}}}.
//
//go:embed shadow-report.schema.json
var ShadowReport []byte
