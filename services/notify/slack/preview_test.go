package slack

import (
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/notify"
)

// TestPreview renders the message a notification would post, title and
// body, without posting it (the URL leads nowhere).
func TestPreview(t *testing.T) {
	n := newNotifier(t, "http://127.0.0.1:1", nil)
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		resolved bool
		want     []string
	}{
		{false, []string{"*[CRITICAL] device-failed in job otawatch-test wave 1: 3 devices*", "test-device-1"}},
		{true, []string{"[RESOLVED] device-failed"}},
	} {
		got, err := n.Preview(notify.SampleNotification("chat", "", now, tc.resolved), false, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("resolved %v: preview lacks %q:\n%s", tc.resolved, w, got)
			}
		}
	}
}
