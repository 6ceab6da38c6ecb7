package conf

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type inner struct {
	URL      string        `yaml:"url"`
	Replicas int           `yaml:"replicas"`
	Wait     time.Duration `yaml:"wait"`
	Tags     []string      `yaml:"tags"`
	On       bool          `yaml:"on"`
}

func (c *inner) SetDefaults() {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
}

func (c *inner) Validate(p Problems) {
	if c.Replicas > 5 {
		p.Addf("replicas", "%d is out of range 1..5", c.Replicas)
	}
	if strings.HasPrefix(c.URL, "bad") {
		p.Addf("url", "%q is bad", c.URL)
	}
}

type root struct {
	DataDir string `yaml:"data_dir"`
	Section inner  `yaml:"section"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		env     []string
		want    root
		wantErr []string // each a whole line of the error
	}{
		{
			name: "defaults",
			want: root{Section: inner{Replicas: 1}},
		},
		{
			name: "file values",
			yaml: "data_dir: /d\nsection:\n  url: nats://x\n  replicas: 3\n  wait: 2s\n  tags: [a, b]\n",
			want: root{DataDir: "/d", Section: inner{URL: "nats://x", Replicas: 3, Wait: 2 * time.Second, Tags: []string{"a", "b"}}},
		},
		{
			name: "environment overrides the file",
			yaml: "section:\n  url: nats://file\n",
			env:  []string{"OTAWATCH_SECTION_URL=nats://env", "OTAWATCH_DATA_DIR=/e", "OTAWATCH_SECTION_WAIT=1m", "OTAWATCH_SECTION_TAGS=x, y", "OTAWATCH_SECTION_ON=true", "OTHER=1"},
			want: root{DataDir: "/e", Section: inner{URL: "nats://env", Replicas: 1, Wait: time.Minute, Tags: []string{"x", "y"}, On: true}},
		},
		{
			name:    "every problem at once, with lines",
			yaml:    "data_dir: /d\nsection:\n  replicas: 9\n  url: bad://x\n  nope: 1\n",
			wantErr: []string{"f.yaml:3: section.replicas: 9 is out of range 1..5", "f.yaml:4: section.url: \"bad://x\" is bad", "f.yaml:5: section.nope: field nope is not a known key of conf.inner"},
		},
		{
			name:    "wrong type",
			yaml:    "section:\n  replicas: many\n",
			wantErr: []string{"f.yaml:2: section.replicas: cannot unmarshal !!str `many` into int"},
		},
		{
			name:    "bad environment value",
			env:     []string{"OTAWATCH_SECTION_REPLICAS=x"},
			wantErr: []string{`f.yaml: section.replicas: from OTAWATCH_SECTION_REPLICAS: "x" is not an integer`},
		},
		{
			name:    "broken yaml",
			yaml:    "section: [\n",
			wantErr: []string{"f.yaml:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got root
			err := Decode("f.yaml", []byte(tt.yaml), tt.env, &got)
			if len(tt.wantErr) > 0 {
				var ce *Error
				if !errors.As(err, &ce) {
					t.Fatalf("err = %v, want *Error", err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error\n%s\nlacks %q", err, w)
					}
				}
				if n := len(strings.Split(err.Error(), "\n")); n < len(tt.wantErr) {
					t.Errorf("%d problem lines, want at least %d", n, len(tt.wantErr))
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got.DataDir != tt.want.DataDir || got.Section.URL != tt.want.Section.URL || got.Section.Replicas != tt.want.Section.Replicas ||
				got.Section.Wait != tt.want.Section.Wait || strings.Join(got.Section.Tags, ",") != strings.Join(tt.want.Section.Tags, ",") || got.Section.On != tt.want.Section.On {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("mqtt.password_file"); got != "OTAWATCH_MQTT_PASSWORD_FILE" {
		t.Fatalf("EnvName = %q", got)
	}
}
