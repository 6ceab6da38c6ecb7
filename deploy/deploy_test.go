// Package deploy_test checks the container deployments against otawatch
// itself, since this machine has no container engine to run them: the
// Dockerfile, docker-compose.yml, and deploy/kustomization.yaml with the
// manifests in deploy/k8s.
//
// Every container is read into one model (command line, environment,
// mounts, probes, ports), with each path it mounts mapped to the file or
// directory that stands for it here: a file of this repository, a secret
// made by deploy/make-secrets, or a temporary directory for a volume. Then:
//
//   - otawatch containers: every OTAWATCH_* variable names a configuration
//     key (the loader ignores any other); the command is a real
//     subcommand; "run" goes through app.PlanRun (run's own flags, config
//     loading with every OTAWATCH_* variable, validation and service
//     selection), other commands are run for real (the init job that
//     writes Mosquitto's password file); every *_file key names a mounted
//     file that exists;
//     every address (nats.url, mqtt.broker, rollout.broker,
//     clickhouse.addr) reaches a server of the deployment on the port it
//     listens on, as a user that server knows with the same password;
//     every probe asks a path the ops listener serves on its port;
//   - NATS: each node's command line and deploy/nats/cluster.conf go
//     through nats-server's own parser (server.ConfigureOptions), with the
//     environment the deployment gives it;
//   - Mosquitto and ClickHouse: their config files, users and ports;
//   - the image: what the containers need of it (the ports they use
//     EXPOSEd, a non-root user, busybox wget for the health checks), built
//     static (CGO_ENABLED=0, -trimpath) with the Go go.mod asks for.
//
// TestCompose and TestKubernetes log what they checked (go test -v).
package deploy_test

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/otawatch/otawatch/services/app"
)

// repoRoot is the repository, one level up from this package.
var repoRoot = func() string {
	abs, err := filepath.Abs("..")
	if err != nil {
		panic(err)
	}
	return abs
}()

func repoPath(rel string) string { return filepath.Join(repoRoot, filepath.FromSlash(rel)) }

// mount is one path inside a container and what stands for it here.
type mount struct {
	target string // in the container
	source string // here: a file or directory
	what   string // "repo file", "secret", "volume NAME", ...
	volume bool   // persistent storage (a named volume, a PVC)
}

// container is one process of a deployment, as the test models it.
type container struct {
	where   string // for messages: "docker-compose.yml service bridge-1"
	role    string // otawatch, nats, mosquitto, clickhouse
	image   string
	command []string // what runs, program first (for otawatch: after the binary)
	env     map[string]string
	mounts  []mount
	probes  []probe
	ports   []int // ports the deployment sends traffic to (published, containerPort)
	// portNames are Kubernetes' names of ports.
	portNames map[string]int
	user      string // the uid:gid it runs as ("" unknown)
	pod       string // the pod (Kubernetes) or service (compose) it belongs to
	init      bool   // a Kubernetes init container

	// Filled in by the checks.
	plan  *app.RunPlan
	nats  *natsNode
	mqtt  *mosquittoConf
	click *clickhouseConf
}

// probe is a health check: an HTTP URL the deployment asks, or a TCP port.
type probe struct {
	kind string // healthcheck, readiness, liveness
	url  string // http://host:port/path (host 127.0.0.1 when asked from inside)
	tcp  int    // a TCP port checked by connecting
}

// hostPath maps a path in the container to the file that stands for it
// here ("" and false when no mount covers it).
func (c *container) hostPath(p string) (string, *mount, bool) {
	best := -1
	for i, m := range c.mounts {
		if (p == m.target || strings.HasPrefix(p, strings.TrimSuffix(m.target, "/")+"/")) &&
			(best < 0 || len(m.target) > len(c.mounts[best].target)) {
			best = i
		}
	}
	if best < 0 {
		return "", nil, false
	}
	m := &c.mounts[best]
	return filepath.Join(m.source, strings.TrimPrefix(p, m.target)), m, true
}

// rewrite maps s to here when it is a path under a mount; else s.
func (c *container) rewrite(s string) string {
	if !strings.HasPrefix(s, "/") {
		return s
	}
	if h, _, ok := c.hostPath(s); ok {
		return h
	}
	return s
}

// environ is the container's environment with mounted paths mapped.
func (c *container) environ() []string {
	var out []string
	for k, v := range c.env {
		out = append(out, k+"="+c.rewrite(v))
	}
	sort.Strings(out)
	return out
}

// unwrapSecretEnv handles deploy/secret-env.sh: "sh secret-env.sh NAME=FILE
// ... -- CMD ARGS" sets NAME from the file and runs CMD. It returns the
// command that runs in the end, with the variables in c.env.
func unwrapSecretEnv(t *testing.T, c *container) []string {
	t.Helper()
	cmd := c.command
	if len(cmd) < 2 || cmd[0] != "/bin/sh" {
		return cmd
	}
	script, m, ok := c.hostPath(cmd[1])
	if !ok || m.what != "repo file" || script != repoPath("deploy/secret-env.sh") {
		t.Errorf("%s: runs %s %s, which is not deploy/secret-env.sh", c.where, cmd[0], cmd[1])
		return nil
	}
	rest := cmd[2:]
	for len(rest) > 0 && rest[0] != "--" {
		name, file, ok := strings.Cut(rest[0], "=")
		if !ok || name == "" {
			t.Errorf("%s: secret-env.sh argument %q is not NAME=FILE", c.where, rest[0])
			return nil
		}
		host, mm, mounted := c.hostPath(file)
		if !mounted || mm.what != "secret" {
			t.Errorf("%s: secret-env.sh reads %s for %s, which is not a mounted secret", c.where, file, name)
			return nil
		}
		c.env[name] = readSecret(t, host)
		rest = rest[1:]
	}
	if len(rest) < 2 {
		t.Errorf("%s: secret-env.sh without -- COMMAND", c.where)
		return nil
	}
	return rest[1:]
}

