package audit

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// ReportJob is one rollout job as its ROLLOUT events tell it, up to the
// range's end.
type ReportJob struct {
	ID     string
	Target events.DesiredFirmware
	// Spec is nil when the job's job_created is no longer on the stream.
	Spec   *events.RolloutSpec
	Status string
	// Reason and By say why it is paused or aborted.
	Reason, By                       string
	CreatedAt, StartedAt, FinishedAt time.Time
	CreatedBy                        string
	// Devices is the plan's devices.
	Devices int
	Waves   []ReportWave
	// Completed and Failed are the range's finished reports of devices
	// the job targeted (the device's desired state was the job's).
	Completed, Failed int

	inRange bool
}

// SuccessRate is Completed / (Completed + Failed), and whether any of the
// job's devices finished in the range.
func (j *ReportJob) SuccessRate() (float64, bool) {
	return ReportCounts{Completed: j.Completed, Failed: j.Failed}.SuccessRate()
}

// ReportWave is one wave of a job: its size in the plan, when it started,
// when its gate passed (and the recorded decision), when it completed.
type ReportWave struct {
	Wave, Size                      int
	StartedAt, GatedAt, CompletedAt time.Time
	Gate                            *events.GateDecision
	// Progress is the wave's devices by state when it was gated, replaced
	// by the one recorded when it completed.
	Progress *events.WaveProgress
}

// Actors the report names for what the system did on its own.
const (
	actorFailurePolicy = "otawatch (failure policy)"
	actorRollout       = "otawatch (rollout service)"
	actorUnknown       = "(not recorded)"
)

// reportFold computes a ComplianceReport from the messages checkStream hands over.
type reportFold struct {
	r *ComplianceReport
	// st is the fleet, folded with the live services' code.
	st *fleet.State
	// running is each device's running version and versions the devices
	// per running version; initial is versions when the range began.
	running  map[fleet.Key]string
	versions map[string]int
	initial  map[string]int
	changes  []versionChange
	// span is the event times of the range's SHADOW events.
	spanFrom, spanTo time.Time

	reporters  map[fleet.Key]bool
	failures   map[string]*ErrorCodeCount
	jobReports map[string][2]int // job -> completed, failed
	jobs       map[string]*ReportJob
	alerts     map[[2]string]*AlertCount
	notify     map[string]*NotifyCount
	rejected   map[string]int
}

// versionChange is a device moving from one running version to another.
type versionChange struct {
	at       time.Time
	from, to string
}

func newReportFold(r *ComplianceReport) *reportFold {
	return &reportFold{r: r, st: fleet.New(), running: map[fleet.Key]string{}, versions: map[string]int{},
		reporters: map[fleet.Key]bool{}, failures: map[string]*ErrorCodeCount{}, jobReports: map[string][2]int{},
		jobs: map[string]*ReportJob{}, alerts: map[[2]string]*AlertCount{}, notify: map[string]*NotifyCount{}, rejected: map[string]int{}}
}

// apply folds one stored message of stream; inRange says whether it was
// stored in the range (before it, it only builds the state the range
// starts from).
func (f *reportFold) apply(stream string, m consume.Msg, inRange bool) {
	if stream == events.StreamRejected {
		if inRange {
			f.rejected[strings.TrimPrefix(m.Subject, events.SubjectRejected+".")]++
		}
		return
	}
	e, err := events.Decode(m.Data)
	if err == nil {
		switch stream {
		case events.StreamShadow:
			err = f.shadow(m, e, inRange)
		case events.StreamRollout:
			err = f.rollout(m, e, inRange)
		case events.StreamAlerts:
			if inRange {
				err = f.alert(e)
			}
		case events.StreamNotify:
			if inRange {
				err = f.notification(m, e)
			}
		}
	}
	if err != nil && inRange {
		f.r.Undecodable = append(f.r.Undecodable, fmt.Sprintf("%s seq %d: %v", stream, m.Seq, err))
	}
}

