// Package slack is the Slack receiver: an incoming webhook (POST of a JSON
// message to the webhook's URL), with a Block Kit message a person reads
// at a glance: a heading with the severity and what fired, fields for
// severity, rule, job and wave and the number of devices, the first few
// device ids and alert messages, and a link to the dashboard; a resolved
// group gets its own, shorter, message. The top-level text is the
// notification's fallback (phone notifications, screen readers).
//
// The webhook URL is the secret (whoever has it can post to the channel):
// it comes from url_file only, and errors show only its host.
//
// Template output is escaped for Slack's mrkdwn (&, <, >), so an alert
// message cannot ping a channel or forge a link; the dashboard link is
// made by the receiver, not by a template.
package slack
