package audit

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// VersionSeries is the devices per running firmware version at evenly
// spaced instants of the range (by event time): a device counts under the
// version of its last completed report, or the version it updates from
// while an update is in progress or after one failed.
type VersionSeries struct {
	Times []time.Time
	// Versions are the series, the bottom of the stack first (oldest
	// version first, versionOther below them all); Counts[v][i] is the
	// devices on Versions[v] at Times[i].
	Versions []string
	Counts   [][]int
	// Other are the versions summed under versionOther.
	Other []string
}

// maxChartVersions bounds the chart's series; the versions with the fewest
// devices at their peak are summed under versionOther.
const maxChartVersions = 8

// versionOther labels the devices of versions past maxChartVersions.
const versionOther = "other"

// versionSeries samples initial (the devices per version when the range
// began) plus changes (in stream order) at points instants from from to
// to. The first instant shows initial.
func versionSeries(initial map[string]int, changes []versionChange, from, to time.Time, points int) VersionSeries {
	var vs VersionSeries
	if initial == nil || from.IsZero() {
		return vs
	}
	if !to.After(from) {
		to = from.Add(time.Second)
	}
	sort.SliceStable(changes, func(a, b int) bool { return changes[a].at.Before(changes[b].at) })
	cur := map[string]int{}
	names := map[string]bool{}
	for v, n := range initial {
		cur[v] = n
		names[v] = true
	}
	for _, c := range changes {
		names[c.to] = true
	}
	series := map[string][]int{}
	for v := range names {
		series[v] = make([]int, points)
	}
	vs.Times = make([]time.Time, points)
	k := 0
	for i := range vs.Times {
		t := from.Add(time.Duration(float64(to.Sub(from)) * float64(i) / float64(points-1)))
		if i == points-1 {
			t = to
		}
		vs.Times[i] = t
		for i > 0 && k < len(changes) && !changes[k].at.After(t) {
			if changes[k].from != "" {
				cur[changes[k].from]--
			}
			cur[changes[k].to]++
			k++
		}
		for v, s := range series {
			s[i] = cur[v]
		}
	}
	type ranked struct {
		v    string
		peak int
	}
	var rank []ranked
	for v, s := range series {
		peak := 0
		for _, n := range s {
			peak = max(peak, n)
		}
		if peak > 0 {
			rank = append(rank, ranked{v, peak})
		}
	}
	sort.Slice(rank, func(a, b int) bool {
		if rank[a].peak != rank[b].peak {
			return rank[a].peak > rank[b].peak
		}
		return compareVersions(rank[a].v, rank[b].v) < 0
	})
	var other []int
	if len(rank) > maxChartVersions {
		other = make([]int, points)
		for _, r := range rank[maxChartVersions-1:] {
			vs.Other = append(vs.Other, r.v)
			for i, n := range series[r.v] {
				other[i] += n
			}
		}
		sort.Slice(vs.Other, func(a, b int) bool { return compareVersions(vs.Other[a], vs.Other[b]) < 0 })
		rank = rank[:maxChartVersions-1]
	}
	sort.Slice(rank, func(a, b int) bool { return compareVersions(rank[a].v, rank[b].v) < 0 })
	if other != nil {
		vs.Versions, vs.Counts = append(vs.Versions, versionOther), append(vs.Counts, other)
	}
	for _, r := range rank {
		vs.Versions, vs.Counts = append(vs.Versions, r.v), append(vs.Counts, series[r.v])
	}
	return vs
}

// compareVersions orders version strings the way people read them: runs
// of digits by value ("4.10.0" after "4.9.2"), the rest as text.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		ra, rb := leadingRun(a), leadingRun(b)
		na, ea := strconv.ParseUint(ra, 10, 64)
		nb, eb := strconv.ParseUint(rb, 10, 64)
		switch {
		case ea == nil && eb == nil && na != nb:
			if na < nb {
				return -1
			}
			return 1
		case (ea != nil || eb != nil) && ra != rb:
			return strings.Compare(ra, rb)
		}
		a, b = a[len(ra):], b[len(rb):]
	}
	return strings.Compare(a, b)
}

// leadingRun is s's first run of digits, or of non-digits.
func leadingRun(s string) string {
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	i := 1
	for i < len(s) && digit(s[i]) == digit(s[0]) {
		i++
	}
	return s[:i]
}

// chartSVG is the versions chart laid out for the page's inline SVG: a
// stacked area per version, axes with ticks and labels, and a legend.
type chartSVG struct {
	Width, Height            int
	Left, Top, Right, Bottom float64
	// TickEnd is where an x tick ends below the axis; MidY the plot's
	// middle, where the y axis' label is.
	TickEnd, MidY  float64
	Areas          []chartArea
	XTicks, YTicks []chartTick
	XLabel, YLabel string
	LegendX        float64
}

// chartArea is one version's band of the stack.
type chartArea struct {
	Version string
	Color   string
	D       string
	// Last is its devices at the end of the range, Peak its most.
	Last, Peak int
	// LegendY is the legend entry's position.
	LegendY float64
}

type chartTick struct {
	Pos   float64
	Label string
}

// chartColors are the series' colours (Tableau 10), versionOther grey.
var chartColors = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"}

const chartOtherColor = "#bab0ac"

