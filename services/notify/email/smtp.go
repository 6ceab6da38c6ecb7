package email

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"strconv"

	"github.com/otawatch/otawatch/services/notify"
	"github.com/otawatch/otawatch/services/notify/httpsend"
)

// errNoSTARTTLS is a server without STARTTLS while TLS is required.
var errNoSTARTTLS = errors.New("server does not offer STARTTLS and require_tls is set")

// send makes one SMTP session that delivers msg to every recipient, under
// the configured timeout. The Result holds the server's last reply.
func (r *Notifier) send(ctx context.Context, msg []byte) (notify.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	addr := net.JoinHostPort(r.cfg.Host, strconv.Itoa(r.cfg.Port))
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return classify(addr, "connect", err)
	}
	// The session's reads and writes end with ctx: at its deadline, and
	// when it is cancelled.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	c, err := smtp.NewClient(conn, r.cfg.Host)
	if err != nil {
		return classify(addr, "greeting", err)
	}
	if err := c.Hello(r.cfg.Hello); err != nil {
		return classify(addr, "EHLO", err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(r.tls); err != nil {
			return classify(addr, "STARTTLS", err)
		}
	} else if *r.cfg.RequireTLS {
		return notify.Result{}, fmt.Errorf("smtp %s: %w", addr, errNoSTARTTLS)
	}
	if r.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", r.cfg.Username, r.password, r.cfg.Host)); err != nil {
			return classify(addr, "AUTH PLAIN as "+r.cfg.Username, err)
		}
	}
	if err := c.Mail(r.from); err != nil {
		return classify(addr, "MAIL FROM", err)
	}
	for _, to := range r.to {
		if err := c.Rcpt(to); err != nil {
			return classify(addr, "RCPT TO "+to, err)
		}
	}
	// DATA through the text connection, not c.Data: its writer's Close
	// drops the server's final reply, which is the answer NOTIFY records.
	id, err := c.Text.Cmd("DATA")
	if err != nil {
		return classify(addr, "DATA", err)
	}
	c.Text.StartResponse(id)
	_, _, err = c.Text.ReadResponse(354)
	c.Text.EndResponse(id)
	if err != nil {
		return classify(addr, "DATA", err)
	}
	w := c.Text.DotWriter()
	if _, err := w.Write(msg); err != nil {
		return classify(addr, "write message", err)
	}
	if err := w.Close(); err != nil {
		return classify(addr, "end message", err)
	}
	code, answer, err := c.Text.ReadResponse(250)
	if err != nil {
		return classify(addr, "message", err)
	}
	_ = c.Quit() // delivered: a failed QUIT changes nothing
	return notify.Result{Status: code, Answer: httpsend.Trim(strconv.Itoa(code) + " " + answer)}, nil
}

// classify sorts an SMTP failure: a 4xx reply, a timeout or a lost
// connection is worth another try; a 5xx reply, an untrusted certificate
// or a refusal to send a password in the clear is not.
func classify(addr, step string, err error) (notify.Result, error) {
	res := notify.Result{Retry: true}
	var te *textproto.Error
	var (
		unknownCA *x509.UnknownAuthorityError
		invalid   *x509.CertificateInvalidError
		hostname  *x509.HostnameError
		verify    *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &te):
		res.Status = te.Code
		res.Answer = httpsend.Trim(strconv.Itoa(te.Code) + " " + te.Msg)
		res.Retry = te.Code >= 400 && te.Code < 500
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &hostname), errors.As(err, &verify):
		res.Retry = false
	case err.Error() == "unencrypted connection": // net/smtp's PlainAuth
		res.Retry = false
	}
	return res, fmt.Errorf("smtp %s: %s: %w", addr, step, err)
}
