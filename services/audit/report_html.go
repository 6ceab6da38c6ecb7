package audit

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
)

// reportTemplate is the page: one self-contained HTML file (inline CSS and
// SVG, no script, nothing fetched), so it can be archived, mailed and
// printed as it is. html/template escapes everything that comes from
// events (device ids, actors, reasons, error codes): they are input from
// devices and operators.
//
//go:embed report.html.tmpl
var reportTemplate string

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"ts":       formatTime,
	"rfc3339":  func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"pct":      percent,
	"rate":     rate,
	"gate":     describeGate,
	"progress": describeProgress,
	"statusOf": chainStatus,
}).Parse(reportTemplate))

// reportView is what the template reads: the report and its chart laid
// out.
type reportView struct {
	*ComplianceReport
	Chart *chartSVG
	// Result is every stream's chain check together.
	Result string
}

// WriteHTML renders the report as one self-contained HTML page.
func (r *ComplianceReport) WriteHTML(w io.Writer) error {
	v := reportView{ComplianceReport: r, Chart: layoutChart(r.Versions), Result: r.ChainResult()}
	if err := reportPage.Execute(w, v); err != nil {
		return fmt.Errorf("render the report: %w", err)
	}
	return nil
}

// ChainResult is the streams' chain checks together: fail if one failed,
// incomplete if one is, else pass.
func (r *ComplianceReport) ChainResult() string {
	res := ChainPass
	for _, c := range r.Chains {
		switch {
		case c.Result == ChainFail:
			return ChainFail
		case c.Result == ChainIncomplete:
			res = ChainIncomplete
		}
	}
	return res
}

func chainStatus(result string) string {
	switch result {
	case ChainPass:
		return "PASS"
	case ChainFail:
		return "FAIL"
	}
	return "INCOMPLETE"
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func percent(f float64) string {
	return strings.TrimSuffix(strings.TrimSuffix(fmt.Sprintf("%.1f", 100*f), "0"), ".") + "%"
}

// rate is completed / (completed + failed) as a percentage, or "—".
func rate(completed, failed int) string {
	if completed+failed == 0 {
		return "—"
	}
	return percent(float64(completed) / float64(completed+failed))
}

func describeGate(g *events.GateDecision) string {
	if g == nil {
		return "—"
	}
	s := fmt.Sprintf("passed: %d of %d online completed, %d required", g.Completed, g.Online, g.Required)
	if !g.Passed {
		s = fmt.Sprintf("not passed: %d of %d online completed, %d required", g.Completed, g.Online, g.Required)
	}
	if g.CEL != nil {
		s += fmt.Sprintf("; CEL gate %t", *g.CEL)
	}
	return s
}

func describeProgress(p *events.WaveProgress) string {
	if p == nil {
		return "—"
	}
	var parts []string
	for _, f := range []struct {
		n    int
		name string
	}{{p.Completed, "completed"}, {p.Failed, "failed"}, {p.TimedOut, "timed out"}, {p.Offline, "offline"},
		{p.InProgress, "in progress"}, {p.Pending, "pending"}, {p.Queued, "queued"}} {
		if f.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", f.n, f.name))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
