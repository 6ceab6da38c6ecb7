package httpsend

import (
	"net/http"
	"testing"
	"time"
)

// FuzzRetryAfter: whatever a server says, the wait is within 0..MaxRetryAfter.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"2", "0", "-1", "99999999999999999999", "Mon, 30 Nov 2026 12:01:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "soon", ""} {
		f.Add(s, "Mon, 30 Nov 2026 12:00:00 GMT")
	}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, value, date string) {
		h := http.Header{"Retry-After": {value}, "Date": {date}}
		if d := RetryAfter(h, now); d < 0 || d > MaxRetryAfter {
			t.Fatalf("RetryAfter(%q, Date %q) = %s, outside 0..%s", value, date, d, MaxRetryAfter)
		}
	})
}
