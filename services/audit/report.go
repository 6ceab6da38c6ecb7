package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// ReportOptions say what a compliance report covers.
type ReportOptions struct {
	// From and To bound the range by the time each event was stored, as
	// Export's do: an export of the same range holds exactly the events
	// the report sums up, and its manifest the same chain heads.
	From, To time.Time
	// Generator says what wrote the report ("otawatch audit report",
	// with its build); Source where the log was read (the NATS server).
	Generator, Source string
	// Progress is called about every ProgressEvery with a line to print.
	Progress      func(string)
	ProgressEvery time.Duration
	// ChartPoints is how many instants the versions chart samples
	// (default 240).
	ChartPoints int
	Now         func() time.Time
}

// ComplianceReport is what a compliance report shows: everything the page renders,
// computed from the log.
type ComplianceReport struct {
	From, To    time.Time
	GeneratedAt time.Time
	Generator   string
	Source      string

	// Chains is the hash-chain check of every chained stream over the
	// range, in events.ChainedStreams order.
	Chains []ChainCheck
	// Rollouts are the jobs with an event in the range, oldest first.
	Rollouts []*ReportJob
	// Actions are who did what in the range (rollout commands, failure
	// policy decisions, silences), in stream order per stream, merged by
	// time.
	Actions []ReportAction
	// Reports sums the firmware reports stored in the range.
	Reports ReportCounts
	// Failures are the failed reports of the range by error code, most
	// first.
	Failures []ErrorCodeCount
	// Fleet is the fleet's metrics after the range's last event, folded
	// with the code the live services use.
	Fleet fleet.Metrics
	// Versions is the devices per running firmware version over the
	// range.
	Versions VersionSeries
	// Alerts are the alerts raised and resolved in the range by rule and
	// severity; Notifications the notify outcomes by receiver; Rejected
	// the rejected inputs by source.
	Alerts        []AlertCount
	Notifications []NotifyCount
	Rejected      []NameCount
	// Undecodable counts stored messages of the range the report could not
	// read as events (they are still in the chain check).
	Undecodable []string
}

// ReportCounts are firmware reports by status.
type ReportCounts struct {
	Total, InProgress, Completed, Failed int
	// Devices is how many devices reported.
	Devices int
}

// SuccessRate is Completed / (Completed + Failed), and whether any update
// finished.
func (c ReportCounts) SuccessRate() (float64, bool) {
	if c.Completed+c.Failed == 0 {
		return 0, false
	}
	return float64(c.Completed) / float64(c.Completed+c.Failed), true
}

// ErrorCodeCount is one error code's failed reports.
type ErrorCodeCount struct {
	Code    string
	Reports int
	Devices int
	// Examples are a few of the devices (TYPE/ID), in the order they
	// failed; Jobs the rollouts the devices were targeted by.
	Examples    []string
	Jobs        []string
	First, Last time.Time

	devices map[fleet.Key]bool
}

// ReportAction is one thing someone (or the system, on its policy) did.
type ReportAction struct {
	Time   time.Time
	Actor  string
	Action string
	Object string
	Detail string
	// Stream and Seq locate the event that records it.
	Stream string
	Seq    uint64
}

// AlertCount is one rule's alerts at one severity.
type AlertCount struct {
	RuleID, Severity string
	Raised, Resolved int
}

// NotifyCount is one receiver's notification outcomes.
type NotifyCount struct {
	Receiver                           string
	Attempts, Sent, Failed, Suppressed int
}

// NameCount is a count by name.
type NameCount struct {
	Name  string
	Count int
}

// BuildReport reads the log and computes the report of o.From..o.To. Each
// stream is read once: SHADOW and ROLLOUT from their start (the fleet and
// the jobs as they stood when the range began), the others from the range,
// and every stream from its last checkpoint before the range to its first
// after it, for the chain check.
func BuildReport(ctx context.Context, js jetstream.JetStream, o ReportOptions) (*ComplianceReport, error) {
	if !o.To.After(o.From) {
		return nil, fmt.Errorf("the range ends (%s) before it starts (%s)", o.To.Format(time.RFC3339), o.From.Format(time.RFC3339))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ChartPoints <= 1 {
		o.ChartPoints = 240
	}
	r := &ComplianceReport{From: o.From.UTC(), To: o.To.UTC(), GeneratedAt: o.Now().UTC(), Generator: o.Generator, Source: o.Source}
	f := newReportFold(r)
	p := &reportProgress{o: o, began: time.Now(), last: time.Now()}
	for _, stream := range events.ChainedStreams() {
		history := stream == events.StreamShadow || stream == events.StreamRollout
		c, err := checkStream(ctx, js, stream, o.From, o.To, history, p, func(m consume.Msg, inRange bool) {
			f.apply(stream, m, inRange)
		})
		if err != nil {
			return nil, err
		}
		r.Chains = append(r.Chains, c)
	}
	f.finish(o.ChartPoints)
	return r, nil
}

// reportProgress prints a line about every ProgressEvery while streams are
// read.
type reportProgress struct {
	o           ReportOptions
	began, last time.Time
	events      uint64
}

func (p *reportProgress) tick(stream string, seq, last uint64) {
	p.events++
	if p.o.Progress == nil || time.Since(p.last) < p.o.ProgressEvery {
		return
	}
	p.last = time.Now()
	p.o.Progress(fmt.Sprintf("report: %s seq %d of %d, %d events read, %.0f events/s",
		stream, seq, last, p.events, float64(p.events)/time.Since(p.began).Seconds()))
}
