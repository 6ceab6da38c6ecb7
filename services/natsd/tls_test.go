package natsd_test

import (
	"crypto/tls"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/conf"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/natsd"
)

// TestTLSListeners: with TLS on both listeners, the services connect to
// the client port over TLS; on the MQTT listener a device authenticates by
// its client certificate alone, a certificate of an unregistered device or
// one that disagrees with the username is refused, a device without a
// certificate still uses its password, and a plain-TCP client gets nowhere.
func TestTLSListeners(t *testing.T) {
	ca := testutil.NewTestCA(t)
	certFile, keyFile := ca.Server("server")
	serverTLS, err := conf.TLSServer{CertFile: certFile, KeyFile: keyFile, ClientCAFile: ca.CAFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	s := startLocked(t, func(c *natsd.Config) { c.TLS, c.MQTTTLS = serverTLS, serverTLS })

	clientTLS := func(cn string) *tls.Config {
		t.Helper()
		tc := conf.TLSClient{CAFile: ca.CAFile}
		if cn != "" {
			tc.CertFile, tc.KeyFile = ca.Client(cn)
		}
		c, err := tc.Config()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	nc, err := nats.Connect(s.srv.ClientURL(), nats.Secure(clientTLS("")), nats.UserInfo(events.IdentityServices, servicesPassword))
	if err != nil {
		t.Fatalf("services over TLS: %v", err)
	}
	nc.Close()

	connect := func(scheme, user, pw string, tc *tls.Config) error {
		o := mqtt.NewClientOptions().AddBroker(scheme + "://" + s.srv.MQTTAddr()).SetClientID("c-" + user).
			SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetTLSConfig(tc)
		if user != "" {
			o.SetUsername(user).SetPassword(pw)
		}
		c := mqtt.NewClient(o)
		tok := c.Connect()
		tok.WaitTimeout(10 * time.Second)
		if tok.Error() == nil {
			c.Disconnect(50)
		}
		return tok.Error()
	}
	for _, tc := range []struct {
		name, scheme, user, pw, cert string
		ok                           bool
	}{
		{name: "certificate alone", scheme: "ssl", cert: "victim", ok: true},
		{name: "certificate and its own name", scheme: "ssl", user: "victim", cert: "victim", ok: true},
		{name: "password without certificate", scheme: "ssl", user: "victim", pw: "victim-pw", ok: true},
		{name: "unregistered device's certificate", scheme: "ssl", cert: "stranger"},
		{name: "certificate for another name", scheme: "ssl", user: "attacker", pw: "attacker-pw", cert: "victim"},
		{name: "certificate naming a service", scheme: "ssl", cert: natsd.UserBridge},
		{name: "plain TCP", scheme: "tcp", user: "victim", pw: "victim-pw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg *tls.Config
			if tc.scheme == "ssl" {
				cfg = clientTLS(tc.cert)
			}
			err := connect(tc.scheme, tc.user, tc.pw, cfg)
			if tc.ok && err != nil {
				t.Errorf("refused: %v", err)
			}
			if !tc.ok && err == nil {
				t.Error("connected")
			}
		})
	}
}
