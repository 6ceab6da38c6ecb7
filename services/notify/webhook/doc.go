// Package webhook is the generic webhook receiver: a POST of the group and
// its alerts as JSON (Payload) to a configured URL, for anything the other
// receivers do not reach (a ticketing system, a chat bridge, a script).
//
// When secret_file is set, every request is signed: the header
// X-Otawatch-Signature is "sha256=" and the hex HMAC-SHA256 of the body
// under the secret (as GitHub signs its webhooks); Verify checks it.
// X-Otawatch-Notification-Id is the same for every attempt at the same
// notification, so a receiver that keeps the ids it has seen can drop a
// retry whose first answer was lost.
package webhook
