package email

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
	"time"
)

// message is one mail to build.
type message struct {
	from      string
	to        []string
	subject   string
	date      time.Time
	messageID string
	text      string
	html      string
}

// messageID is a Message-ID derived from parts, at the sender's domain: a
// second copy of the same mail has the same one.
func messageID(from string, parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	domain := "otawatch"
	if _, d, ok := strings.Cut(from, "@"); ok {
		domain = strings.TrimRight(d, ">")
	}
	return "<" + hex.EncodeToString(sum[:16]) + "@" + domain + ">"
}

// oneLine keeps a header value on one line: a template's newline must not
// start a header of its own.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// bytes renders m as a MIME message: headers, then multipart/alternative
// with a quoted-printable text/plain part and a text/html part, the
// preferred (HTML) last, CRLF line ends.
func (m *message) bytes() ([]byte, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	if err := mw.SetBoundary("otawatch-" + hex.EncodeToString(rnd[:])); err != nil {
		return nil, err
	}
	for _, part := range []struct{ typ, content string }{
		{"text/plain; charset=utf-8", m.text},
		{"text/html; charset=utf-8", m.html},
	} {
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", part.typ)
		h.Set("Content-Transfer-Encoding", "quoted-printable")
		w, err := mw.CreatePart(h)
		if err != nil {
			return nil, err
		}
		qp := quotedprintable.NewWriter(w)
		if _, err := qp.Write([]byte(crlf(part.content))); err != nil {
			return nil, err
		}
		if err := qp.Close(); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	header := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	header("From", m.from)
	header("To", strings.Join(m.to, ", "))
	header("Subject", mime.QEncoding.Encode("utf-8", oneLine(m.subject)))
	header("Date", m.date.Format(time.RFC1123Z))
	header("Message-ID", m.messageID)
	header("MIME-Version", "1.0")
	header("Content-Type", `multipart/alternative; boundary="`+mw.Boundary()+`"`)
	header("Auto-Submitted", "auto-generated") // RFC 3834: no vacation replies
	b.WriteString("\r\n")
	b.Write(body.Bytes())
	return b.Bytes(), nil
}

// crlf ends every line of s with CRLF, as quoted-printable's hard line
// breaks are.
func crlf(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}
