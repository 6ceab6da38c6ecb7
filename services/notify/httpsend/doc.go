// Package httpsend is how every HTTP receiver (PagerDuty, Slack, the
// generic webhook) makes one delivery attempt: one POST under a timeout,
// and one classification of the answer into a notify.Result, so that the
// receivers cannot disagree on what is worth another try.
//
// The classification follows what the providers document and what
// Alertmanager does:
//
//   - 2xx is delivered.
//   - 429 is retried, no sooner than its Retry-After (seconds or an
//     HTTP date, capped at MaxRetryAfter).
//   - 5xx is retried (a 503's Retry-After is honoured too).
//   - Any other status (3xx, 4xx) is not retried: the request itself is
//     wrong (a bad routing key, a revoked webhook) and will stay wrong.
//   - Timeouts and connection errors are retried; a certificate the client
//     does not trust is not.
//
// Errors name the endpoint by scheme and host only: a Slack webhook's
// path is its secret, and net/http's errors would otherwise carry it.
package httpsend
