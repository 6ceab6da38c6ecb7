package pagerduty

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/otawatch/otawatch/services/notify"
)

// BenchmarkTrigger is one attempt at a 200-device page: the event built
// (template, details), encoded and posted to a local fake that answers 202.
func BenchmarkTrigger(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	r := newNotifier(b, srv.URL, nil)
	n := storm(200, notify.StatusFiring)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Notify(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEvent is the event alone, without the POST.
func BenchmarkEvent(b *testing.B) {
	r := newNotifier(b, "http://127.0.0.1:1", nil)
	n := storm(200, notify.StatusFiring)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Event(n); err != nil {
			b.Fatal(err)
		}
	}
}
