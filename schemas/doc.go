// Package schemas embeds the JSON Schemas of otawatch's input payloads, so a
// service validates against the same bytes that ship in the repository.
//
// ShadowReport is the device contract's report (DESIGN.md, "Device
// contract"): the bridge compiles it once and checks every MQTT report
// against it before the report may become an event.
package schemas
