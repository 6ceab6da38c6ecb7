package email

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/mail"
	"os"
	"time"

	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/notify/tmpl"
)

// Config is one email receiver.
type Config struct {
	// Host and Port are the SMTP server's (port default 587, submission).
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// From is the sender's address; To the recipients (at least one).
	From string   `yaml:"from"`
	To   []string `yaml:"to"`
	// Username and PasswordFile authenticate with AUTH PLAIN (no
	// authentication when Username is empty).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// RequireTLS refuses a server that does not offer STARTTLS (default
	// true). Without it, a server without STARTTLS gets the mail in the
	// clear, and a password only when it is on loopback.
	RequireTLS *bool `yaml:"require_tls"`
	// CAFile is the CA the server's certificate must chain to (empty: the
	// system's roots).
	CAFile string `yaml:"ca_file"`
	// Hello is the name the client gives in EHLO (default "localhost").
	Hello string `yaml:"hello"`
	// Timeout bounds one attempt, the whole SMTP session (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	// Subject, Text and HTML override an immediate mail's templates
	// (tmpl.DefaultTitle, tmpl.DefaultText, tmpl.DefaultHTML).
	Subject string `yaml:"subject"`
	Text    string `yaml:"text"`
	HTML    string `yaml:"html"`
	// DigestSubject, DigestText and DigestHTML override the digest's
	// (DefaultDigestSubject, DefaultDigestText, DefaultDigestHTML).
	DigestSubject string `yaml:"digest_subject"`
	DigestText    string `yaml:"digest_text"`
	DigestHTML    string `yaml:"digest_html"`
}

// SetDefaults fills in unset keys.
func (c *Config) SetDefaults() {
	if c.Port == 0 {
		c.Port = 587
	}
	if c.RequireTLS == nil {
		t := true
		c.RequireTLS = &t
	}
	if c.Hello == "" {
		c.Hello = "localhost"
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
}

// Validate reports every problem of the receiver, reading password_file
// and ca_file to check them.
func (c *Config) Validate(p conf.Problems) {
	if c.Host == "" {
		p.Addf("host", "is required")
	}
	if c.Port < 1 || c.Port > 65535 {
		p.Addf("port", "%d is not a port", c.Port)
	}
	if c.From == "" {
		p.Addf("from", "is required")
	} else if _, err := mail.ParseAddress(c.From); err != nil {
		p.Addf("from", "%q is not an address: %v", c.From, err)
	}
	if len(c.To) == 0 {
		p.Addf("to", "needs at least one recipient")
	}
	for i, to := range c.To {
		if _, err := mail.ParseAddress(to); err != nil {
			p.Addf(fmt.Sprintf("to.%d", i), "%q is not an address: %v", to, err)
		}
	}
	switch {
	case c.Username != "" && c.PasswordFile == "":
		p.Addf("password_file", "is required with a username")
	case c.Username == "" && c.PasswordFile != "":
		p.Addf("username", "is required with a password_file")
	case c.PasswordFile != "":
		if _, err := conf.ReadSecret(c.PasswordFile); err != nil {
			p.Addf("password_file", "%v", err)
		}
	}
	if c.Username != "" && c.RequireTLS != nil && !*c.RequireTLS && !loopback(c.Host) {
		p.Addf("require_tls", "is false but a password is sent: it would cross the network in the clear (net/smtp refuses to)")
	}
	if c.CAFile != "" {
		if _, err := c.tlsConfig(); err != nil {
			p.Addf("ca_file", "%v", err)
		}
	}
	if c.Hello == "" {
		p.Addf("hello", "is empty")
	}
	if c.Timeout <= 0 {
		p.Addf("timeout", "must be positive")
	}
	c.templates(p)
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// templates parses the six templates, adding a problem for each that does
// not parse.
func (c *Config) templates(p conf.Problems) *templates {
	var t templates
	var err error
	if t.subject, err = tmpl.ParseText("subject", c.Subject, tmpl.DefaultTitle); err != nil {
		p.Addf("subject", "%v", err)
	}
	if t.text, err = tmpl.ParseText("text", c.Text, tmpl.DefaultText); err != nil {
		p.Addf("text", "%v", err)
	}
	if t.html, err = tmpl.ParseHTML("html", c.HTML, tmpl.DefaultHTML); err != nil {
		p.Addf("html", "%v", err)
	}
	if t.digestSubject, err = tmpl.ParseText("digest_subject", c.DigestSubject, DefaultDigestSubject); err != nil {
		p.Addf("digest_subject", "%v", err)
	}
	if t.digestText, err = tmpl.ParseText("digest_text", c.DigestText, DefaultDigestText); err != nil {
		p.Addf("digest_text", "%v", err)
	}
	if t.digestHTML, err = tmpl.ParseHTML("digest_html", c.DigestHTML, DefaultDigestHTML); err != nil {
		p.Addf("digest_html", "%v", err)
	}
	return &t
}

type templates struct {
	subject, text, digestSubject, digestText *tmpl.Text
	html, digestHTML                         *tmpl.HTML
}

// tlsConfig is STARTTLS's configuration: the server's name, and the CA
// file's roots when one is set.
func (c *Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{ServerName: c.Host, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}
