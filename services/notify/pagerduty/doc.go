// Package pagerduty is the PagerDuty receiver: PagerDuty Events API v2
// (POST {url}/v2/enqueue). A firing group is a `trigger`, a resolved
// group a `resolve`, both with the dedup_key DedupKey derives from the
// group key, so PagerDuty keeps one incident per group: a repeat, a retry
// whose answer was lost, or a replay that sends again lands on the same
// incident instead of opening another.
//
// The trigger's payload carries the summary (a template, tmpl.DefaultTitle
// unless overridden), the source, the group's highest severity mapped to
// PagerDuty's four, the first alert's start as timestamp, the rules as
// class and the jobs as component; custom_details list the devices (the
// first max_devices of them, with the total), jobs, waves, rules and the
// first alerts' messages; the dashboard (Notification.ExternalURL) is a
// link.
//
// The routing key is read from routing_key_file only, once, in New; it is
// never logged or part of an error.
package pagerduty
