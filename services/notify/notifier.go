package notify

import (
	"context"
	"time"

	"github.com/otawatch/otawatch/events"
)

// Notification is what a receiver is asked to deliver: one group of alerts
// (Alertmanager's meaning), firing or resolved.
type Notification struct {
	// Receiver is the configured receiver's name.
	Receiver string
	// GroupKey identifies the group across notifications: a receiver that
	// deduplicates (PagerDuty's dedup_key) derives its key from it, so a
	// repeat, a retry or a resolve reaches the same incident.
	GroupKey string
	// Status is StatusFiring while any alert of the group is raised,
	// StatusResolved once all are resolved.
	Status string
	// GroupLabels are the values of the route's group_by labels;
	// CommonLabels the labels every alert of the group shares.
	GroupLabels, CommonLabels map[string]string
	// Alerts are the group's alerts (raised and recently resolved), oldest
	// first, each with its state.
	Alerts []events.AlertData
	// Time is when the notification was decided (event or tick time).
	Time time.Time
	// ExternalURL is the dashboard's address, for links ("" when unknown).
	ExternalURL string
}

// Notification statuses.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// Result is a receiver's answer to one delivery attempt.
type Result struct {
	// Status is the HTTP status or SMTP reply code, when there was one.
	Status int
	// Answer is what the receiver said (trimmed to a few hundred bytes),
	// recorded on NOTIFY.
	Answer string
	// Retry says the attempt failed in a way worth another try (5xx, 429,
	// a timeout, a connection error); RetryAfter is the least wait the
	// receiver asked for (429 Retry-After), 0 when it said nothing.
	Retry      bool
	RetryAfter time.Duration
}

// Notifier delivers notifications to one receiver. Notify makes one
// attempt: it returns the receiver's answer, and an error when the attempt
// failed (Result.Retry says whether another attempt may succeed). It
// honours ctx's deadline.
type Notifier interface {
	Notify(ctx context.Context, n *Notification) (Result, error)
}
