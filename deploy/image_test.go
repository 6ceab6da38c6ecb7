package deploy_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// dockerfile is what the test reads of the Dockerfile.
type dockerfile struct {
	stages []*stage
	final  *stage
}

type stage struct {
	from, name string
	user       string
	entrypoint []string
	cmd        []string
	expose     map[int]bool
	env        map[string]string
	runs       []string
	copies     []string // COPY arguments
}

// parseDockerfile reads the Dockerfile's instructions (continuation lines
// joined). An instruction it does not know is an error, so nothing in the
// file goes unchecked by accident.
func parseDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	f, err := os.Open(repoPath("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := &dockerfile{}
	var cur *stage
	var pending string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if rest, ok := strings.CutSuffix(line, `\`); ok {
			pending += rest + " "
			continue
		}
		line, pending = pending+line, ""
		instr, args, _ := strings.Cut(line, " ")
		args = strings.TrimSpace(args)
		instr = strings.ToUpper(instr)
		if instr == "FROM" {
			f := strings.Fields(args)
			cur = &stage{from: f[0], expose: map[int]bool{}, env: map[string]string{}}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				cur.name = f[2]
			}
			d.stages = append(d.stages, cur)
			continue
		}
		if cur == nil {
			t.Fatalf("Dockerfile:%d: %s before FROM", n, instr)
		}
		switch instr {
		case "WORKDIR", "ARG":
		case "COPY":
			cur.copies = append(cur.copies, args)
		case "RUN":
			cur.runs = append(cur.runs, args)
		case "USER":
			cur.user = args
		case "ENV":
			for _, kv := range strings.Fields(args) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("Dockerfile:%d: ENV %q is not KEY=VALUE", n, kv)
				}
				cur.env[k] = v
			}
		case "EXPOSE":
			for _, p := range strings.Fields(args) {
				port, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				if err != nil {
					t.Fatalf("Dockerfile:%d: EXPOSE %q is not a TCP port", n, p)
				}
				cur.expose[port] = true
			}
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(args), &v); err != nil {
				t.Fatalf("Dockerfile:%d: %s is not the exec form (a JSON list): %v", n, instr, err)
			}
			if instr == "CMD" {
				cur.cmd = v
			} else {
				cur.entrypoint = v
			}
		default:
			t.Fatalf("Dockerfile:%d: instruction %s is not one this test checks", n, instr)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(d.stages) == 0 {
		t.Fatal("Dockerfile: no FROM")
	}
	d.final = d.stages[len(d.stages)-1]
	return d
}

// goVersion is go.mod's go directive (major.minor).
func goVersion(t *testing.T) (int, int) {
	t.Helper()
	b, err := os.ReadFile(repoPath("go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	return major, minor
}

// TestDockerfile: a multi-stage build of a static binary with the Go
// go.mod asks for, into a small image that runs it as a non-root user.
func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t)
	if len(d.stages) < 2 {
		t.Fatalf("Dockerfile: %d stage(s), want a build stage and a small final one", len(d.stages))
	}
	build := d.stages[0]
	m := regexp.MustCompile(`^golang:(\d+)\.(\d+)(\.\d+)?(-alpine[0-9.]*)?$`).FindStringSubmatch(build.from)
	if m == nil {
		t.Fatalf("Dockerfile: the build stage is FROM %s, want golang:MAJOR.MINOR[-alpine]", build.from)
	}
	wantMajor, wantMinor := goVersion(t)
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major < wantMajor || major == wantMajor && minor < wantMinor {
		t.Errorf("Dockerfile: build stage Go %d.%d, go.mod asks for %d.%d", major, minor, wantMajor, wantMinor)
	}
	var buildRun string
	for _, r := range build.runs {
		if strings.Contains(r, "go build") {
			buildRun = r
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-o "} {
		if !strings.Contains(buildRun, want) {
			t.Errorf("Dockerfile: the go build (%q) lacks %s", buildRun, want)
		}
	}
	out := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(buildRun)

	f := d.final
	if !strings.HasPrefix(f.from, "alpine:") {
		// The compose health checks run wget inside the container: busybox's.
		t.Errorf("Dockerfile: final stage FROM %s, want alpine (busybox wget for the health checks)", f.from)
	}
	uid, gid, ok := numericUser(f.user)
	if !ok || uid == 0 || gid == 0 {
		t.Errorf("Dockerfile: final USER %q, want a numeric non-root uid:gid", f.user)
	}
	if len(f.entrypoint) != 1 {
		t.Fatalf("Dockerfile: ENTRYPOINT %q, want the otawatch binary alone", f.entrypoint)
	}
	copied := false
	for _, c := range f.copies {
		fields := strings.Fields(c)
		if len(fields) == 3 && fields[0] == "--from="+build.name && out != nil && fields[1] == out[1] && fields[2] == f.entrypoint[0] {
			copied = true
		}
	}
	if !copied || path.Base(f.entrypoint[0]) != "otawatch" {
		t.Errorf("Dockerfile: ENTRYPOINT %s is not the binary the build stage made (COPY --from=%s %v %s)", f.entrypoint[0], build.name, out, f.entrypoint[0])
	}
}

// numericUser parses USER "uid:gid" (or "uid").
func numericUser(s string) (uid, gid int, ok bool) {
	u, g, hasGroup := strings.Cut(s, ":")
	uid, err := strconv.Atoi(u)
	if err != nil {
		return 0, 0, false
	}
	gid = uid
	if hasGroup {
		if gid, err = strconv.Atoi(g); err != nil {
			return 0, 0, false
		}
	}
	return uid, gid, true
}

// TestDockerignore: the build context leaves out the repository's history,
// secrets, data and build output.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(repoPath(".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns[strings.Trim(line, "/")] = true
		}
	}
	for _, p := range []string{".git", "secrets", "data", ".run", "bin"} {
		if !patterns[p] {
			t.Errorf(".dockerignore does not leave out %s", p)
		}
	}
	for _, p := range []string{"go.mod", "go.sum", "services", "events", "schemas", "rules", "*.go", "**/*.go"} {
		if patterns[p] {
			t.Errorf(".dockerignore leaves out %s, which the build needs", p)
		}
	}
}
