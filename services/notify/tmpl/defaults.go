package tmpl

// DefaultTitle is a notification in one line: a page's summary, a chat
// message's heading, a mail's subject. "[CRITICAL] device-failed in job
// fw-4.2.1 wave 3: 200 devices".
const DefaultTitle = `{{if .IsResolved}}[RESOLVED]{{else}}[{{upper .Severity}}]{{end}} ` +
	`{{join ", " .Rules}}{{with .Jobs}} in job {{join ", " .}}{{end}}{{with .WaveList}} wave {{.}}{{end}}: ` +
	`{{if .Devices}}{{plural (len .Devices) "device"}}{{else}}{{plural (len .Alerts) "alert"}}{{end}}`

// DefaultText is a notification as plain text: what happened, where, to
// which devices, and the first alerts' messages.
const DefaultText = `{{if .IsResolved}}Resolved{{else}}Firing{{end}}: {{join ", " .Rules}} ({{.Severity}})
{{- with .Jobs}}
Job: {{join ", " .}}{{end}}{{with .WaveList}}, wave {{.}}{{end}}
{{- if .Devices}}
Devices ({{len .Devices}}): {{.DeviceList 20}}{{end}}

{{range first 20 .Alerts -}}
- [{{.State}}] {{.Message}}{{with .DeviceID}} ({{.}}){{end}}, since {{time .StartsAt}}
{{end -}}
{{with more 20 .Alerts}}... and {{.}} more alerts
{{end -}}
{{with .ExternalURL}}
Dashboard: {{.}}
{{end}}`

// DefaultHTML is DefaultText as an HTML fragment (a mail's HTML part).
const DefaultHTML = `<p><strong>{{if .IsResolved}}Resolved{{else}}Firing{{end}}: {{join ", " .Rules}}</strong> ({{.Severity}})</p>
<ul>
{{- with .Jobs}}<li>Job: {{join ", " .}}</li>{{end}}
{{- with .WaveList}}<li>Wave: {{.}}</li>{{end}}
{{- if .Devices}}<li>Devices ({{len .Devices}}): {{.DeviceList 20}}</li>{{end}}
</ul>
<table>
<tr><th>state</th><th>message</th><th>device</th><th>since</th></tr>
{{- range first 20 .Alerts}}
<tr><td>{{.State}}</td><td>{{.Message}}</td><td>{{.DeviceID}}</td><td>{{time .StartsAt}}</td></tr>
{{- end}}
</table>
{{- with more 20 .Alerts}}
<p>... and {{.}} more alerts</p>{{end}}
{{- with .ExternalURL}}
<p><a href="{{.}}">Dashboard</a></p>{{end}}
`
