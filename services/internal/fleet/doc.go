// Package fleet is the fleet state as a fold of the SHADOW stream: each
// device's reported and desired firmware and presence, and the fleet and
// per-wave metrics that alert rules and rollout gates read. Alerting,
// rollout and the API each keep their own State, fed by the same events, so
// they agree on what "healthy" means and replay computes what live computed.
//
// State takes time only from events (and from the tick time a caller passes
// to Stale), never from the wall clock.
//
// # Presence
//
// Devices report on change: in_progress when an update starts, completed
// or failed when it ends, and then nothing, possibly for months. So
// silence means something only while otawatch waits for a report
// (Device.OwesReport): the device was sent a desired state it has not
// finished, or its latest report is in_progress. Such a device silent for
// offline_after (Device.QuietSince, the later of its last report and its
// desired state) is potentially offline: Stale names it, alerting records
// a device.presence potentially_offline event, and applying that event
// takes the device out of the success rate until it reports again. A
// device that finished and then says nothing is idle: online, counting
// with its last finished report however long it is silent.
//
// A device that follows the presence contract (events.PresenceTopic: its
// MQTT will says "offline", it says "online" when it connects) is online
// or offline by what the broker says, through the bridge's
// device.presence online and offline events: offline at once when its
// connection drops, and never guessed offline from silence while the
// broker says it is online. An offline device leaves the success rate
// like a potentially offline one, and comes back with "online" or with
// its next report.
package fleet
