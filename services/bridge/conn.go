package bridge

import (
	"bufio"
	"net"
	"net/url"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// bufferedConn is a plain TCP connection to the broker that reads through
// a buffer. paho reads every packet in three or more small reads (type
// byte, length bytes, body), each one a syscall on a bare socket; at tens
// of thousands of reports a second that was about a third of paho's CPU in
// the bridge. TLS and WebSocket connections buffer by themselves and are
// left to paho.
//
// Writes are not buffered on purpose. A variant that coalesced writes
// (PUBACKs that pile up going out in one write) was tried: with it, a
// publishing client's bursts against Mosquitto 2.0 now and then got no
// PUBACK for one message, which for the bridge would mean an in-flight slot
// at the broker lost until the next reconnect.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connOpener returns the function paho opens a broker connection with, or
// nil to let paho open it. It dials plain tcp:// and mqtt:// brokers as
// paho does (its dialer, honouring a proxy from the environment) and
// buffers their reads; wrap, if set, is a test's hook on the result.
func connOpener(scheme string, wrap func(net.Conn) net.Conn) mqtt.OpenConnectionFunc {
	if scheme != "tcp" && scheme != "mqtt" {
		return nil
	}
	return func(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
		d := o.Dialer
		if d == nil {
			d = &net.Dialer{Timeout: o.ConnectTimeout}
		}
		c, err := proxy.FromEnvironmentUsing(d).Dial("tcp", u.Host)
		if err != nil {
			return nil, err
		}
		var conn net.Conn = &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, 64<<10)}
		if wrap != nil {
			conn = wrap(conn)
		}
		return conn, nil
	}
}
