// Package notify delivers alerts where operators are: it follows ALERTS,
// routes every alert through a routing tree with Prometheus Alertmanager's
// semantics, groups and paces what it routes, and hands each group's
// notifications to a receiver (one subpackage each: pagerduty, slack,
// email, webhook, all behind the one-method Notifier).
//
// Routing: an alert's labels (Labels: severity, rule, job, wave,
// device_type, device and its rule's labels) enter the tree at the root
// and go down the first child whose matchers hold, on to later siblings
// past a child with continue, and end at the deepest route that took them.
// Children inherit group_by, group_wait, group_interval, repeat_interval
// and the receiver.
//
// Grouping and pacing, Alertmanager's meanings: the alerts of one route
// with the same group_by values are one group. A new group waits
// group_wait, then is notified; after that it is looked at every
// group_interval and notified when its firing alerts are not a subset of
// what its receiver was last told, when an alert of the last notification
// resolved, when everything it reported resolved (once), or when
// repeat_interval has passed. So 200 devices failing in one wave (grouped
// by rule, job and wave) are one notification listing 200 alerts. A route
// with digest_at is notified once a day instead.
//
// Silences (events on notify.silence.{created,expired}) and inhibition
// rules mute alerts; each muted alert is recorded once as suppressed.
//
// Exactly once, as an operator sees it. Every decision is an event on
// NOTIFY: an attempt before the receiver is called, sent (with the
// receiver's answer) or failed (with the error) after. An active run
// rebuilds its state by reading NOTIFY to its end (what each group last
// told its receiver: Alertmanager's notification log; the silences), then
// ALERTS from its start to its end without deciding anything, and only
// then flushes groups. A notification NOTIFY records as sent is therefore
// never sent again by a restart, a standby that takes over behind the
// lease, or a replay of ALERTS. What remains is the window between a
// receiver accepting a notification and its sent event being stored: an
// instance that dies there leaves an attempt without an outcome, and the
// next active instance makes the attempt again, as the same notification
// (the same alerts, and the time it was first decided, which its attempt
// events carry). PagerDuty's dedup_key (derived from the group key) makes
// that harmless; the webhook's notification id and the mail's Message-ID
// derive from the notification and its decided time, so a receiver that
// deduplicates by them sees it once; a Slack message may show twice.
//
// Delivery: every attempt has a timeout; a failure the receiver marks
// retryable (5xx, 429, timeouts, connection errors) is attempted again
// after an exponential backoff with jitter, or after Retry-After when that
// is longer, for retry_for; other failures are final, and the same
// notification is not attempted again (a change of its group makes a new
// one).
//
// Timers (group_wait, group_interval, retries) run on svc.Deps.Clock, so
// tests drive them with a fake clock. The durable name
// events.ConsumerNotifyAlerts stays reserved and is not created: the
// service reads ALERTS with an ordered consumer from the start each time
// it becomes active, because its position is what NOTIFY says, not a
// consumer's ack floor.
//
// Replay (replay.go, `otawatch replay notify`) runs the recorded ALERTS and
// silences through this same dispatcher and flush on a manual clock, with
// an outbox that delivers nothing (a receiver that implements Previewer
// renders what it would send), and compares the decisions with NOTIFY.
package notify
