// Package events is otawatch's public event contract: the CloudEvents 1.0
// envelope every service writes, the versioned event types and their data, the
// JetStream subjects, stream names and durable consumer names, and the stream
// configurations. A downstream Go program imports this package to subscribe to
// the log and decode any event; see the Example.
//
// The wire format is written here once. New and Marshal (or Encode, both in
// one pass) write an event, Decode and DecodeData read one; each writes the
// bytes, or reads the values, that encoding/json does on the same structs,
// by hand for the envelope and the SHADOW and REJECTED data types and through
// encoding/json for the rest (see codec.go; the fuzz tests hold the two
// equal). The scanner under them, events/jsonscan, is shared with the
// bridge's reading of device reports.
//
// Durable consumer names are public API: renaming one makes that consumer
// replay its stream from the start.
package events
