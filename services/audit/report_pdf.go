package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ErrNoChromium is returned by FindChromium when no browser is installed.
var ErrNoChromium = errors.New("no Chromium found")

// chromiumNames are the commands FindChromium looks for on the PATH.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// FindChromium returns the browser that prints reports to PDF: override
// when set (OTAWATCH_CHROMIUM), else the first of chromiumNames on the
// PATH.
func FindChromium(override string) (string, error) {
	if override != "" {
		p, err := exec.LookPath(override)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrNoChromium, err)
		}
		return p, nil
	}
	for _, name := range chromiumNames {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w (looked for %s on the PATH; set OTAWATCH_CHROMIUM to a browser)", ErrNoChromium, strings.Join(chromiumNames, ", "))
}

// PrintPDF prints the HTML file to a PDF file with a headless Chromium
// (chromium --headless --print-to-pdf), without the browser's header and
// footer. The browser gets a profile of its own, removed afterwards, so
// it never meets another instance's.
func PrintPDF(ctx context.Context, chromium, htmlFile, pdfFile string) error {
	src, err := filepath.Abs(htmlFile)
	if err != nil {
		return err
	}
	dst, err := filepath.Abs(pdfFile)
	if err != nil {
		return err
	}
	profile, err := os.MkdirTemp("", "otawatch-pdf-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(profile)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// --no-sandbox: the sandbox cannot start as root (containers, CI);
	// the page is a local file without a script.
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
		"--user-data-dir="+profile, "--print-to-pdf="+dst, "file://"+src)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = os.Remove(dst)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s --print-to-pdf: %v: %s", chromium, err, lastLines(out.String(), 5))
	}
	if st, err := os.Stat(dst); err != nil || st.Size() == 0 {
		return fmt.Errorf("%s --print-to-pdf wrote no PDF: %s", chromium, lastLines(out.String(), 5))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
