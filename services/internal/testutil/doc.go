// Package testutil starts the real parts integration tests run against: an
// embedded JetStream per test and a Mosquitto broker from the Debian package,
// each on loopback and a free port, stopped by the test's cleanup.
package testutil
