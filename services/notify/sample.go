package notify

import (
	"fmt"
	"time"

	"github.com/otawatch/otawatch/events"
)

// SampleNotification is what "otawatch notify test" sends to receiver:
// three devices of job "otawatch-test" failed in wave 1 (critical,
// device-failed), firing, or resolved when resolved is true. Its group key
// is the same on every call, so a test incident is resolved by the
// resolved sample.
func SampleNotification(receiver, externalURL string, now time.Time, resolved bool) *Notification {
	start := now.Add(-2 * time.Minute).Truncate(time.Second)
	n := &Notification{
		Receiver:    receiver,
		GroupKey:    "otawatch-notify-test:" + receiver,
		Status:      StatusFiring,
		GroupLabels: map[string]string{LabelRule: "device-failed", LabelJob: "otawatch-test", LabelWave: "1"},
		Time:        now,
		ExternalURL: externalURL,
	}
	for i := 1; i <= 3; i++ {
		dev := fmt.Sprintf("test-device-%d", i)
		a := events.AlertData{Key: "device-failed/otawatch-test/" + dev, RuleID: "device-failed", Severity: "critical",
			State: events.AlertRaised, TypeID: "otawatch-test", DeviceID: dev, JobID: "otawatch-test", Wave: 1,
			Labels:  map[string]string{"sample": "true"},
			Message: fmt.Sprintf("device %s reported status failed (error E_TEST) installing 0.0.0-test", dev), StartsAt: start}
		if resolved {
			end := now
			a.State, a.EndsAt, a.Reason = events.AlertResolved, &end, events.ResolvedCleared
		}
		n.Alerts = append(n.Alerts, a)
	}
	if resolved {
		n.Status = StatusResolved
	}
	n.CommonLabels = Labels(n.Alerts[0])
	delete(n.CommonLabels, LabelDevice)
	return n
}
