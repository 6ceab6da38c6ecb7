package natsd

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log sink for the server's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStartFailureSaysWhy: a start that cannot work fails with the
// server's own reason (the port, and that it is in use), logged with
// component=nats too, instead of "not ready after 30s".
func TestStartFailureSaysWhy(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	tests := []struct {
		name string
		cfg  Config
	}{
		{"client port in use", Config{Listen: fmt.Sprintf("127.0.0.1:%d", port)}},
		{"mqtt port in use", Config{Listen: "127.0.0.1:-1", MQTTListen: fmt.Sprintf("127.0.0.1:%d", port)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logBuf lockedBuffer
			tt.cfg.StoreDir = t.TempDir()
			tt.cfg.Log = slog.New(slog.NewTextHandler(&logBuf, nil)).With("component", "nats")
			start := time.Now()
			srv, err := Start(tt.cfg)
			if err == nil {
				srv.Shutdown()
				t.Fatal("started on a port in use")
			}
			want := fmt.Sprintf("127.0.0.1:%d", port)
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "address already in use") {
				t.Errorf("error %q does not name %s and why", err, want)
			}
			if !strings.Contains(logBuf.String(), "component=nats") || !strings.Contains(logBuf.String(), want) {
				t.Errorf("the log does not say it with component=nats:\n%s", logBuf.String())
			}
			// Not an assert on timing: a failure that waited out the ready
			// timeout would say "not ready after", which the checks above
			// refuse. Logged for a look.
			t.Logf("failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
		})
	}
}
