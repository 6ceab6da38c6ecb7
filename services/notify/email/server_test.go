package email

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/otawatch/otawatch/services/internal/testutil"
)

// The credentials the test server accepts.
const (
	smtpUser     = "otawatch@example.com"
	smtpPassword = "p4ss-w0rd-never-shown"
)

// mailServer is a real SMTP server (emersion/go-smtp) on loopback: it
// offers STARTTLS with a certificate from a test CA, takes AUTH PLAIN only
// over TLS, and keeps every message it accepts with its envelope.
type mailServer struct {
	addr   string
	caFile string

	mu    sync.Mutex
	mails []received
	// rcptErr, when set, answers every RCPT.
	rcptErr error
}

type received struct {
	from, user string
	to         []string
	tls        bool
	data       []byte
}

// startMailServer starts the server; withTLS false offers no STARTTLS.
func startMailServer(t *testing.T, withTLS bool) *mailServer {
	t.Helper()
	ms := &mailServer{}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{ms: ms, conn: c}, nil
	}))
	s.Domain = "localhost"
	s.ErrorLog = log.New(io.Discard, "", 0) // the handshakes tests refuse
	s.AllowInsecureAuth = !withTLS
	if withTLS {
		ca := testutil.NewTestCA(t)
		cert, key := ca.Server("smtp")
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}}
		ms.caFile = ca.CAFile
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms.addr = l.Addr().String()
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { _ = s.Close() })
	return ms
}

func (ms *mailServer) received() []received {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return append([]received(nil), ms.mails...)
}

type session struct {
	ms   *mailServer
	conn *smtp.Conn
	user string
	from string
	to   []string
}

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != smtpUser || pass != smtpPassword {
			return smtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.ms.mu.Lock()
	err := s.ms.rcptErr
	s.ms.mu.Unlock()
	if err != nil {
		return err
	}
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return errors.New("empty message")
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.ms.mu.Lock()
	s.ms.mails = append(s.ms.mails, received{from: s.from, user: s.user, to: s.to, tls: isTLS, data: b})
	s.ms.mu.Unlock()
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }
