package app

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/otawatch/otawatch/services/audit"
)

// cmdAuditReport is "otawatch audit report": the compliance report of a
// range as one self-contained HTML page, and a PDF of it when Chromium is
// installed.
func cmdAuditReport(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(env, "audit report")
	var (
		lf       = addLogFlags(fs, "nats.*")
		from     = fs.String("from", "", "first stored `TIME` (RFC 3339, or YYYY-MM-DD in UTC)")
		to       = fs.String("to", "", "last stored `TIME` (RFC 3339, or YYYY-MM-DD in UTC)")
		out      = fs.String("out", "", "the report's HTML `FILE`")
		pdf      = fs.String("pdf", "", "also print the report to this PDF `FILE` (needs Chromium)")
		chromium = fs.String("chromium", os.Getenv("OTAWATCH_CHROMIUM"), "the Chromium `COMMAND` that prints the PDF (default: chromium on the PATH)")
		every    = fs.Duration("progress", time.Second, "print a progress line this often on stderr")
	)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	o := audit.ReportOptions{ProgressEvery: *every, Progress: func(s string) { fmt.Fprintln(env.Stderr, s) }}
	var err error
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	case *out == "":
		return fmt.Errorf("%w: --out FILE.html is required", ErrUsage)
	}
	if o.From, o.To, err = parseRange(*from, *to); err != nil {
		return err
	}
	_, nc, js, err := lf.connect(env, "otawatch audit report")
	if err != nil {
		return err
	}
	defer nc.Close()
	o.Generator, o.Source = "otawatch audit report"+buildVersion(), nc.ConnectedUrlRedacted()

	began := time.Now()
	r, err := audit.BuildReport(ctx, js, o)
	if err != nil {
		return err
	}
	var page bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		return err
	}
	if err := writeFileAtomic(*out, page.Bytes()); err != nil {
		return err
	}
	var events uint64
	var chains []string
	for _, c := range r.Chains {
		events += c.Events
		chains = append(chains, c.Stream+" "+c.Result)
	}
	fmt.Fprintf(env.Stdout, "wrote %s (%d bytes) in %s: %d events, %d rollouts, %d reports (%d failed), %d actions\n",
		*out, page.Len(), time.Since(began).Round(time.Millisecond), events, len(r.Rollouts), r.Reports.Total, r.Reports.Failed, len(r.Actions))
	fmt.Fprintf(env.Stdout, "hash chain: %s (%s)\n", strings.ToUpper(r.ChainResult()), strings.Join(chains, ", "))
	var pdfErr error
	if *pdf != "" {
		pdfErr = printReportPDF(ctx, env, *chromium, *out, *pdf)
	}
	if r.ChainResult() == audit.ChainFail {
		return fmt.Errorf("the hash-chain check failed (the report says where): %s", *out)
	}
	return pdfErr
}

// printReportPDF prints the report to pdf with Chromium, or says why it
// cannot; the HTML is written either way.
func printReportPDF(ctx context.Context, env *Env, chromium, html, pdf string) error {
	path, err := audit.FindChromium(chromium)
	if err != nil {
		return fmt.Errorf("no PDF: %v; the HTML report is %s (open it in a browser and print it)", err, html)
	}
	fmt.Fprintf(env.Stderr, "report: printing %s with %s\n", pdf, path)
	if err := audit.PrintPDF(ctx, path, html, pdf); err != nil {
		return fmt.Errorf("no PDF: %w; the HTML report is %s", err, html)
	}
	st, err := os.Stat(pdf)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "wrote %s (%d bytes)\n", pdf, st.Size())
	return nil
}

// writeFileAtomic writes name through a temporary file in its directory,
// so a failed write leaves no half file.
func writeFileAtomic(name string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	if _, err = f.Write(b); err == nil {
		err = f.Close()
	} else {
		f.Close()
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// buildVersion is " (MODULE_VERSION, commit REV)" from the binary's build
// information, or "" when there is none.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var parts []string
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		parts = append(parts, v)
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			parts = append(parts, "commit "+s.Value[:12])
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
