// Package events is otawatch's public event contract: the CloudEvents 1.0
// envelope every service writes, the versioned event types and their data, the
// JetStream subjects, stream names and durable consumer names, and the stream
// configurations. A downstream Go program imports this package to subscribe to
// the log and decode any event; see the Example.
//
// Durable consumer names are public API: renaming one makes that consumer
// replay its stream from the start.
package events
