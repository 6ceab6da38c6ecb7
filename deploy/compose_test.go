package deploy_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// composeFile is the part of the Compose specification docker-compose.yml
// uses. It is decoded strictly: a key this test does not know (a typo, or
// something new) fails it until the test checks it too.
type composeFile struct {
	Services map[string]*composeService `yaml:"services"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
	Volumes map[string]*struct{} `yaml:"volumes"`

	// Extension fields: YAML anchors the services merge in.
	XOtawatch    any `yaml:"x-otawatch"`
	XOtawatchEnv any `yaml:"x-otawatch-env"`
	XNATSUp      any `yaml:"x-nats-up"`
	XNATS        any `yaml:"x-nats"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       string            `yaml:"build"`
	Restart     string            `yaml:"restart"`
	User        string            `yaml:"user"`
	Profiles    []string          `yaml:"profiles"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Secrets     []string          `yaml:"secrets"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Ulimits     map[string]any    `yaml:"ulimits"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Disable     bool     `yaml:"disable"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

func loadCompose(t *testing.T) *composeFile {
	t.Helper()
	b, err := os.ReadFile(repoPath("docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f composeFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return &f
}

// TestCompose checks docker-compose.yml as the package comment says: each
// service's container modelled with its mounts (repository files, the
// secrets deploy/make-secrets makes, a directory per named volume shared
// by the services that mount it), then checkDeployment.
func TestCompose(t *testing.T) {
	f := loadCompose(t)
	img := parseDockerfile(t)
	secrets := makeSecrets(t)
	volumes := t.TempDir()
	d := &deployment{name: "docker-compose.yml", image: img}

	for name, s := range f.Secrets {
		if s.File != "./secrets/"+name {
			t.Errorf("docker-compose.yml: secret %s is %s, want ./secrets/%s (deploy/make-secrets writes it)", name, s.File, name)
		}
		if _, err := os.Stat(filepath.Join(secrets, name)); err != nil {
			t.Errorf("docker-compose.yml: secret %s is not one deploy/make-secrets makes", name)
		}
	}
	services := map[string]*container{}
	for name, s := range f.Services {
		c := &container{where: "docker-compose.yml service " + name, pod: name, image: s.Image, env: map[string]string{}, user: s.User}
		services[name] = c
		image := s.Image
		if s.Build != "" {
			image = "otawatch" // built here from the Dockerfile
		}
		if c.role = roleOf(image, "otawatch"); c.role == "" {
			t.Errorf("%s: image %q is not one this test knows", c.where, s.Image)
			continue
		}
		if c.role == "otawatch" {
			if s.Build != "." {
				t.Errorf("%s: build %q, want . (the Dockerfile)", c.where, s.Build)
			}
			for k, v := range img.final.env {
				c.env[k] = v
			}
			if c.user == "" {
				c.user = img.final.user
			}
		}
		if c.role != "otawatch" && len(s.Entrypoint) > 0 {
			c.command = append(c.command, s.Entrypoint...)
		}
		c.command = append(c.command, s.Command...)
		for k, v := range s.Environment {
			c.env[k] = v
		}
		for _, sec := range s.Secrets {
			if _, ok := f.Secrets[sec]; !ok {
				t.Errorf("%s: secret %s is not among the top-level secrets", c.where, sec)
			}
			c.mounts = append(c.mounts, mount{target: "/run/secrets/" + sec, source: filepath.Join(secrets, sec), what: "secret"})
		}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 || len(parts) > 3 || len(parts) == 3 && parts[2] != "ro" {
				t.Errorf("%s: volume %q is not SOURCE:TARGET[:ro]", c.where, v)
				continue
			}
			src, target := parts[0], parts[1]
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if strings.HasPrefix(src, "./secrets") {
					t.Errorf("%s: mounts %s: secrets go through secrets:", c.where, src)
				}
				host := repoPath(strings.TrimPrefix(src, "./"))
				if _, err := os.Stat(host); err != nil {
					t.Errorf("%s: mounts %s, which is not in the repository", c.where, src)
					continue
				}
				if len(parts) != 3 {
					t.Errorf("%s: mounts %s writable: the repository's files are mounted read-only", c.where, src)
				}
				c.mounts = append(c.mounts, mount{target: target, source: host, what: "repo file"})
				continue
			}
			if _, ok := f.Volumes[src]; !ok {
				t.Errorf("%s: volume %s is not among the top-level volumes", c.where, src)
			}
			dir := filepath.Join(volumes, src)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			c.mounts = append(c.mounts, mount{target: target, source: dir, what: "volume " + src, volume: true})
		}
		for _, p := range s.Ports {
			host, ctr, ok := strings.Cut(p, ":")
			port, err := strconv.Atoi(ctr)
			if !ok || err != nil || host == "" {
				t.Errorf("%s: port %q is not HOST:CONTAINER", c.where, p)
				continue
			}
			c.ports = append(c.ports, port)
		}
		if s.Healthcheck != nil && !s.Healthcheck.Disable {
			test := s.Healthcheck.Test
			if len(test) < 2 || test[0] != "CMD" {
				t.Errorf("%s: healthcheck %q is not [CMD, ...]", c.where, test)
			} else if u, err := wgetURL(test[1:]); err != nil {
				t.Errorf("%s: healthcheck: %v", c.where, err)
			} else {
				c.probes = append(c.probes, probe{kind: "healthcheck", url: u})
			}
		}
		if s.Restart == "" {
			t.Errorf("%s: no restart policy: a crashed container would stay down", c.where)
		}
		if c.role == "otawatch" || c.role == "mosquitto" {
			if uid, _, ok := numericUser(c.user); !ok || uid == 0 {
				t.Errorf("%s: runs as %q, want a numeric non-root user", c.where, c.user)
			}
		}
		d.containers = append(d.containers, c)
	}

	d.resolve = func(host string, port int) ([]*container, int, error) {
		c, ok := services[host]
		if !ok {
			return nil, 0, fmt.Errorf("%s is not a service of docker-compose.yml", host)
		}
		return []*container{c}, port, nil
	}
	d.waitsFor = func(from, to *container, job bool) string {
		name := strings.TrimPrefix(to.where, "docker-compose.yml service ")
		dep, ok := f.Services[from.pod].DependsOn[name]
		want := "service_started"
		switch {
		case job:
			want = "service_completed_successfully"
		case len(to.probes) > 0:
			want = "service_healthy"
		}
		if !ok || dep.Condition != want {
			return fmt.Sprintf("does not wait for %s (depends_on with condition %s)", name, want)
		}
		return ""
	}
	checkDeployment(t, d)
	// Devices reach Mosquitto on the host: its published port is its listener.
	for _, c := range d.byRole("mosquitto") {
		if c.mqtt != nil && (len(c.ports) != 1 || c.ports[0] != c.mqtt.port) {
			t.Errorf("%s: publishes %v, Mosquitto listens on %d", c.where, c.ports, c.mqtt.port)
		}
	}
}
