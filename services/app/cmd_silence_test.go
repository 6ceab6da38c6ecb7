package app

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/services/internal/silence"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// TestSilenceCommandLine checks "otawatch silence"'s usage errors (none
// reaches NOTIFY), the times and author "add" records, --json, and what
// "list" shows of an expired silence.
func TestSilenceCommandLine(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	url := js.Server.ClientURL()
	dir := t.TempDir()
	run := func(args ...string) (code int, stdout, stderr string) {
		var out, errb bytes.Buffer
		if len(args) > 0 {
			args = append(args, "--nats", url)
		}
		code = Main(context.Background(), append([]string{"silence"}, args...),
			&Env{Stdout: &out, Stderr: &errb, Environ: []string{"USER=carol", "OTAWATCH_DATA_DIR=" + dir}})
		return code, out.String(), errb.String()
	}
	listJSON := func(args ...string) []silence.Silence {
		t.Helper()
		code, stdout, stderr := run(append([]string{"list", "--json"}, args...)...)
		var list []silence.Silence
		if code != 0 || json.Unmarshal([]byte(stdout), &list) != nil {
			t.Fatalf("list --json %v: exit %d\nstdout: %s\nstderr: %s", args, code, stdout, stderr)
		}
		return list
	}

	if code, stdout, _ := run("list", "--json"); code != 0 || stdout != "[]\n" {
		t.Fatalf("list --json of none: exit %d, stdout %q, want []", code, stdout)
	}

	usage := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr []string
	}{
		{"no command", nil, 2, "", []string{"usage: otawatch silence COMMAND", "which silence command?"}},
		{"help", []string{"help"}, 0, "usage: otawatch silence COMMAND", nil},
		{"-h", []string{"-h"}, 0, "usage: otawatch silence COMMAND", nil},
		{"help of a command", []string{"add", "--help"}, 0, "", []string{"usage: otawatch silence COMMAND"}},
		{"unknown command", []string{"mute", `job="j1"`}, 2, "", []string{"usage: otawatch silence COMMAND", `unknown silence command "mute"`}},
		{"add without matchers", []string{"add", "--for", "1h"}, 2, "", []string{"silence add needs at least one MATCHER"}},
		{"expire without an id", []string{"expire"}, 2, "", []string{"silence expire needs one ID"}},
		{"expire two ids", []string{"expire", "a", "b"}, 2, "", []string{"silence expire needs one ID"}},
		{"list with an argument", []string{"list", "x"}, 2, "", []string{`unexpected argument "x"`}},
		{"a flag of another command", []string{"list", "--for", "1h"}, 2, "",
			[]string{"flag provided but not defined: -for", "usage: otawatch silence COMMAND"}},
		{"--all on expire", []string{"expire", "--all", "a"}, 2, "", []string{"flag provided but not defined: -all"}},
		{"--for and --end", []string{"add", "--for", "1h", "--end", "2030-01-01T00:00:00Z", `job="j1"`}, 2, "",
			[]string{"give --for or --end, not both"}},
		{"a bad start", []string{"add", "--start", "tomorrow", `job="j1"`}, 2, "", []string{`--start "tomorrow" is not an RFC 3339 time`}},
		{"a bad end", []string{"add", "--end", "soon", `job="j1"`}, 2, "", []string{`--end "soon" is not an RFC 3339 time`}},
		{"the end before the start", []string{"add", "--start", "2030-01-02T00:00:00Z", "--end", "2030-01-01T00:00:00Z", `job="j1"`}, 2, "",
			[]string{"ends at 2030-01-01T00:00:00Z, not after its start 2030-01-02T00:00:00Z"}},
		{"a bad id", []string{"add", "--id", "a b", `job="j1"`}, 2, "", []string{"silence id"}},
	}
	for _, tt := range usage {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(tt.args...)
			checkRun(t, code, stdout, stderr, tt.code, []string{tt.stdout}, tt.stderr)
		})
	}
	if list := listJSON("--all"); len(list) != 0 {
		t.Fatalf("a refused command wrote silences: %+v", list)
	}

	// add --json prints the silence as stored: --start and --for, the
	// author ($USER on an anonymous connection).
	code, stdout, stderr := run("add", "--json", "--id", "w1", "--start", "2030-01-01T00:00:00Z", "--for", "90m", "--comment", "upgrade", `device="d-1"`)
	var w1 silence.Silence
	if code != 0 || json.Unmarshal([]byte(stdout), &w1) != nil {
		t.Fatalf("add --json: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if w1.ID != "w1" || strings.Join(w1.Matchers, " ") != `device="d-1"` || !w1.StartsAt.Equal(start) ||
		!w1.EndsAt.Equal(start.Add(90*time.Minute)) || w1.Comment != "upgrade" || w1.CreatedBy != "carol" {
		t.Errorf("add --json printed %+v", w1)
	}
	// --start and --end, printed as a line.
	code, stdout, stderr = run("add", "--id", "w2", "--start", "2030-01-01T01:00:00Z", "--end", "2030-01-01T05:00:00Z", `job="j1"`, `wave!="1"`)
	if want := "silence w2: job=\"j1\",wave!=\"1\" from 2030-01-01T01:00:00Z until 2030-01-01T05:00:00Z, by carol\n"; code != 0 || stdout != want {
		t.Errorf("add: exit %d, stdout %q, want %q\nstderr: %s", code, stdout, want, stderr)
	}
	// Without times: from now, for an hour.
	before := time.Now().Truncate(time.Second)
	code, stdout, stderr = run("add", "--id", "w3", `rule="install_failures"`)
	after := time.Now()
	if code != 0 || !strings.HasPrefix(stdout, "silence w3: ") {
		t.Fatalf("add w3: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	list := listJSON()
	if len(list) != 3 {
		t.Fatalf("list --json: %d silences, want 3: %+v", len(list), list)
	}
	w3 := silenceByID(t, list, "w3")
	if w3.ID != "w3" || w3.StartsAt.Before(before) || w3.StartsAt.After(after) || w3.EndsAt.Sub(w3.StartsAt) != time.Hour {
		t.Errorf("w3 is %+v, want from now (%s..%s) for 1h", w3, before, after)
	}
	code, stdout, _ = run("list")
	for _, want := range []string{"ID  STATE    MATCHERS", "w1  pending  device=\"d-1\"", "w3  active   rule=\"install_failures\""} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("list: exit %d, stdout lacks %q:\n%s", code, want, stdout)
		}
	}

	if code, _, stderr := run("expire", "nope"); code != 1 || !strings.Contains(stderr, `otawatch silence: no silence "nope"`) {
		t.Errorf("expire an unknown silence: exit %d, want 1\nstderr: %s", code, stderr)
	}
	if code, stdout, stderr := run("expire", "w3"); code != 0 || stdout != "silence w3 expired\n" {
		t.Fatalf("expire: exit %d, stdout %q\nstderr: %s", code, stdout, stderr)
	}
	if list := listJSON(); len(list) != 2 || list[0].ID != "w1" || list[1].ID != "w2" {
		t.Errorf("list after expiring w3: %+v, want w1 and w2", list)
	}
	list = listJSON("--all")
	w3 = silenceByID(t, list, "w3")
	if len(list) != 3 || w3.ExpiredAt == nil || w3.ExpiredBy != "carol" {
		t.Fatalf("list --all: %+v, want w3 expired by carol", list)
	}
	// An expired silence ends when it was expired, not at its end.
	code, stdout, _ = run("list", "--all")
	ends := w3.ExpiredAt.UTC().Format(time.RFC3339)
	if want := "w3  expired  rule=\"install_failures\"  " + w3.StartsAt.UTC().Format(time.RFC3339) + "  " + ends + "  carol"; code != 0 || !strings.Contains(stdout, want) {
		t.Errorf("list --all: exit %d, stdout lacks %q:\n%s", code, want, stdout)
	}
}

// silenceByID is the silence of list with id.
func silenceByID(t *testing.T, list []silence.Silence, id string) silence.Silence {
	t.Helper()
	for _, s := range list {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("no silence %s in %+v", id, list)
	return silence.Silence{}
}
