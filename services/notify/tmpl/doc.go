// Package tmpl renders notification text from Go templates: a Data view
// of a notify.Notification that every receiver shares (the group's
// severity, rules, jobs, waves and devices, counted once), default
// templates that read well in a page, a chat message and a mail, and the
// parsing of a configuration's overrides with the same functions.
//
// Text templates (text/template) make page summaries, Slack mrkdwn and
// plain mail; HTML templates (html/template) make the mail's HTML part,
// escaped by context.
package tmpl
