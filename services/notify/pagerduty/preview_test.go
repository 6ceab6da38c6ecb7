package pagerduty

import (
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/notify"
)

// TestPreview renders the event a notification would send, without
// sending it (the URL leads nowhere).
func TestPreview(t *testing.T) {
	n := newNotifier(t, "http://127.0.0.1:1", nil)
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	firing := notify.SampleNotification("pd", "", now, false)
	key := DedupKey(firing.GroupKey)
	for _, tc := range []struct {
		n    *notify.Notification
		want string
	}{
		{firing, "trigger dedup_key " + key + " [critical] [CRITICAL] device-failed in job otawatch-test wave 1: 3 devices"},
		{notify.SampleNotification("pd", "", now, true), "resolve dedup_key " + key},
	} {
		got, err := n.Preview(tc.n, false, time.Time{})
		if err != nil || got != tc.want {
			t.Errorf("Preview = %q, %v; want %q", got, err, tc.want)
		}
	}
}