// runningVersion is the firmware a device runs by its latest report: the
// version of a completed report; while an update is in progress, or after
// it failed, the version it updates from.
func runningVersion(d *fleet.Device) string {
	if d.Status != events.StatusCompleted && d.PreviousVersion != "" {
		return d.PreviousVersion
	}
	return d.Version
}

func (f *reportFold) shadow(m consume.Msg, e events.Event, inRange bool) error {
	if inRange && f.initial == nil {
		f.initial = make(map[string]int, len(f.versions))
		for v, n := range f.versions {
			f.initial[v] = n
		}
	}
	d, err := f.st.Apply(m.Seq, e)
	if err != nil || d == nil || e.Type != events.TypeShadowReported {
		return err
	}
	k := fleet.Key{TypeID: d.TypeID, DeviceID: d.DeviceID}
	if v, old := runningVersion(d), f.running[k]; v != old {
		if old != "" {
			f.versions[old]--
		}
		f.versions[v]++
		f.running[k] = v
		if inRange {
			f.changes = append(f.changes, versionChange{at: e.Time, from: old, to: v})
		}
	}
	if !inRange {
		return nil
	}
	if f.spanFrom.IsZero() || e.Time.Before(f.spanFrom) {
		f.spanFrom = e.Time
	}
	if e.Time.After(f.spanTo) {
		f.spanTo = e.Time
	}
	c := &f.r.Reports
	c.Total++
	f.reporters[k] = true
	job := f.jobReports[d.JobID]
	switch d.Status {
	case events.StatusInProgress:
		c.InProgress++
	case events.StatusCompleted:
		c.Completed++
		if d.JobID != "" && d.JobStatus == fleet.JobCompleted {
			job[0]++
		}
	case events.StatusFailed:
		c.Failed++
		if d.JobID != "" && d.JobStatus == fleet.JobFailed {
			job[1]++
		}
		code := d.ErrorCode
		if code == "" {
			code = "(none)"
		}
		ec := f.failures[code]
		if ec == nil {
			ec = &ErrorCodeCount{Code: code, First: e.Time, devices: map[fleet.Key]bool{}}
			f.failures[code] = ec
		}
		ec.Reports++
		ec.Last = e.Time
		if !ec.devices[k] {
			ec.devices[k] = true
			ec.Devices++
			if len(ec.Examples) < 5 {
				ec.Examples = append(ec.Examples, d.TypeID+"/"+d.DeviceID)
			}
		}
		if d.JobID != "" && !contains(ec.Jobs, d.JobID) {
			ec.Jobs = append(ec.Jobs, d.JobID)
		}
	}
	if d.JobID != "" {
		f.jobReports[d.JobID] = job
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (f *reportFold) rollout(m consume.Msg, e events.Event, inRange bool) error {
	var d events.RolloutData
	if err := e.DecodeData(&d); err != nil {
		return err
	}
	j := f.jobs[d.JobID]
	if j == nil {
		// A job whose job_created aged out of the stream still shows.
		j = &ReportJob{ID: d.JobID, CreatedBy: actorUnknown}
		f.jobs[d.JobID] = j
	}
	j.inRange = j.inRange || inRange
	wave := func() *ReportWave {
		if d.Wave < 1 || d.Wave > len(j.Waves) {
			return nil
		}
		return &j.Waves[d.Wave-1]
	}
	act := ReportAction{Time: e.Time, Actor: d.Actor, Object: "rollout " + d.JobID, Stream: events.StreamRollout, Seq: m.Seq}
	if act.Actor == "" {
		act.Actor = actorUnknown
	}
	switch e.Type {
	case events.TypeRolloutJobCreated:
		j.Spec, j.CreatedAt, j.Status, j.CreatedBy = d.Spec, e.Time, events.RolloutCreated, act.Actor
		switch {
		case d.Target != nil:
			j.Target = *d.Target
		case d.Spec != nil:
			j.Target = d.Spec.Target
		}
		act.Action, act.Detail = "created", describeSpec(j)
	case events.TypeRolloutJobStarted:
		j.StartedAt, j.Status = e.Time, events.RolloutRunning
		if d.Plan != nil {
			j.Waves, j.Devices = make([]ReportWave, len(d.Plan.Waves)), 0
			for i, w := range d.Plan.Waves {
				j.Waves[i] = ReportWave{Wave: i + 1, Size: len(w)}
				j.Devices += len(w)
			}
		}
		act.Action, act.Detail = "started", fmt.Sprintf("%d devices in %d waves", j.Devices, len(j.Waves))
	case events.TypeRolloutWaveStarted:
		if w := wave(); w != nil {
			w.StartedAt = e.Time
		}
	case events.TypeRolloutWaveGated:
		if w := wave(); w != nil {
			w.GatedAt, w.Gate, w.Progress = e.Time, d.Gate, d.Progress
		}
	case events.TypeRolloutWaveCompleted:
		if w := wave(); w != nil {
			w.CompletedAt = e.Time
			if d.Progress != nil {
				w.Progress = d.Progress
			}
		}
	case events.TypeRolloutJobPaused, events.TypeRolloutJobAborted:
		j.Status, j.Reason, j.By = events.RolloutPaused, d.Reason, d.By
		act.Action = "paused"
		if e.Type == events.TypeRolloutJobAborted {
			j.Status, j.FinishedAt, act.Action = events.RolloutAborted, e.Time, "aborted"
		}
		if d.By == events.ByFailurePolicy {
			act.Actor = actorFailurePolicy
		}
		act.Detail = fmt.Sprintf("in wave %d: %s", d.Wave, d.Reason)
	case events.TypeRolloutJobResumed:
		j.Status, j.Reason, j.By = events.RolloutRunning, "", ""
		act.Action = "resumed"
	case events.TypeRolloutJobCompleted:
		j.Status, j.FinishedAt = events.RolloutCompleted, e.Time
		act.Actor, act.Action, act.Detail = actorRollout, "completed", fmt.Sprintf("all %d waves", len(j.Waves))
	case events.TypeRolloutDevicesRetried:
		act.Action, act.Detail = "retried failed devices", fmt.Sprintf("%d devices, attempt %d", len(d.Devices), d.Attempt)
	}
	if inRange && act.Action != "" {
		f.r.Actions = append(f.r.Actions, act)
	}
	return nil
}

// describeSpec is a job's target and settings in a line.
func describeSpec(j *ReportJob) string {
	s := "target " + j.Target.Version
	if j.Spec == nil {
		return s
	}
	sp := j.Spec
	var who []string
	if sp.DeviceType != "" {
		who = append(who, "every device of type "+sp.DeviceType)
	}
	if len(sp.Devices) > 0 {
		who = append(who, fmt.Sprintf("%d named devices", len(sp.Devices)))
	}
	if len(who) > 0 {
		s += " for " + strings.Join(who, " and ")
	}
	s += fmt.Sprintf("; gate %s, max failure %s then %s", percent(sp.Gate), percent(sp.MaxFailure), sp.OnFailure)
	if sp.CELGate != "" {
		s += "; CEL gate " + sp.CELGate
	}
	return s
}

func (f *reportFold) alert(e events.Event) error {
	var d events.AlertData
	if err := e.DecodeData(&d); err != nil {
		return err
	}
	k := [2]string{d.RuleID, d.Severity}
	a := f.alerts[k]
	if a == nil {
		a = &AlertCount{RuleID: d.RuleID, Severity: d.Severity}
		f.alerts[k] = a
	}
	if e.Type == events.TypeAlertResolved {
		a.Resolved++
	} else {
		a.Raised++
	}
	return nil
}

func (f *reportFold) notification(m consume.Msg, e events.Event) error {
	act := ReportAction{Time: e.Time, Stream: events.StreamNotify, Seq: m.Seq}
	switch e.Type {
	case events.TypeSilenceCreated:
		var d events.SilenceData
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		act.Actor, act.Action, act.Object = d.CreatedBy, "created", "silence "+d.ID
		act.Detail = fmt.Sprintf("%s from %s to %s", strings.Join(d.Matchers, ", "),
			d.StartsAt.UTC().Format(time.RFC3339), d.EndsAt.UTC().Format(time.RFC3339))
		if d.Comment != "" {
			act.Detail += ": " + d.Comment
		}
	case events.TypeSilenceExpired:
		var d events.SilenceExpiredData
		if err := e.DecodeData(&d); err != nil {
			return err
		}
		act.Actor, act.Action, act.Object = d.By, "expired", "silence "+d.ID
	default:
		receiver, outcome, ok := events.ParseNotifySubject(m.Subject)
		if !ok {
			return fmt.Errorf("subject %q is not notify.{receiver}.{outcome}", m.Subject)
		}
		n := f.notify[receiver]
		if n == nil {
			n = &NotifyCount{Receiver: receiver}
			f.notify[receiver] = n
		}
		switch outcome {
		case events.NotifyAttempt:
			n.Attempts++
		case events.NotifySent:
			n.Sent++
		case events.NotifyFailed:
			n.Failed++
		case events.NotifySuppressed:
			n.Suppressed++
		}
		return nil
	}
	if act.Actor == "" {
		act.Actor = actorUnknown
	}
	f.r.Actions = append(f.r.Actions, act)
	return nil
}

// finish sorts what the fold gathered into the report.
func (f *reportFold) finish(points int) {
	r := f.r
	r.Reports.Devices = len(f.reporters)
	r.Fleet = f.st.Metrics()
	for _, ec := range f.failures {
		r.Failures = append(r.Failures, *ec)
	}
	sort.Slice(r.Failures, func(a, b int) bool {
		if r.Failures[a].Reports != r.Failures[b].Reports {
			return r.Failures[a].Reports > r.Failures[b].Reports
		}
		return r.Failures[a].Code < r.Failures[b].Code
	})
	for _, j := range f.jobs {
		if !j.inRange {
			continue
		}
		c := f.jobReports[j.ID]
		j.Completed, j.Failed = c[0], c[1]
		r.Rollouts = append(r.Rollouts, j)
	}
	sort.Slice(r.Rollouts, func(a, b int) bool {
		if !r.Rollouts[a].CreatedAt.Equal(r.Rollouts[b].CreatedAt) {
			return r.Rollouts[a].CreatedAt.Before(r.Rollouts[b].CreatedAt)
		}
		return r.Rollouts[a].ID < r.Rollouts[b].ID
	})
	sort.SliceStable(r.Actions, func(a, b int) bool { return r.Actions[a].Time.Before(r.Actions[b].Time) })
	for _, a := range f.alerts {
		r.Alerts = append(r.Alerts, *a)
	}
	sort.Slice(r.Alerts, func(a, b int) bool {
		if r.Alerts[a].RuleID != r.Alerts[b].RuleID {
			return r.Alerts[a].RuleID < r.Alerts[b].RuleID
		}
		return r.Alerts[a].Severity < r.Alerts[b].Severity
	})
	for _, n := range f.notify {
		r.Notifications = append(r.Notifications, *n)
	}
	sort.Slice(r.Notifications, func(a, b int) bool { return r.Notifications[a].Receiver < r.Notifications[b].Receiver })
	for name, n := range f.rejected {
		r.Rejected = append(r.Rejected, NameCount{name, n})
	}
	sort.Slice(r.Rejected, func(a, b int) bool { return r.Rejected[a].Name < r.Rejected[b].Name })
	r.Versions = versionSeries(f.initial, f.changes, f.spanFrom, f.spanTo, points)
}
