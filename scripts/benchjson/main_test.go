package main

import (
	"strings"
	"testing"
)

const sample = `== target ingest
goos: linux
goarch: amd64
pkg: github.com/otawatch/otawatch/services/bridge
cpu: Intel(R) Xeon(R) CPU @ 2.20GHz
BenchmarkIngest-2
    bench_test.go:300: round 1: raw 62000 msg/s, bridge 41800 msg/s
BenchmarkIngest-2   	       3	 912345678 ns/op	     62200 raw_msgs/s	     41800 bridge_msgs/s	        67.2 bridge/raw_%
== target rollout
pkg: github.com/otawatch/otawatch/services/rollout
BenchmarkFleetSize/mosquitto/1500-2         	       1	1000 ns/op	  12000 reports/s	  30000 raw/s	  0.4 ratio
Benchmark results follow
PASS
`

func TestParse(t *testing.T) {
	rep, err := Parse(strings.NewReader(sample), "")
	if err != nil {
		t.Fatal(err)
	}
	if rep.GOOS != "linux" || rep.CPU == "" {
		t.Errorf("headers: %+v", rep)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("results: got %d, want 2: %+v", len(rep.Results), rep.Results)
	}
	in := rep.Results[0]
	if in.Target != "ingest" || in.Name != "BenchmarkIngest" || in.Procs != 2 || in.Iterations != 3 ||
		in.Metrics["bridge_msgs/s"] != 41800 || in.Metrics["bridge/raw_%"] != 67.2 ||
		!strings.HasSuffix(in.Package, "/bridge") {
		t.Errorf("ingest result: %+v", in)
	}
	if got := strings.Join(in.Units, ","); got != "ns/op,raw_msgs/s,bridge_msgs/s,bridge/raw_%" {
		t.Errorf("units in order: %s", got)
	}
	fs := rep.Results[1]
	if fs.Target != "rollout" || fs.Name != "BenchmarkFleetSize/mosquitto/1500" || fs.Metrics["ratio"] != 0.4 {
		t.Errorf("fleet result: %+v", fs)
	}
	var tbl strings.Builder
	WriteTable(&tbl, rep)
	if !strings.Contains(tbl.String(), "| ingest | BenchmarkIngest | bridge_msgs/s | 41800 |") ||
		strings.Contains(tbl.String(), "ns/op") {
		t.Errorf("table:\n%s", tbl.String())
	}
}

func TestParseRefusesUnpairedValues(t *testing.T) {
	_, err := Parse(strings.NewReader("BenchmarkX-2 3 100 ns/op 5\n"), "t")
	if err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("got %v, want an error naming line 1", err)
	}
}
