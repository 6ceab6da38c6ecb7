package email

import (
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/notify"
)

// TestPreview renders the mail a notification would send, immediate or as
// a digest, without sending it (the host does not exist).
func TestPreview(t *testing.T) {
	n := newNotifier(t, Config{Host: "smtp.invalid", From: "a@example.com", To: []string{"b@example.com"}})
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	sample := notify.SampleNotification("mail", "", now, false)
	for _, tc := range []struct {
		name   string
		digest bool
		want   []string
	}{
		{"immediate", false, []string{"To: b@example.com\nSubject: [CRITICAL] device-failed in job otawatch-test wave 1: 3 devices\n\nFiring: device-failed"}},
		{"digest", true, []string{"Subject: otawatch digest 2026-03-01: 3 alerts in 1 group", "otawatch daily digest, 2026-02-28 08:00"}},
	} {
		got, err := n.Preview(sample, tc.digest, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: preview lacks %q:\n%s", tc.name, w, got)
			}
		}
	}
}
