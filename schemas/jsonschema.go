package schemas

import (
	_ "embed"
	"time"
)

// ShadowReportID is the $id of the shadow report schema; a JSON Schema
// compiler should register ShadowReport under this URL.
const ShadowReportID = "https://otawatch.io/schemas/shadow-report.schema.json"

// ShadowReport is the JSON Schema (draft 2020-12) of a device's shadow report
// payload: {"state":{"reported":{"firmware":{...}}}}.
//
//go:embed shadow-report.schema.json
var ShadowReport []byte

// MaxUpdateDuration is the largest updateDuration a report may carry, in
// seconds: 7 days. An update that takes longer is a device clock or
// counter gone wrong, and a duration that large would dominate every fleet
// average (the duration-anomaly rule compares against one). The schema's
// "maximum" says the same; TestReportLimitsMatchSchema keeps them equal.
const MaxUpdateDuration = 7 * 24 * 60 * 60

// ReportTimeFrom and ReportTimeUntil bound a report's firmware timestamp:
// a report is accepted when ReportTimeFrom <= timestamp < ReportTimeUntil.
// The window lies inside what every read model stores (a ClickHouse
// DateTime holds 1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z; outside it
// a time is stored as 0000-00-00 00:00:00 without an error), and it refuses
// the clocks devices report before they have synchronised (1970, 1980,
// 2000-01-01 minus an offset). JSON Schema cannot compare date-times, so
// the schema's description states the window and the bridge checks it
// (ReportTimeOK).
const (
	ReportTimeFrom  = "2000-01-01T00:00:00Z"
	ReportTimeUntil = "2100-01-01T00:00:00Z"
)

// The window as Unix seconds (TestReportLimitsMatchSchema checks them
// against the strings).
const (
	reportTimeFromUnix  = 946684800
	reportTimeUntilUnix = 4102444800
)

// ReportTimeOK reports whether a report's timestamp lies in the accepted
// window [ReportTimeFrom, ReportTimeUntil).
func ReportTimeOK(t time.Time) bool {
	s := t.Unix()
	return s >= reportTimeFromUnix && s < reportTimeUntilUnix
}
