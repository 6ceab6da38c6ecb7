// Package email is the email receiver, over SMTP with STARTTLS and PLAIN
// authentication (net/smtp): an immediate mail for a route that asks for
// one (Notifier.Notify), and the daily digest of informational alerts
// (Digest), one message listing the period's alerts grouped by rule and
// job. Every mail is multipart/alternative with a plain text and an HTML
// part, both from templates (defaults here and in package tmpl, each
// overridable in the config).
//
// # Delivery
//
// One attempt is one SMTP session under the configured timeout: connect,
// EHLO, STARTTLS (required unless require_tls is false), AUTH PLAIN when
// a username is set, MAIL, RCPT for each recipient, DATA. The server's
// final reply ("250 2.0.0 Ok: queued as ...") is the Result's answer. A
// 4xx reply, a timeout or a lost connection is worth another try; a 5xx
// reply (a refused recipient, bad credentials) or a server certificate
// the client does not trust is not.
//
// SMTP has no idempotency key: a session whose final reply is lost may
// have delivered the mail, and a retry delivers it again. Each mail's
// Message-ID is derived from what it reports (group, status and time; a
// digest's receiver and period), so a second copy carries the same
// Message-ID, which mail clients and many servers use to drop duplicates.
//
// # The digest
//
// A Digest collects notifications (its Notify queues them) and sends one
// mail at a time of day in a time zone, on a svc.Clock: each alert once,
// in its latest state, grouped by rule and job. A period with nothing to
// report sends nothing. A failed send keeps the period's alerts for a
// retry (retry_interval later when the failure is worth another try, the
// next day's digest otherwise). A caller that schedules digests itself
// sends a group as a digest with Notifier.NotifyDigest.
//
// The password is read from password_file only, once, in New; it is never
// logged or part of an error.
package email
