// Package api is otawatch's HTTP service: the JSON API under /api/v1, the
// seed system's Watson IoT paths under /api/v0002, a live dashboard at /, and
// /metrics, /healthz and /readyz.
//
// Everything it answers comes from a read model it folds from the log at
// start and keeps current on every event: the fleet state (fleet.State) from
// SHADOW, the rollout jobs from ROLLOUT, the active alerts from ALERTS, the
// newest notification decisions and the silences from NOTIFY. Each
// stream is followed by the shared consume loop (services/internal/consume),
// and /readyz is its Status: not ready until every fold has replayed its
// stream. An event the model cannot apply is recorded on REJECTED
// (rejected.api) with the reason, and the fold goes on. Apart from those
// records it writes nothing to the log; rollout commands go to the rollout
// service over NATS request/reply.
//
// # Endpoints
//
//	GET  /healthz                       the process is alive
//	GET  /readyz                        200, or 503 with the components not ready and why
//	GET  /metrics                       Prometheus: HTTP, fleet, waves, alerts, streams
//	GET  /                              the dashboard (WebSocket /api/v1/ws)
//	GET  /api/v0002/device/types/{typeId}/devices/{deviceId}/events/shadow
//	                                    Server-Sent Events of the device's SHADOW events
//	GET  /api/v0002/device/types/{typeId}/devices/{deviceId}/shadow/delta
//	                                    desired firmware vs reported (events.ShadowDelta);
//	                                    none once the device's job is aborted
//	GET  /api/v1/devices                ?limit= ?after=typeId/deviceId ?type= ?status= ?job=
//	GET  /api/v1/devices/{typeId}/{deviceId}
//	GET  /api/v1/devices/{typeId}/{deviceId}/history
//	                                    the device's SHADOW events from the log, paged:
//	                                    ?order=desc (default, newest first) with ?before_seq=,
//	                                    or ?order=asc (oldest first) with ?after_seq=;
//	                                    ?limit= 1..1000 (100); a page's "next" is the cursor
//	                                    of the following one; no event in the log is 404
//	GET  /api/v1/fleet                  fleet.Metrics
//	GET  /api/v1/fleet/state            FleetState: metrics, versions, running and paused
//	                                    rollouts with their waves, devices not online, alerts
//	GET  /api/v1/alerts                 active alerts
//	GET  /api/v1/rollouts               proxied to the rollout service ("list")
//	GET  /api/v1/rollouts/{job}         ("show")
//	POST /api/v1/rollouts               ("create"), the body as it came
//	POST /api/v1/rollouts/{job}/{cmd}   cmd: start, pause, resume, abort, retry-failed
//	                                    a body is read strictly (events.DecodeRolloutRequest):
//	                                    an unknown field, one the command does not use, an
//	                                    "actor" or data after the object is a 400 naming it
//	GET  /api/v1/ws                     the dashboard's WebSocket
//	GET  /api/v1/whoami                 the caller's token name and role (the dashboard
//	                                    offers its controls to operators only)
//	GET  /api/v1/events?subject=...     Server-Sent Events of the log, fleet-wide (below)
//	GET  /api/v1/openapi.json           the OpenAPI 3 document of all of the above (no token)
//
// Errors are JSON, {"error": "..."}, on every path.
//
// # The fleet at an instant
//
// ?at= (RFC 3339, not in the future) on /api/v1/fleet, /api/v1/fleet/state,
// /api/v1/devices, /api/v1/devices/{typeId}/{deviceId} and /api/v1/alerts
// answers what the endpoint answered at that instant, in the same shape:
// the same read model folded from the log to the instant and read with it
// as now (past.go). A snapshot index keeps that fold short: one api
// instance (a lease) saves the model every http.snapshots.every events into
// a KV bucket, and a query folds only what came after the newest snapshot
// before its instant (snapshots.go). "otawatch fleet at T" is the same fold
// from the command line.
//
// # Limits and TLS
//
// A request body over http.max_body_bytes (1 MiB) is 413, before a handler
// reads it when its length is announced; a rollout command that fits but is
// over the NATS server's max_payload is 413 too. Event streams (SSE and the
// WebSocket together) are bounded by http.max_streams (512): one more is 503
// with Retry-After, and a caller without a valid token never takes a slot.
// With http.tls.cert_file and http.tls.key_file the service serves HTTPS
// (HTTP/2 for SSE; WebSockets over HTTP/1.1); http.tls.client_ca_file also
// asks for client certificates and checks any that are shown.
//
// # Server-Sent Events
//
// Each event's id is its SHADOW stream sequence and its data the CloudEvents
// envelope. A client that reconnects with Last-Event-ID resumes right after
// it; ?since= starts after a sequence (0: the whole history) or at an RFC
// 3339 time; without either the stream starts with the device's latest
// report, desired state and presence event, then follows. A comment line
// every http.sse_heartbeat (15 s) keeps idle connections open.
//
// GET /api/v1/events is the same for the whole log, for subscribers who do
// not speak NATS. ?subject= (repeatable, at most 16, not overlapping)
// filters within one log stream: shadow.reported.>, shadow.desired.>,
// device.presence.> (SHADOW), rollout.> (ROLLOUT) or alert.> (ALERTS), or
// narrower ("shadow.*.sensor.>"); tokens are ids, "*" or a final ">", and
// the first is a root. Event ids are that stream's sequences, so filters
// of two streams need two connections. NOTIFY, REJECTED and every subject
// outside the log ($JS, $KV, _INBOX, otawatch) are not served. Last-Event-ID
// and ?since= work as above; without either the stream starts with the
// next new event.
//
// # Authentication
//
// Tokens come from the file http.tokens_file (never from flags), one per
// line, "ROLE TOKEN [NAME]", ROLE read-only or operator. A caller sends
// "Authorization: Bearer TOKEN" (or HTTP Basic with the token as password,
// as the seed's clients do; or ?access_token= on GET, for browsers'
// EventSource; or, on the WebSocket, as the subprotocol
// "otawatch.token.BASE64URL" next to "otawatch.v1", which the dashboard uses
// so its token stays out of URLs and logs). Every /api path needs a token: read-only for
// GET, operator for POST; none is 401, a read-only token on a POST is 403.
// /healthz, /readyz, /metrics and the dashboard page (not its data) are
// open, for probes and scrapers.
//
// With no tokens file the API is open to anonymous operators, which the
// configuration allows only when http.listen is a loopback address; the
// service logs a warning at start.
//
// # Dashboard
//
// The page at / asks for a token once (kept in the tab's sessionStorage),
// asks GET /api/v1/whoami who it belongs to, and follows the WebSocket. For
// an operator it offers each job's commands (pause, resume, abort with a
// confirmation and a required reason, retry-failed) and a form that creates
// and starts a rollout; they are the POST /api/v1/rollouts calls the CLI's
// requests go through, so the rollout service records the token's name as
// the actor. A read-only token gets the same page without them; the API,
// not the page, is what refuses a read-only POST. The push carries what
// the charts draw (charts.go): the active job's update-duration histogram,
// the devices per firmware version and the newest jobs' timelines.
//
// Two panels show what the notify service did with the alerts:
// Notifications, its newest 50 decisions on NOTIFY, newest first (sent
// with the receiver's answer, failed with the error and whether another
// attempt follows, suppressed with the silence or inhibiting alert; one
// cause's suppressions of a group in a row are one line with their count;
// attempts are not listed), and Silences, those pending or active at the
// service's clock (created, not expired, not past their end), with an
// Expire button for an operator (DELETE /api/v1/silences/{id}).
package api
