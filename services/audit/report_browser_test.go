package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium is the browser the report is looked at with: $OTAWATCH_CHROMIUM
// or one on the PATH (FindChromium). Without one the test is skipped,
// unless CI is set (scripts/install-deps installs the Debian package).
func chromium(t *testing.T) string {
	t.Helper()
	p, err := FindChromium(os.Getenv("OTAWATCH_CHROMIUM"))
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal(err)
	}
	t.Skip(err)
	return ""
}

// lookAtReport opens the report file in a headless Chromium and checks it
// renders: the chart has one area per version (versions, bottom first)
// and a legend entry each, the page has a height, the chain table a row
// per stream. It saves a full-page screenshot in dir and, for a person to
// look at, at $OTAWATCH_REPORT_SCREENSHOT (default /tmp/otw-report.png).
// It then prints the page to PDF as "otawatch audit report --pdf" does.
func lookAtReport(t *testing.T, name, dir string, versions []string) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.Headless,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1200, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+name), chromedp.WaitVisible(chromedp.CSS("#versions-chart"))); err != nil {
		t.Fatalf("open the report in chromium: %v", err)
	}
	eval := func(expr string, v any) {
		t.Helper()
		var err error
		switch v := v.(type) {
		case *[]string:
			*v, err = chromedp.Run(ctx, chromedp.Evaluate[[]string](expr))
		case *float64:
			*v, err = chromedp.Run(ctx, chromedp.Evaluate[float64](expr))
		}
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
	}
	var series, legend []string
	var height, chartHeight, chainRows float64
	eval(`[...document.querySelectorAll('#versions-chart path.series')].map(p => p.dataset.version)`, &series)
	eval(`[...document.querySelectorAll('#versions-chart .legend text')].map(e => e.textContent.split(':')[0])`, &legend)
	eval(`document.documentElement.scrollHeight`, &height)
	eval(`document.querySelector('#versions-chart').getBoundingClientRect().height`, &chartHeight)
	eval(`document.querySelectorAll('#chains tbody tr[id^=chain-]').length`, &chainRows)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if !reflect.DeepEqual(series, versions) {
		t.Errorf("chart series %q, want %q", series, versions)
	}
	if !reflect.DeepEqual(legend, versions) {
		t.Errorf("legend %q, want %q", legend, versions)
	}
	if height < 900 || chartHeight < 200 || chainRows != 5 {
		t.Errorf("page height %.0f px, chart %.0f px, %.0f chain rows", height, chartHeight, chainRows)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("the screenshot is not a PNG")
	}
	for _, out := range []string{filepath.Join(dir, "report.png"), screenshotFile()} {
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot: %s (%d bytes), page height %.0f px", screenshotFile(), len(png), height)

	pdf := filepath.Join(dir, "report.pdf")
	if err := PrintPDF(context.Background(), chromium(t), name, pdf); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pdf)
	if err != nil || !bytes.HasPrefix(b, []byte("%PDF-")) || len(b) < 10000 {
		t.Fatalf("PDF: %d bytes, %v", len(b), err)
	}
}

func screenshotFile() string {
	if p := os.Getenv("OTAWATCH_REPORT_SCREENSHOT"); p != "" {
		return p
	}
	return "/tmp/otw-report.png"
}
