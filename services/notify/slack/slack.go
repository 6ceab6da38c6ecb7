package slack

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/notify/httpsend"
	"github.com/otawatch/otawatch/services/notify/tmpl"
)

// DefaultText is the message's body (mrkdwn): the first devices and the
// first alerts' messages.
const DefaultText = `{{if .Devices}}*Devices ({{len .Devices}}):* {{.DeviceList 5}}
{{end}}{{range first 3 .Firing}}• {{.Message}}
{{end}}{{with more 3 .Firing}}… and {{.}} more alerts
{{end}}`

// DefaultResolvedText is the body of a resolved group's message.
const DefaultResolvedText = `{{if .Devices}}*Devices ({{len .Devices}}):* {{.DeviceList 5}}
{{end}}All {{plural (len .Alerts) "alert"}} of the group resolved.`

// Config is one Slack receiver.
type Config struct {
	// URLFile holds the incoming webhook's URL.
	URLFile string `yaml:"url_file"`
	// Timeout bounds one attempt (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// Title overrides the heading and fallback text (tmpl.DefaultTitle);
	// Text and ResolvedText the body (DefaultText, DefaultResolvedText).
	Title        string `yaml:"title"`
	Text         string `yaml:"text"`
	ResolvedText string `yaml:"resolved_text"`
}

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
}

// Validate reports every problem of the receiver, reading url_file to
// check it holds a URL (which no problem shows).
func (c *Config) Validate(p conf.Problems) {
	if c.URLFile == "" {
		p.Addf("url_file", "is required (the incoming webhook's URL)")
	} else if u, err := conf.ReadSecret(c.URLFile); err != nil {
		p.Addf("url_file", "%v", err)
	} else if err := httpsend.CheckURL(strings.TrimSpace(u)); err != nil {
		p.Addf("url_file", "%s: the webhook URL %v", c.URLFile, err)
	}
	if c.Timeout <= 0 {
		p.Addf("timeout", "must be positive")
	}
	c.templates(p)
}

func (c *Config) templates(p conf.Problems) (title, text, resolved *tmpl.Text) {
	var err error
	if title, err = tmpl.ParseText("title", c.Title, tmpl.DefaultTitle); err != nil {
		p.Addf("title", "%v", err)
	}
	if text, err = tmpl.ParseText("text", c.Text, DefaultText); err != nil {
		p.Addf("text", "%v", err)
	}
	if resolved, err = tmpl.ParseText("resolved_text", c.ResolvedText, DefaultResolvedText); err != nil {
		p.Addf("resolved_text", "%v", err)
	}
	return title, text, resolved
}

// Notifier posts notifications to one Slack incoming webhook.
type Notifier struct {
	cfg                  Config
	url                  string
	title, text, resText *tmpl.Text
	client               *http.Client
}

// New builds the receiver: it applies the defaults, returns a *conf.Error
// listing every problem of cfg, and reads the webhook URL.
func New(cfg Config) (*Notifier, error) {
	if err := conf.Check("", &cfg); err != nil {
		return nil, err
	}
	u, err := conf.ReadSecret(cfg.URLFile)
	if err != nil {
		return nil, fmt.Errorf("slack webhook URL: %w", err)
	}
	r := &Notifier{cfg: cfg, url: strings.TrimSpace(u), client: httpsend.NewClient()}
	r.title, r.text, r.resText = cfg.templates(conf.NewProblems())
	return r, nil
}

// Message is an incoming webhook's JSON body.
type Message struct {
	// Text is the fallback shown where blocks are not (notifications).
	Text   string  `json:"text"`
	Blocks []Block `json:"blocks"`
}

// Block is a Block Kit layout block: a section (text and/or fields) or a
// context (elements).
type Block struct {
	Type     string       `json:"type"`
	Text     *TextObject  `json:"text,omitempty"`
	Fields   []TextObject `json:"fields,omitempty"`
	Elements []TextObject `json:"elements,omitempty"`
}

// TextObject is a Block Kit text object.
type TextObject struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// Block Kit's limits on a section's text and a field's.
const (
	maxSectionText = 3000
	maxFieldText   = 2000
)

// Escape makes s literal in Slack mrkdwn: &, < and > are the only
// characters Slack asks to escape.
func Escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func mrkdwn(s string, limit int) TextObject {
	if len(s) > limit {
		s = httpsend.Trim(s[:limit-len("…")])
	}
	return TextObject{Type: "mrkdwn", Text: s}
}

// Message builds n's message.
func (r *Notifier) Message(n *notify.Notification) (*Message, error) {
	d := tmpl.NewData(n)
	title, err := r.title.Execute(d)
	if err != nil {
		return nil, err
	}
	title = Escape(strings.TrimSpace(title))
	bodyT := r.text
	icon := ":rotating_light:"
	switch {
	case d.IsResolved():
		bodyT, icon = r.resText, ":white_check_mark:"
	case d.Severity == "warning":
		icon = ":warning:"
	case d.Severity == "info":
		icon = ":information_source:"
	}
	body, err := bodyT.Execute(d)
	if err != nil {
		return nil, err
	}
	body = Escape(strings.TrimSpace(body))

	jobWave := "–"
	if len(d.Jobs) > 0 {
		jobWave = strings.Join(d.Jobs, ", ")
	}
	if w := d.WaveList(); w != "" {
		jobWave += " / wave " + w
	}
	devices := strconv.Itoa(len(d.Devices))
	if len(d.Devices) == 0 {
		devices = "– (" + strconv.Itoa(len(d.Alerts)) + " fleet alert(s))"
	}
	m := &Message{Text: title, Blocks: []Block{
		{Type: "section", Text: ptr(mrkdwn(icon+" *"+title+"*", maxSectionText))},
		{Type: "section", Fields: []TextObject{
			mrkdwn("*Severity*\n"+Escape(d.Severity), maxFieldText),
			mrkdwn("*Rule*\n"+Escape(strings.Join(d.Rules, ", ")), maxFieldText),
			mrkdwn("*Job / wave*\n"+Escape(jobWave), maxFieldText),
			mrkdwn("*Devices*\n"+devices, maxFieldText),
		}},
	}}
	if body != "" {
		m.Blocks = append(m.Blocks, Block{Type: "section", Text: ptr(mrkdwn(body, maxSectionText))})
	}
	ctx := "otawatch · " + n.Time.UTC().Format(time.RFC3339)
	if n.ExternalURL != "" {
		ctx = "<" + Escape(n.ExternalURL) + "|Open the dashboard> · " + ctx
	}
	m.Blocks = append(m.Blocks, Block{Type: "context", Elements: []TextObject{{Type: "mrkdwn", Text: ctx}}})
	return m, nil
}

func ptr[T any](v T) *T { return &v }

// Notify posts n's message.
func (r *Notifier) Notify(ctx context.Context, n *notify.Notification) (notify.Result, error) {
	m, err := r.Message(n)
	if err != nil {
		return notify.Result{}, fmt.Errorf("slack %s: %w", n.Receiver, err)
	}
	body, err := json.Marshal(m)
	if err != nil {
		return notify.Result{}, fmt.Errorf("slack %s: encode message: %w", n.Receiver, err)
	}
	res, err := httpsend.Post(ctx, r.client, r.cfg.Timeout, httpsend.Request{URL: r.url, Body: body})
	if err != nil {
		return res, fmt.Errorf("slack %s: %w", n.Receiver, err)
	}
	return res, nil
}
