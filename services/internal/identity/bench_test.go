package identity

import (
	"path/filepath"
	"testing"
)

// BenchmarkCheck: what a device's CONNECT costs the server's authenticator,
// the first time (bcrypt at the default cost and at the demo's) and on a
// reconnect (remembered).
func BenchmarkCheck(b *testing.B) {
	for _, bc := range []struct {
		name   string
		cost   int
		cached bool
	}{{"bcrypt-10", DefaultCost, false}, {"bcrypt-4", MinCost, false}, {"remembered", DefaultCost, true}} {
		b.Run(bc.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "devices.json")
			if err := Add(path, "d-1", "pw", bc.cost); err != nil {
				b.Fatal(err)
			}
			r, err := LoadRegistry(path)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if !bc.cached {
					r.mu.Lock()
					clear(r.cache)
					r.mu.Unlock()
				}
				if !r.Check("d-1", "pw") {
					b.Fatal("check failed")
				}
			}
		})
	}
}