// layoutChart lays the series out in a width x height box.
func layoutChart(vs VersionSeries) *chartSVG {
	if len(vs.Times) < 2 || len(vs.Versions) == 0 {
		return nil
	}
	c := &chartSVG{Width: 960, Height: 380, Left: 64, Top: 16, Right: 740, Bottom: 320, YLabel: "devices", LegendX: 760}
	c.TickEnd, c.MidY = c.Bottom+5, (c.Top+c.Bottom)/2
	n := len(vs.Times)
	totals := make([]int, n)
	for _, s := range vs.Counts {
		for i, v := range s {
			totals[i] += v
		}
	}
	top := 0
	for _, t := range totals {
		top = max(top, t)
	}
	step, ymax := niceScale(top, 5)
	t0, t1 := vs.Times[0], vs.Times[n-1]
	span := t1.Sub(t0)
	x := func(t time.Time) float64 {
		return c.Left + (c.Right-c.Left)*float64(t.Sub(t0))/float64(span)
	}
	y := func(v int) float64 { return c.Bottom - (c.Bottom-c.Top)*float64(v)/float64(ymax) }
	for v := 0; v <= ymax; v += step {
		c.YTicks = append(c.YTicks, chartTick{y(v), strconv.Itoa(v)})
	}
	every, layout := timeStep(span)
	for t := t0.Truncate(every); !t.After(t1); t = t.Add(every) {
		if t.Before(t0) {
			continue
		}
		c.XTicks = append(c.XTicks, chartTick{x(t), t.UTC().Format(layout)})
	}
	full := "2006-01-02 15:04:05"
	if span < time.Minute {
		full += ".000"
	}
	c.XLabel = fmt.Sprintf("time (UTC, event time) from %s to %s", t0.UTC().Format(full), t1.UTC().Format(full))
	lower := make([]int, n)
	for s, counts := range vs.Counts {
		var b strings.Builder
		for i := range counts {
			cmd := "L"
			if i == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&b, "%s%.1f,%.1f ", cmd, x(vs.Times[i]), y(lower[i]+counts[i]))
		}
		for i := n - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "L%.1f,%.1f ", x(vs.Times[i]), y(lower[i]))
		}
		b.WriteString("Z")
		a := chartArea{Version: vs.Versions[s], D: b.String(), Last: counts[n-1]}
		for i, v := range counts {
			a.Peak = max(a.Peak, v)
			lower[i] += v
		}
		a.Color = chartColors[s%len(chartColors)]
		if a.Version == versionOther && len(vs.Other) > 0 {
			a.Color = chartOtherColor
		}
		c.Areas = append(c.Areas, a)
	}
	// The legend reads top down like the stack.
	for i := range c.Areas {
		c.Areas[i].LegendY = c.Top + 8 + 22*float64(len(c.Areas)-1-i)
	}
	return c
}

// niceScale is a tick step of 1, 2 or 5 times a power of ten that divides
// 0..top into at most ticks steps, and the axis top, a multiple of it.
func niceScale(top, ticks int) (step, axisTop int) {
	if top <= 0 {
		return 1, 1
	}
	for p := 1; ; p *= 10 {
		for _, m := range []int{1, 2, 5} {
			if s := m * p; int(math.Ceil(float64(top)/float64(s))) <= ticks {
				return s, s * int(math.Ceil(float64(top)/float64(s)))
			}
		}
	}
}

// timeSteps are the x axis' tick intervals, with the label layout each
// reads well in.
var timeSteps = []struct {
	d      time.Duration
	layout string
}{
	{time.Millisecond, "15:04:05.000"}, {2 * time.Millisecond, "15:04:05.000"}, {5 * time.Millisecond, "15:04:05.000"},
	{10 * time.Millisecond, "15:04:05.00"}, {20 * time.Millisecond, "15:04:05.00"}, {50 * time.Millisecond, "15:04:05.00"},
	{100 * time.Millisecond, "15:04:05.0"}, {200 * time.Millisecond, "15:04:05.0"}, {500 * time.Millisecond, "15:04:05.0"},
	{time.Second, "15:04:05"}, {2 * time.Second, "15:04:05"}, {5 * time.Second, "15:04:05"}, {10 * time.Second, "15:04:05"},
	{15 * time.Second, "15:04:05"}, {30 * time.Second, "15:04:05"}, {time.Minute, "15:04"}, {2 * time.Minute, "15:04"},
	{5 * time.Minute, "15:04"}, {10 * time.Minute, "15:04"}, {15 * time.Minute, "15:04"}, {30 * time.Minute, "15:04"},
	{time.Hour, "15:04"}, {2 * time.Hour, "15:04"}, {3 * time.Hour, "01-02 15:04"}, {6 * time.Hour, "01-02 15:04"},
	{12 * time.Hour, "01-02 15:04"}, {24 * time.Hour, "2006-01-02"}, {2 * 24 * time.Hour, "2006-01-02"},
	{7 * 24 * time.Hour, "2006-01-02"}, {14 * 24 * time.Hour, "2006-01-02"}, {30 * 24 * time.Hour, "2006-01-02"},
	{91 * 24 * time.Hour, "2006-01-02"}, {365 * 24 * time.Hour, "2006-01-02"},
}

// timeStep is the shortest tick interval that puts at most 7 ticks on
// span, and its label layout.
func timeStep(span time.Duration) (time.Duration, string) {
	for _, s := range timeSteps {
		if span/s.d <= 7 {
			return s.d, s.layout
		}
	}
	last := timeSteps[len(timeSteps)-1]
	return span / 7, last.layout
}
