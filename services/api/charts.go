package api

import (
	"math"
	"sort"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// The dashboard's charts are drawn by the page from these: the server does
// the counting (it has every device; the page has one snapshot) and the
// page only scales and draws.

// maxTimelines bounds the jobs whose timeline a snapshot carries: the
// newest, which are the ones an operator looks at.
const maxTimelines = 10

// maxVersions bounds the firmware versions of the versions chart; the rest
// are summed under versionOther.
const maxVersions = 12

// versionOther labels the devices on versions past maxVersions.
const versionOther = "other"

// histogramBins is the most bins the duration histogram has; its width is
// the smallest of histogramWidths that fits the slowest update in it.
const histogramBins = 24

// histogramWidths are the bin widths, in seconds, that read well on an
// axis.
var histogramWidths = []float64{1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400}

// durationHistogram is the update durations of one job's devices that
// finished (their latest finished report since the job's desired state),
// completed and failed counted apart, in bins of Width seconds from 0:
// bin i holds durations in (i*Width, (i+1)*Width], bin 0 also 0.
type durationHistogram struct {
	JobID string `json:"jobId"`
	// Width is the bin width in seconds.
	Width     float64 `json:"width"`
	Completed []int   `json:"completed"`
	Failed    []int   `json:"failed"`
	// Count is the devices in the bins; Avg and Max their mean and longest
	// duration in seconds.
	Count int     `json:"count"`
	Avg   float64 `json:"avg"`
	Max   float64 `json:"max"`
}

// versionCount is how many devices last reported a firmware version.
type versionCount struct {
	Version string `json:"version"`
	Devices int    `json:"devices"`
	// Target marks the active job's target version.
	Target bool `json:"target,omitempty"`
}

// jobTimeline is a job's waves against time, from its ROLLOUT events.
type jobTimeline struct {
	JobID    string    `json:"jobId"`
	Created  time.Time `json:"created"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// WaveCount is the plan's waves (0 before the job starts).
	WaveCount int        `json:"waveCount"`
	Waves     []waveSpan `json:"waves"`
	// Marks are the job's pauses, resumes, abort and completion.
	Marks []timelineMark `json:"marks"`
}

// waveSpan is one wave on the timeline: open from Started, its gate passed
// at Gated, done at Completed (after the soak). A zero time has not
// happened yet.
type waveSpan struct {
	Wave       int       `json:"wave"`
	Started    time.Time `json:"started,omitzero"`
	Gated      time.Time `json:"gated,omitzero"`
	GateReason string    `json:"gateReason,omitempty"`
	Completed  time.Time `json:"completed,omitzero"`
}

// timelineMark is a job event drawn as a marker on the timeline.
type timelineMark struct {
	Time time.Time `json:"time"`
	// Event is paused, resumed, aborted or completed.
	Event  string `json:"event"`
	Reason string `json:"reason,omitempty"`
	Actor  string `json:"actor,omitempty"`
}

// timelines folds ROLLOUT events into the jobs' timelines. It lives in the
// model and is written under its lock.
type timelines map[string]*jobTimeline

// apply folds one rollout event (name as events.RolloutEventName gives it)
// at time at.
func (tl timelines) apply(name string, d events.RolloutData, at time.Time) {
	j := tl[d.JobID]
	if j == nil {
		j = &jobTimeline{JobID: d.JobID, Created: at}
		tl[d.JobID] = j
	}
	span := func() *waveSpan {
		if d.Wave < 1 || d.Wave > 10000 {
			return nil // the rollout service bounds waves far below this
		}
		for len(j.Waves) < d.Wave {
			j.Waves = append(j.Waves, waveSpan{Wave: len(j.Waves) + 1})
		}
		return &j.Waves[d.Wave-1]
	}
	mark := func(event string) {
		j.Marks = append(j.Marks, timelineMark{Time: at, Event: event, Reason: d.Reason, Actor: d.Actor})
	}
	switch name {
	case "job_created":
		j.Created = at
	case "job_started":
		j.Started = at
		if d.Plan != nil {
			j.WaveCount = len(d.Plan.Waves)
		}
	case "job_paused":
		mark("paused")
	case "job_resumed":
		mark("resumed")
	case "job_aborted":
		j.Finished = at
		mark("aborted")
	case "job_completed":
		j.Finished = at
		mark("completed")
	case "wave_started":
		if w := span(); w != nil {
			w.Started = at
		}
	case "wave_gated":
		if w := span(); w != nil {
			w.Gated = at
			w.GateReason = d.Reason
			if d.Gate != nil && d.Gate.Reason != "" {
				w.GateReason = d.Gate.Reason
			}
		}
	case "wave_completed":
		if w := span(); w != nil {
			w.Completed = at
		}
	}
}

// recent returns copies of the timelines of the jobs in order (newest
// first), at most maxTimelines.
func (tl timelines) recent(jobs []jobView) []jobTimeline {
	out := []jobTimeline{}
	for _, j := range jobs {
		if len(out) == maxTimelines {
			break
		}
		if t := tl[j.JobID]; t != nil {
			c := *t
			c.Waves = append([]waveSpan(nil), t.Waves...)
			c.Marks = append([]timelineMark(nil), t.Marks...)
			out = append(out, c)
		}
	}
	return out
}

// activeJob picks the job the charts follow from jobs (newest first): the
// newest running one, else the newest paused one, else the newest.
func activeJob(jobs []jobView) *jobView {
	for _, status := range []string{events.RolloutRunning, events.RolloutPaused} {
		for i := range jobs {
			if jobs[i].Status == status {
				return &jobs[i]
			}
		}
	}
	if len(jobs) > 0 {
		return &jobs[0]
	}
	return nil
}

// chartData is what one pass over the devices gives the charts.
type chartData struct {
	durations *durationHistogram
	versions  []versionCount
}

// charts counts the devices per reported firmware version and, for job
// (none when empty), the update durations of its finished devices. One pass
// over the fleet: O(devices) per dashboard build, which is at most one per
// http.dashboard_refresh (BenchmarkDashboardCharts measures it).
func charts(st *fleet.State, job, target string) chartData {
	versions := map[string]int{}
	var durs, fails []float64
	st.Devices(func(d *fleet.Device) {
		if d.Reports > 0 && d.Version != "" {
			versions[d.Version]++
		}
		if job == "" || d.JobID != job {
			return
		}
		switch d.JobStatus {
		case fleet.JobCompleted:
			durs = append(durs, d.Duration)
		case fleet.JobFailed:
			fails = append(fails, d.Duration)
		}
	})
	out := chartData{versions: rankVersions(versions, target)}
	if job != "" {
		out.durations = histogram(job, durs, fails)
	}
	return out
}

// rankVersions orders versions by devices (most first, then by name) and
// sums those past maxVersions under versionOther.
func rankVersions(counts map[string]int, target string) []versionCount {
	out := sortVersions(counts, target)
	if len(out) > maxVersions {
		rest := versionCount{Version: versionOther}
		for _, v := range out[maxVersions-1:] {
			rest.Devices += v.Devices
		}
		out = append(out[:maxVersions-1], rest)
	}
	return out
}

// sortVersions orders versions by devices, most first, then by name.
func sortVersions(counts map[string]int, target string) []versionCount {
	out := make([]versionCount, 0, len(counts))
	for v, n := range counts {
		out = append(out, versionCount{Version: v, Devices: n, Target: v == target && target != ""})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Devices != out[j].Devices {
			return out[i].Devices > out[j].Devices
		}
		return out[i].Version < out[j].Version
	})
	return out
}

// histogram bins completed and failed durations (seconds) with a common
// width.
func histogram(job string, completed, failed []float64) *durationHistogram {
	h := &durationHistogram{JobID: job, Width: histogramWidths[0], Completed: []int{}, Failed: []int{}}
	sum := 0.0
	for _, list := range [][]float64{completed, failed} {
		for _, v := range list {
			v = max(v, 0)
			h.Max = max(h.Max, v)
			sum += v
			h.Count++
		}
	}
	if h.Count == 0 {
		return h
	}
	h.Avg = sum / float64(h.Count)
	for _, w := range histogramWidths {
		h.Width = w
		if h.Max <= w*histogramBins {
			break
		}
	}
	n := max(1, int(math.Ceil(h.Max/h.Width)))
	if n > histogramBins {
		n = histogramBins // longer than the widest bins: the last one holds them
	}
	h.Completed, h.Failed = make([]int, n), make([]int, n)
	bin := func(v float64) int {
		i := int(math.Ceil(v/h.Width)) - 1
		return min(max(i, 0), n-1)
	}
	for _, v := range completed {
		h.Completed[bin(v)]++
	}
	for _, v := range failed {
		h.Failed[bin(v)]++
	}
	return h
}