// readSecret reads a secret file as otawatch's *_file keys and
// secret-env.sh do: trailing newlines removed.
func readSecret(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("read secret: %v", err)
		return ""
	}
	return strings.TrimRight(string(b), "\r\n")
}

// makeSecrets runs deploy/make-secrets into a temporary directory: the
// secrets a deployment may refer to are the files it makes, nothing else.
func makeSecrets(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "secrets")
	out, err := exec.Command("/bin/sh", repoPath("deploy/make-secrets"), dir).CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/make-secrets: %v\n%s", err, out)
	}
	return dir
}

// fileKeys are the configuration's *_file keys that are set, by dotted key
// path (notify.receivers[0].slack.url_file), read from the yaml tags the
// loader uses.
func fileKeys(cfg *app.Config) map[string]string {
	out := map[string]string{}
	var walk func(v reflect.Value, key string)
	walk = func(v reflect.Value, key string) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem(), key)
			}
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				k, ok := fieldKey(v.Type().Field(i), key)
				if !ok {
					continue
				}
				if fv := v.Field(i); fv.Kind() == reflect.String {
					if strings.HasSuffix(k, "_file") && fv.String() != "" {
						out[k] = fv.String()
					}
				} else {
					walk(fv, k)
				}
			}
		case reflect.Slice:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i), key+"["+strconv.Itoa(i)+"]")
			}
		}
	}
	walk(reflect.ValueOf(cfg), "")
	return out
}

// fieldKey is a config struct field's dotted key under parent, as the
// loader names it from the yaml tag; false for a field it skips.
func fieldKey(f reflect.StructField, parent string) (string, bool) {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if !f.IsExported() || name == "-" {
		return "", false
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	if parent == "" {
		return name, true
	}
	return parent + "." + name, true
}

// roleOf is what a container image is in a deployment: the otawatch image
// (named otawatch), a NATS server, Mosquitto or ClickHouse; "" for an
// image this test does not know.
func roleOf(image, otawatch string) string {
	switch {
	case image == otawatch:
		return "otawatch"
	case strings.HasPrefix(image, "nats:"):
		return "nats"
	case strings.HasPrefix(image, "eclipse-mosquitto:"):
		return "mosquitto"
	case strings.HasPrefix(image, "clickhouse/clickhouse-server:"):
		return "clickhouse"
	}
	return ""
}

// envNames are the OTAWATCH_* variables the config loader reads: one per
// key of a nested section, as conf.EnvName names it (a list of sections,
// such as notify.receivers, has none).
func envNames() map[string]string {
	out := map[string]string{"OTAWATCH_CONFIG": "the config file"}
	var walk func(t reflect.Type, key string)
	walk = func(t reflect.Type, key string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			k, ok := fieldKey(f, key)
			if !ok {
				continue
			}
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, k)
				continue
			}
			out["OTAWATCH_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_"))] = k
		}
	}
	walk(reflect.TypeOf(app.Config{}), "")
	return out
}

// opsPathServed reports whether the ops listener serves path (anything but
// 404: /readyz is 503 until its components are ready).
func opsPathServed(path string) bool {
	rec := httptest.NewRecorder()
	app.OpsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code != http.StatusNotFound
}

// allServices are the services "otawatch run" can start, from the app.
func allServices(t *testing.T) []string {
	t.Helper()
	plan, err := app.PlanRun(nil, []string{"OTAWATCH_CLICKHOUSE_ADDR=clickhouse:9000"})
	if err != nil {
		t.Fatalf("otawatch run with defaults: %v", err)
	}
	return plan.Services
}

// leaseServices are the services that run one active instance behind a
// lease in JetStream KV: more instances stand by (the bridge, alerting and
// notify ones not ready while they do).
var leaseServices = map[string]bool{"bridge": true, "alerting": true, "rollout": true, "notify": true, "audit": true}

// confLines reads a line-oriented config file (Mosquitto's, an ACL) as
// directive and value, without comments and blank lines.
func confLines(t *testing.T, path string) [][2]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		out = append(out, [2]string{k, strings.TrimSpace(v)})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMakeSecrets: deploy/make-secrets makes every secret once; run again,
// it keeps what is there (a new password would lock the services out of
// servers that keep the old one), and the passwords start with a letter.
func TestMakeSecrets(t *testing.T) {
	dir := makeSecrets(t)
	before := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		before[e.Name()] = readSecret(t, filepath.Join(dir, e.Name()))
		if fi, _ := e.Info(); fi.Mode().Perm()&0o044 != 0o044 {
			t.Errorf("%s: mode %v: the containers' users could not read it", e.Name(), fi.Mode().Perm())
		}
	}
	if len(before) == 0 {
		t.Fatal("deploy/make-secrets made nothing")
	}
	out, err := exec.Command("/bin/sh", repoPath("deploy/make-secrets"), dir).CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/make-secrets again: %v\n%s", err, out)
	}
	for name, v := range before {
		if got := readSecret(t, filepath.Join(dir, name)); got != v {
			t.Errorf("%s changed on the second run", name)
		}
		if strings.HasSuffix(name, "_password") && (len(v) < 32 || v[0] < 'a' || v[0] > 'z') {
			t.Errorf("%s: %d characters starting %q: want 32 or more, a letter first", name, len(v), v[:1])
		}
	}
}
