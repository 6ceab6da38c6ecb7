package webhook

import (
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/notify"
)

// TestPreview renders where a notification would be posted and its
// summary, without posting it (the URL leads nowhere).
func TestPreview(t *testing.T) {
	n, err := New(Config{URL: "http://127.0.0.1:1/hook"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := n.Preview(notify.SampleNotification("hook", "", time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC), false), false, time.Time{})
	want := "POST http://127.0.0.1:1/hook (3 alerts): [CRITICAL] device-failed in job otawatch-test wave 1: 3 devices"
	if err != nil || got != want {
		t.Errorf("Preview = %q, %v; want %q", got, err, want)
	}
}
