// Package simulator is a device fleet that speaks otawatch's device contract
// (DESIGN.md, "Device contract"), for demos, load tests and other services'
// integration tests. It runs in two modes:
//
//   - Standalone (ModeStandalone): every device loops through firmware
//     updates on its own (in_progress, then completed or failed after a
//     log-normal install duration, each time to the next patch version) and
//     the fleet as a whole publishes at a chosen rate (reports/s), forever or
//     for a fixed count. This is load with realistic payloads; nothing steers it.
//   - Fleet (ModeFleet): every device is a stateful device. It subscribes QoS 1
//     to its desired-state topic (events.DeltaTopic) on a persistent session,
//     and when a desired firmware it does not run arrives it reports
//     in_progress, "downloads and installs" for a drawn duration, and reports
//     completed (installing the version) or failed. A report whose publish
//     fails is retried after 5 s, 15 s and 45 s before the device gives the
//     update up locally. A share of the fleet goes offline for a while and
//     reconciles when it comes back, over MQTT and, when an API URL is set,
//     with GET .../shadow/delta.
//
// # Time and randomness
//
// Every duration a device waits (install, backoff, offline) is in device time
// and divided by TimeScale, so a six-hour rollout runs in minutes. Report
// timestamps are the clock's time; updateDuration is in device time, so
// analytics see realistic values under any time scale. The clock is
// injectable (FleetConfig.Clock) and every device draws from its own RNG
// seeded from (Seed, device index), so the outcome of each device's n-th
// update does not depend on goroutine scheduling: a seeded run is
// reproducible.
//
// # Connections
//
// By default each device has its own MQTT connection with client id
// "{prefix}-{type}-{id}", as real devices do; connections are opened
// concurrently, ConnectConcurrency at a time. Mosquitto and the NATS MQTT
// listener take a few thousand connections on one machine without trouble.
// For larger fleets, Connections multiplexes the devices over that many
// connections, each subscribing to its devices' delta topics one by one. The
// tradeoff: the persistent session then belongs to the connection, not to
// the device. A device that goes offline unsubscribes and misses what is
// published meanwhile, and gets the retained desired state when it
// subscribes again; messages that were published but not retained are not
// queued for it, as they would be in its own session, and a failing
// connection takes all of its devices offline at once. Brokers may cap a
// session's subscriptions (the NATS MQTT listener takes 63 QoS 1
// subscriptions per session at its default max_ack_pending); Wildcard
// subscribes one filter per device type per connection instead, at the cost
// of every connection receiving every device's desired state.
//
// # Order
//
// What a device may assume, and what the simulator's devices do: MQTT
// delivers the QoS 1 messages of one session in the order they were
// published, and the bridge stores a device's reports in the order the
// broker delivered them, so SHADOW holds a device's events in the order the
// device sent them, and every read model takes its last one as the
// device's state. That holds for a device that publishes from one
// connection at a time. Reports sent over two connections at once reach
// the broker, and SHADOW, in no defined order, and the device contract
// tells devices not to. A report published again after a failed publish
// is a new publish: a device that retries must do it before it sends the
// next report. Here every device publishes over exactly one connection,
// its own or the one its Connections group shares. In fleet mode a device
// starts installing only once its in_progress report is acknowledged
// (retries included), and the next update only once its final report is
// acknowledged or given up; in standalone mode one loop publishes a
// device's in_progress before its final report, and nothing is retried.
//
// # Presence
//
// In fleet mode every device with its own connection follows the optional
// presence contract (events.PresenceTopic), unless NoPresence (the CLI's
// --presence=false) turns it off: its MQTT will is "offline" on
// iot-2/type/{type}/id/{id}/presence (QoS 1, not retained), and it
// publishes "online" there, QoS 1, each time it connects, after it has
// subscribed to its desired state. An outage, and the fleet stopping, drop
// the connection without a DISCONNECT, as a device that loses power does,
// so the broker publishes the will and otawatch knows the device offline
// at once instead of guessing from silence (over TLS or WebSocket, where
// paho owns the socket, the device says "offline" itself and disconnects).
// A multiplexed connection has one will for many devices, so its devices
// do not take part. Stats.OnlineSent counts the "online" messages
// acknowledged.
//
// # Authentication
//
// With DevicePasswords or PasswordSecret every device authenticates as
// itself, as the trust boundary asks of real devices: username = device id,
// and the password from a credentials file or derived from a secret
// (identity.DerivePassword), registered with "otawatch devices import". A
// broker that confines each device to its own topics (deploy/mosquitto/acl,
// the embedded server's device account) then sees each device as itself,
// so these fleets need a connection per device. Credentials the broker
// refuses three times in a row stop the fleet with an error naming the
// device, instead of retrying forever.
//
// In standalone mode the rate is a ceiling: once every device is busy the
// fleet sends about 2 x Devices x TimeScale / DurationMean reports per
// second, whatever the rate asks.
//
// # Counting what devices received
//
// Stats and DeltasReceived count the desired-state messages a device was
// sent: every delivery, less redeliveries of content the device already had
// (a retained replay after it subscribed again, a QoS 1 resend flagged DUP).
// A rollout that publishes the same desired state twice to an online device
// is counted twice.
package simulator
