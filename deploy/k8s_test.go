package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The Kubernetes objects, as far as deploy/k8s uses them. Each is decoded
// strictly: a field this test does not know (a typo such as
// "readinesProbe", or something new) fails it until the test checks it.

type kustomization struct {
	APIVersion         string   `yaml:"apiVersion"`
	Kind               string   `yaml:"kind"`
	Namespace          string   `yaml:"namespace"`
	Resources          []string `yaml:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `yaml:"name"`
		Files []string `yaml:"files"`
	} `yaml:"configMapGenerator"`
	Images []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	} `yaml:"images"`
}

type objectMeta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

// intOrString is a port given by number or by name.
type intOrString struct {
	num int
	str string
}

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Tag == "!!int" {
		return n.Decode(&v.num)
	}
	return n.Decode(&v.str)
}

type k8sNamespace struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
}

type k8sConfigMap struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   objectMeta        `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
}

type k8sService struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		Type                     string            `yaml:"type"`
		ClusterIP                string            `yaml:"clusterIP"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]string `yaml:"selector"`
		Ports                    []struct {
			Name       string      `yaml:"name"`
			Port       int         `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sWorkload struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
	Spec       struct {
		Replicas            *int   `yaml:"replicas"`
		ServiceName         string `yaml:"serviceName"`
		PodManagementPolicy string `yaml:"podManagementPolicy"`
		Selector            struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Strategy *struct {
			Type          string `yaml:"type"`
			RollingUpdate *struct {
				MaxSurge       intOrString `yaml:"maxSurge"`
				MaxUnavailable intOrString `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     struct {
				AccessModes []string `yaml:"accessModes"`
				Resources   struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type k8sPodSpec struct {
	AutomountServiceAccountToken  *bool `yaml:"automountServiceAccountToken"`
	TerminationGracePeriodSeconds int   `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               *struct {
		RunAsNonRoot   *bool  `yaml:"runAsNonRoot"`
		RunAsUser      *int64 `yaml:"runAsUser"`
		RunAsGroup     *int64 `yaml:"runAsGroup"`
		FSGroup        *int64 `yaml:"fsGroup"`
		SeccompProfile *struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	// Affinity is scheduling only; not checked.
	Affinity       any            `yaml:"affinity"`
	InitContainers []k8sContainer `yaml:"initContainers"`
	Containers     []k8sContainer `yaml:"containers"`
	Volumes        []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
			Optional   bool   `yaml:"optional"`
			Items      []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"secret"`
		EmptyDir *struct{} `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
			ResourceFieldRef *struct {
				Resource string `yaml:"resource"`
			} `yaml:"resourceFieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *struct {
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
		RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
		RunAsUser                *int64 `yaml:"runAsUser"`
		Capabilities             *struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string      `yaml:"path"`
		Port intOrString `yaml:"port"`
	} `yaml:"httpGet"`
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
	TCPSocket *struct {
		Port intOrString `yaml:"port"`
	} `yaml:"tcpSocket"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

// strictDecode decodes one document node into out, unknown fields being
// errors.
func strictDecode(n *yaml.Node, out any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(out)
}

// k8sObjects are deploy/k8s's objects by kind.
type k8sObjects struct {
	configMaps map[string]map[string]string // name -> key -> file here
	services   map[string]*k8sService
	workloads  []*k8sWorkload
	files      map[any]string // object -> its file, for messages
}

func loadKubernetes(t *testing.T) (*kustomization, *k8sObjects) {
	t.Helper()
	var k kustomization
	b, err := os.ReadFile(repoPath("deploy/kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&k); err != nil {
		t.Fatalf("deploy/kustomization.yaml: %v", err)
	}
	objs := &k8sObjects{configMaps: map[string]map[string]string{}, services: map[string]*k8sService{}, files: map[any]string{}}

	// The ConfigMaps made from the repository's files.
	for _, g := range k.ConfigMapGenerator {
		files := map[string]string{}
		for _, f := range g.Files {
			key, file, ok := strings.Cut(f, "=")
			if !ok {
				key, file = filepath.Base(f), f
			}
			host := repoPath(filepath.Join("deploy", file))
			if _, err := os.Stat(host); err != nil {
				t.Errorf("deploy/kustomization.yaml: ConfigMap %s: %v", g.Name, err)
			}
			files[key] = host
		}
		objs.configMaps[g.Name] = files
	}

	// Every manifest of deploy/k8s is a resource, and every resource one.
	onDisk, err := filepath.Glob(repoPath("deploy/k8s/*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, r := range k.Resources {
		listed = append(listed, repoPath(filepath.Join("deploy", r)))
	}
	slices.Sort(onDisk)
	slices.Sort(listed)
	if !slices.Equal(onDisk, listed) {
		t.Errorf("deploy/kustomization.yaml: resources %v, deploy/k8s has %v", k.Resources, onDisk)
	}

	cmDir := t.TempDir()
	for _, file := range listed {
		rel := strings.TrimPrefix(file, repoRoot+string(os.PathSeparator))
		b, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 1; ; i++ {
			var n yaml.Node
			if err := dec.Decode(&n); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: document %d: %v", rel, i, err)
			}
			var head struct {
				Kind string `yaml:"kind"`
			}
			if err := n.Decode(&head); err != nil {
				t.Fatalf("%s: document %d: %v", rel, i, err)
			}
			where := fmt.Sprintf("%s document %d (%s)", rel, i, head.Kind)
			var obj any
			switch head.Kind {
			case "Namespace":
				obj = &k8sNamespace{}
			case "ConfigMap":
				obj = &k8sConfigMap{}
			case "Service":
				obj = &k8sService{}
			case "Deployment", "StatefulSet":
				obj = &k8sWorkload{}
			default:
				t.Errorf("%s: a kind this test does not check", where)
				continue
			}
			if err := strictDecode(&n, obj); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			switch o := obj.(type) {
			case *k8sConfigMap:
				files := map[string]string{}
				for key, v := range o.Data {
					p := filepath.Join(cmDir, o.Metadata.Name, key)
					if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
						t.Fatal(err)
					}
					files[key] = p
				}
				objs.configMaps[o.Metadata.Name] = files
			case *k8sService:
				objs.services[o.Metadata.Name] = o
			case *k8sWorkload:
				objs.workloads = append(objs.workloads, o)
			}
			objs.files[obj] = rel
		}
	}
	return &k, objs
}

// quantity parses a Kubernetes quantity (512Mi, 2Gi, 250m) in bytes or
// units (milli-units for "m").
func quantity(s string) (int64, error) {
	mult := map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1}
	for _, suf := range []string{"Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T", "m"} {
		if n, ok := strings.CutSuffix(s, suf); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * mult[suf], err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// TestKubernetes checks deploy/kustomization.yaml and deploy/k8s as the
// package comment says: every replica of every workload modelled as its
// containers (init containers included) with their mounts (ConfigMaps from
// the repository's files, the Secret otawatch-secrets as deploy/make-secrets
// makes it, a directory per volume claim and replica), then
// checkDeployment, and what only Kubernetes has: security contexts,
// resources, Services, update strategies.
func TestKubernetes(t *testing.T) {
	k, objs := loadKubernetes(t)
	img := parseDockerfile(t)
	secrets := makeSecrets(t)
	volumes := t.TempDir()
	d := &deployment{name: "deploy/kustomization.yaml", image: img}

	if k.Namespace == "" {
		t.Errorf("deploy/kustomization.yaml: no namespace")
	}
	otawatchImage := ""
	for _, im := range k.Images {
		otawatchImage = im.Name
	}
	if otawatchImage != "otawatch" {
		t.Errorf("deploy/kustomization.yaml: images names %q, want otawatch (the image the Dockerfile builds)", otawatchImage)
	}

	type instance struct {
		w      *k8sWorkload
		pod    string
		labels map[string]string
		ctrs   []*container
	}
	var pods []*instance
	for _, w := range objs.workloads {
		file := objs.files[w]
		spec := &w.Spec.Template.Spec
		replicas := 1
		if w.Spec.Replicas != nil {
			replicas = *w.Spec.Replicas
		}
		for k, v := range w.Spec.Selector.MatchLabels {
			if w.Spec.Template.Metadata.Labels[k] != v {
				t.Errorf("%s %s: the selector %s=%s does not select its own pods", file, w.Metadata.Name, k, v)
			}
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s %s: mounts a service account token; nothing here talks to the Kubernetes API", file, w.Metadata.Name)
		}
		claims := map[string]int64{}
		for _, v := range w.Spec.VolumeClaimTemplates {
			claims[v.Metadata.Name], _ = quantity(v.Spec.Resources.Requests["storage"])
		}
		for r := 0; r < replicas; r++ {
			pod := fmt.Sprintf("%s-%d", w.Metadata.Name, r)
			if w.Kind == "Deployment" {
				pod = fmt.Sprintf("%s-7c9f8d6b5-x%d", w.Metadata.Name, r)
			}
			inst := &instance{w: w, pod: pod, labels: w.Spec.Template.Metadata.Labels}
			pods = append(pods, inst)
			// The pod's volumes here.
			vols := map[string]mount{}
			for _, v := range spec.Volumes {
				m := mount{what: "volume " + v.Name}
				switch {
				case v.ConfigMap != nil:
					files, ok := objs.configMaps[v.ConfigMap.Name]
					if !ok {
						t.Errorf("%s %s: volume %s: no ConfigMap %s", file, w.Metadata.Name, v.Name, v.ConfigMap.Name)
						continue
					}
					dir := filepath.Join(volumes, pod, v.Name)
					for key, src := range files {
						linkInto(t, dir, key, src)
					}
					m.source, m.what = dir, "repo file"
				case v.Secret != nil && v.Secret.SecretName == "otawatch-secrets":
					dir := filepath.Join(volumes, pod, v.Name)
					if len(v.Secret.Items) == 0 {
						t.Errorf("%s %s: volume %s mounts every secret; name the items the pod needs", file, w.Metadata.Name, v.Name)
					}
					for _, it := range v.Secret.Items {
						src := filepath.Join(secrets, it.Key)
						if _, err := os.Stat(src); err != nil {
							t.Errorf("%s %s: secret key %s is not one deploy/make-secrets makes", file, w.Metadata.Name, it.Key)
						}
						linkInto(t, dir, it.Path, src)
					}
					m.source, m.what = dir, "secret"
				case v.Secret != nil && v.Secret.Optional:
					// A Secret the operator may not have made yet
					// (otawatch-devices before the first device): absent.
					m.source = filepath.Join(volumes, pod, v.Name)
					if err := os.MkdirAll(m.source, 0o700); err != nil {
						t.Fatal(err)
					}
				case v.EmptyDir != nil:
					m.source = filepath.Join(volumes, pod, v.Name)
					if err := os.MkdirAll(m.source, 0o700); err != nil {
						t.Fatal(err)
					}
				default:
					t.Errorf("%s %s: volume %s: a kind of volume this test does not model", file, w.Metadata.Name, v.Name)
					continue
				}
				vols[v.Name] = m
			}
			for name := range claims {
				dir := filepath.Join(volumes, pod, "pvc-"+name)
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				vols[name] = mount{source: dir, what: "volume claim " + name, volume: true}
			}

			all := append(append([]k8sContainer{}, spec.InitContainers...), spec.Containers...)
			for i, kc := range all {
				c := &container{
					where: fmt.Sprintf("%s %s/%s pod %s container %s", file, w.Kind, w.Metadata.Name, pod, kc.Name),
					image: kc.Image, env: map[string]string{}, pod: pod, init: i < len(spec.InitContainers),
				}
				if c.role = roleOf(kc.Image, otawatchImage); c.role == "" {
					t.Errorf("%s: image %q is not one this test knows", c.where, kc.Image)
					continue
				}
				if c.role == "otawatch" {
					if len(kc.Command) > 0 {
						t.Errorf("%s: sets command; the image's ENTRYPOINT is otawatch, give args", c.where)
					}
					for k, v := range img.final.env {
						c.env[k] = v
					}
				}
				c.command = append(append([]string{}, kc.Command...), kc.Args...)
				for _, ef := range kc.EnvFrom {
					if ef.ConfigMapRef == nil {
						continue
					}
					files, ok := objs.configMaps[ef.ConfigMapRef.Name]
					if !ok {
						t.Errorf("%s: envFrom: no ConfigMap %s", c.where, ef.ConfigMapRef.Name)
					}
					for key, f := range files {
						b, _ := os.ReadFile(f)
						c.env[key] = string(b)
					}
				}
				for _, e := range kc.Env {
					switch vf := e.ValueFrom; {
					case vf == nil:
						c.env[e.Name] = e.Value
					case vf.FieldRef != nil && vf.FieldRef.FieldPath == "metadata.name":
						c.env[e.Name] = pod
					case vf.SecretKeyRef != nil && vf.SecretKeyRef.Name == "otawatch-secrets":
						c.env[e.Name] = readSecret(t, filepath.Join(secrets, vf.SecretKeyRef.Key))
					case vf.ResourceFieldRef != nil && vf.ResourceFieldRef.Resource == "limits.memory":
						lim, err := quantity(kc.Resources.Limits["memory"])
						if err != nil {
							t.Errorf("%s: %s from limits.memory: %v", c.where, e.Name, err)
						}
						c.env[e.Name] = strconv.FormatInt(lim, 10)
					default:
						t.Errorf("%s: env %s: a valueFrom this test does not model", c.where, e.Name)
					}
				}
				for _, vm := range kc.VolumeMounts {
					m, ok := vols[vm.Name]
					if !ok {
						t.Errorf("%s: mounts %s, which the pod does not have", c.where, vm.Name)
						continue
					}
					m.target = vm.MountPath
					if vm.SubPath != "" {
						m.source = filepath.Join(m.source, vm.SubPath)
						if _, err := os.Stat(m.source); err != nil {
							t.Errorf("%s: mounts %s of %s, which it does not have", c.where, vm.SubPath, vm.Name)
						}
					}
					if (m.what == "repo file" || m.what == "secret") && !vm.ReadOnly {
						t.Errorf("%s: mounts %s writable", c.where, vm.Name)
					}
					c.mounts = append(c.mounts, m)
				}
				c.portNames = map[string]int{}
				for _, p := range kc.Ports {
					c.portNames[p.Name] = p.ContainerPort
					c.ports = append(c.ports, p.ContainerPort)
				}
				for kind, p := range map[string]*k8sProbe{"readiness": kc.ReadinessProbe, "liveness": kc.LivenessProbe} {
					switch {
					case c.init && p != nil:
						t.Errorf("%s: an init container with a %s probe", c.where, kind)
					case c.init:
					case p == nil:
						t.Errorf("%s: no %s probe", c.where, kind)
					case p.HTTPGet != nil:
						port := p.HTTPGet.Port.num
						if p.HTTPGet.Port.str != "" {
							port = c.portNames[p.HTTPGet.Port.str]
						}
						c.probes = append(c.probes, probe{kind: kind, url: fmt.Sprintf("http://pod:%d%s", port, p.HTTPGet.Path)})
					case p.Exec != nil:
						u, err := wgetURL(p.Exec.Command)
						if err != nil {
							t.Errorf("%s: %s probe: %v", c.where, kind, err)
							continue
						}
						c.probes = append(c.probes, probe{kind: kind, url: u})
					case p.TCPSocket != nil:
						port := p.TCPSocket.Port.num
						if p.TCPSocket.Port.str != "" {
							port = c.portNames[p.TCPSocket.Port.str]
						}
						c.probes = append(c.probes, probe{kind: kind, tcp: port})
					}
				}
				checkPodSecurity(t, c, spec, &kc)
				inst.ctrs = append(inst.ctrs, c)
				d.containers = append(d.containers, c)
			}
		}
	}

	podsOf := func(selector map[string]string) []*instance {
		var out []*instance
		for _, p := range pods {
			match := len(selector) > 0
			for k, v := range selector {
				match = match && p.labels[k] == v
			}
			if match {
				out = append(out, p)
			}
		}
		return out
	}
	// containerOn is the container of p with port (by number or name).
	containerOn := func(p *instance, port intOrString) (*container, int) {
		for _, c := range p.ctrs {
			if c.init {
				continue
			}
			if n, ok := c.portNames[port.str]; ok && port.str != "" {
				return c, n
			}
			if port.str == "" && slices.Contains(c.ports, port.num) {
				return c, port.num
			}
		}
		return nil, 0
	}
	for name, s := range objs.services {
		selected := podsOf(s.Spec.Selector)
		if len(selected) == 0 {
			t.Errorf("%s Service %s: its selector %v selects no pod", objs.files[s], name, s.Spec.Selector)
		}
		for _, sp := range s.Spec.Ports {
			for _, p := range selected {
				if c, _ := containerOn(p, sp.TargetPort); c == nil {
					t.Errorf("%s Service %s: port %s targets %v, which pod %s does not have", objs.files[s], name, sp.Name, sp.TargetPort, p.pod)
				}
			}
		}
	}
	d.resolve = func(host string, port int) ([]*container, int, error) {
		podName, svcName, isPod := strings.Cut(host, ".")
		s, ok := objs.services[svcName]
		if !isPod {
			s, ok = objs.services[host]
		}
		if !ok {
			return nil, 0, fmt.Errorf("%s is not a Service of deploy/k8s", host)
		}
		if isPod {
			if s.Spec.ClusterIP != "None" {
				return nil, 0, fmt.Errorf("%s: Service %s is not headless: it has no pod names", host, svcName)
			}
			for _, p := range podsOf(s.Spec.Selector) {
				if p.pod == podName && p.w.Spec.ServiceName == svcName {
					c, cp := containerOn(p, intOrString{num: port})
					if c == nil {
						return nil, 0, fmt.Errorf("pod %s has no container port %d", podName, port)
					}
					return []*container{c}, cp, nil
				}
			}
			return nil, 0, fmt.Errorf("%s: Service %s has no pod %s", host, svcName, podName)
		}
		for _, sp := range s.Spec.Ports {
			if sp.Port != port {
				continue
			}
			var out []*container
			target := 0
			for _, p := range podsOf(s.Spec.Selector) {
				c, cp := containerOn(p, sp.TargetPort)
				if c != nil {
					out, target = append(out, c), cp
				}
			}
			return out, target, nil
		}
		return nil, 0, fmt.Errorf("Service %s has no port %d", host, port)
	}

	checkDeployment(t, d)

	// What only Kubernetes has.
	for _, w := range objs.workloads {
		file := objs.files[w]
		replicas := 1
		if w.Spec.Replicas != nil {
			replicas = *w.Spec.Replicas
		}
		var runs []string
		for _, c := range d.containers {
			if c.plan != nil && strings.Contains(c.where, w.Kind+"/"+w.Metadata.Name+" ") {
				runs = c.plan.Services
			}
		}
		if len(runs) == 1 && leaseServices[runs[0]] {
			// A standby is not ready: a rolling update that waits for new
			// pods to be ready before it stops old ones never ends.
			ru := w.Spec.Strategy
			ok := ru != nil && ru.RollingUpdate != nil &&
				(ru.RollingUpdate.MaxUnavailable.str == "100%" || ru.RollingUpdate.MaxUnavailable.num >= replicas)
			if !ok && (ru == nil || ru.Type != "Recreate") {
				t.Errorf("%s %s: runs %s behind a lease, but its update waits for standbys to become ready (want maxUnavailable 100%% or Recreate)", file, w.Metadata.Name, runs[0])
			}
		}
		if w.Kind != "StatefulSet" {
			continue
		}
		s := objs.services[w.Spec.ServiceName]
		if s == nil {
			t.Errorf("%s %s: serviceName %q is not a Service of deploy/k8s", file, w.Metadata.Name, w.Spec.ServiceName)
		}
		if len(d.byRole("nats")) > 0 && strings.Contains(d.byRole("nats")[0].where, "StatefulSet/"+w.Metadata.Name+" ") {
			if s != nil && s.Spec.ClusterIP != "None" {
				t.Errorf("%s %s: serviceName %q is not headless: the nodes' routes need their pods' names", file, w.Metadata.Name, w.Spec.ServiceName)
			}
			if w.Spec.PodManagementPolicy != "Parallel" {
				t.Errorf("%s %s: podManagementPolicy %q: one node at a time never becomes ready (JetStream needs a quorum first); want Parallel", file, w.Metadata.Name, w.Spec.PodManagementPolicy)
			}
			if s != nil && !s.Spec.PublishNotReadyAddresses {
				t.Errorf("%s %s: the headless Service does not publish not-ready pods: their routes would not resolve until they are ready", file, w.Metadata.Name)
			}
			for _, c := range d.byRole("nats") {
				if c.nats == nil {
					continue
				}
				_, m, _ := c.hostPath(c.nats.opts.StoreDir)
				for _, v := range w.Spec.VolumeClaimTemplates {
					size, _ := quantity(v.Spec.Resources.Requests["storage"])
					if m != nil && m.what == "volume claim "+v.Metadata.Name && size < c.nats.opts.JetStreamMaxStore {
						t.Errorf("%s: the store's volume claim (%s) is smaller than JetStream's max_file_store (%d bytes)", c.where, v.Spec.Resources.Requests["storage"], c.nats.opts.JetStreamMaxStore)
					}
				}
			}
		}
	}

	// kubectl, where there is one, builds the whole thing as it would apply it.
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		if out, err := exec.Command(kubectl, "kustomize", repoPath("deploy")).CombinedOutput(); err != nil {
			t.Errorf("kubectl kustomize deploy: %v\n%s", err, out)
		}
	}
}

// linkInto makes dir/name stand for src (a symlink).
func linkInto(t *testing.T, dir, name, src string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(src, filepath.Join(dir, name)); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
}

// checkPodSecurity: a container runs as a non-root user, on a read-only
// root filesystem, without privilege escalation or capabilities, with
// requests and a memory limit.
func checkPodSecurity(t *testing.T, c *container, pod *k8sPodSpec, kc *k8sContainer) {
	t.Helper()
	nonRoot, uid := false, int64(-1)
	if ps := pod.SecurityContext; ps != nil {
		nonRoot = ps.RunAsNonRoot != nil && *ps.RunAsNonRoot
		if ps.RunAsUser != nil {
			uid = *ps.RunAsUser
		}
		if ps.SeccompProfile == nil || ps.SeccompProfile.Type != "RuntimeDefault" {
			t.Errorf("%s: no RuntimeDefault seccomp profile", c.where)
		}
	}
	sc := kc.SecurityContext
	if sc != nil && sc.RunAsNonRoot != nil {
		nonRoot = *sc.RunAsNonRoot
	}
	if sc != nil && sc.RunAsUser != nil {
		uid = *sc.RunAsUser
	}
	if !nonRoot || uid <= 0 {
		t.Errorf("%s: not runAsNonRoot with a non-root runAsUser (uid %d)", c.where, uid)
	}
	c.user = strconv.FormatInt(uid, 10)
	switch {
	case sc == nil:
		t.Errorf("%s: no securityContext", c.where)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: the root filesystem is writable (readOnlyRootFilesystem)", c.where)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: allowPrivilegeEscalation is not false", c.where)
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL"):
		t.Errorf("%s: does not drop ALL capabilities", c.where)
	}
	for _, r := range []string{"cpu", "memory"} {
		if _, err := quantity(kc.Resources.Requests[r]); err != nil || kc.Resources.Requests[r] == "" {
			t.Errorf("%s: no %s request", c.where, r)
		}
	}
	req, _ := quantity(kc.Resources.Requests["memory"])
	if lim, err := quantity(kc.Resources.Limits["memory"]); err != nil || lim < req || lim == 0 {
		t.Errorf("%s: memory limit %q is missing or below the request", c.where, kc.Resources.Limits["memory"])
	}
}
