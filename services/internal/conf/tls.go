package conf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSServer is the TLS of a listener: its certificate and key, and
// optionally the CA that client certificates must chain to. Empty CertFile
// and KeyFile: no TLS.
type TLSServer struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, asks clients for a certificate and checks
	// any they show against it (a client may still use a password).
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled reports whether the listener uses TLS.
func (t TLSServer) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Validate adds a problem for a half-set pair or a file that cannot be
// loaded.
func (t TLSServer) Validate(p Problems) {
	if !t.Enabled() {
		if t.ClientCAFile != "" {
			p.Addf("client_ca_file", "is set but cert_file and key_file are not: client certificates need TLS")
		}
		return
	}
	if _, err := t.Config(); err != nil {
		p.Addf("cert_file", "%v", err)
	}
}

// Config builds the listener's tls.Config (nil when TLS is off).
func (t TLSServer) Config() (*tls.Config, error) {
	if !t.Enabled() {
		return nil, nil
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("cert_file and key_file go together")
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s and key %s: %w", t.CertFile, t.KeyFile, err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if t.ClientCAFile != "" {
		pool, err := loadPool(t.ClientCAFile)
		if err != nil {
			return nil, err
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c, nil
}

// TLSClient is the TLS of an outbound connection: the CA to trust (empty:
// the system's) and an optional client certificate.
type TLSClient struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Validate adds a problem for a half-set pair or a file that cannot be
// loaded, under the key of the file at fault.
func (t TLSClient) Validate(p Problems) {
	if t.CAFile != "" {
		if _, err := loadPool(t.CAFile); err != nil {
			p.Addf("ca_file", "%v", err)
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		p.Addf("key_file", "cert_file and key_file go together")
	case t.CertFile != "":
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			p.Addf("cert_file", "load client certificate %s and key %s: %v", t.CertFile, t.KeyFile, err)
		}
	}
}

// Config builds the connection's tls.Config; nil when nothing is set (the
// defaults of the URL's scheme apply).
func (t TLSClient) Config() (*tls.Config, error) {
	if t == (TLSClient{}) {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pool, err := loadPool(t.CAFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("cert_file and key_file go together")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s and key %s: %w", t.CertFile, t.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}
