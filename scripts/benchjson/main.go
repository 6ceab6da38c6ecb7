// Command benchjson reads the output of "go test -bench" runs (as
// scripts/bench all collects it) and writes the results as JSON, and a
// table a person can read to stderr.
//
//	scripts/bench all runs it; by hand:
//	go run ./scripts/benchjson -target ingest < bench.log > bench.json
//
// Input lines that are not benchmark results are skipped, except the
// "== target NAME" markers scripts/bench all writes between targets and the
// "goos:", "goarch:", "cpu:" and "pkg:" headers go test prints.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Report is the JSON document: where and when it ran, and every result.
type Report struct {
	Date    time.Time `json:"date"`
	GOOS    string    `json:"goos,omitempty"`
	GOARCH  string    `json:"goarch,omitempty"`
	CPU     string    `json:"cpu,omitempty"`
	NumCPU  int       `json:"num_cpu"`
	Results []Result  `json:"results"`
}

// Result is one benchmark line: its name (with sub-benchmark path, without
// the -GOMAXPROCS suffix), the package and scripts/bench target it ran in,
// the iteration count and every metric by unit.
type Result struct {
	Target     string             `json:"target,omitempty"`
	Package    string             `json:"package,omitempty"`
	Name       string             `json:"name"`
	Procs      int                `json:"procs,omitempty"`
	Iterations int64              `json:"iterations"`
	Metrics    map[string]float64 `json:"metrics"`
	// Units keeps the metrics in the order the benchmark reported them.
	Units []string `json:"units"`
}

func main() {
	target := flag.String("target", "", "target name for results before the first '== target' marker")
	flag.Parse()
	rep, err := Parse(os.Stdin, *target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchjson:", err)
		os.Exit(1)
	}
	rep.Date = time.Now().UTC().Truncate(time.Second)
	rep.NumCPU = runtime.NumCPU()
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, "benchjson:", err)
		os.Exit(1)
	}
	WriteTable(os.Stderr, rep)
}

// Parse reads go test -bench output. A malformed benchmark line (a name
// followed by something that is not an iteration count and value/unit
// pairs) is an error naming the line, so a table never silently misses a
// result.
func Parse(r io.Reader, target string) (*Report, error) {
	rep := &Report{Results: []Result{}}
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "== target "):
			target = strings.TrimSpace(strings.TrimPrefix(line, "== target "))
			continue
		case strings.HasPrefix(line, "goos: "):
			rep.GOOS = strings.TrimPrefix(line, "goos: ")
			continue
		case strings.HasPrefix(line, "goarch: "):
			rep.GOARCH = strings.TrimPrefix(line, "goarch: ")
			continue
		case strings.HasPrefix(line, "cpu: "):
			rep.CPU = strings.TrimPrefix(line, "cpu: ")
			continue
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(line, "pkg: ")
			continue
		case !strings.HasPrefix(line, "Benchmark"):
			continue
		}
		f := strings.Fields(line)
		// "BenchmarkX-2" alone on a line is the name go test prints before a
		// benchmark's own log output; its result line comes later.
		if len(f) < 2 {
			continue
		}
		iters, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			// A log line that happens to start with "Benchmark".
			continue
		}
		if len(f)%2 != 0 {
			return nil, fmt.Errorf("line %d: %q: values and units do not pair up", n, line)
		}
		res := Result{Target: target, Package: pkg, Iterations: iters, Metrics: map[string]float64{}}
		res.Name, res.Procs = splitProcs(f[0])
		for i := 2; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %q: value %q is not a number", n, line, f[i])
			}
			unit := f[i+1]
			if _, dup := res.Metrics[unit]; !dup {
				res.Units = append(res.Units, unit)
			}
			res.Metrics[unit] = v
		}
		rep.Results = append(rep.Results, res)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return rep, nil
}

// splitProcs splits "BenchmarkX/sub-2" into "BenchmarkX/sub" and 2.
func splitProcs(name string) (string, int) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name, 0
	}
	p, err := strconv.Atoi(name[i+1:])
	if err != nil {
		return name, 0
	}
	return name[:i], p
}

// WriteTable prints one row per metric: target, benchmark, metric, value.
func WriteTable(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "| target | benchmark | metric | value |\n|---|---|---|---|\n")
	for _, r := range rep.Results {
		for _, u := range r.Units {
			if u == "ns/op" && len(r.Units) > 1 {
				continue // a 1x benchmark's ns/op is its whole run time
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.Target, r.Name, u, format(r.Metrics[u]))
		}
	}
}

func format(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}
