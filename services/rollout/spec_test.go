package rollout

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// TestNormalizeSpecRefusesHostileValues: a job's firmware URL, checksum
// and sizes are refused outside their bounds, each with a reason naming
// the value, and accepted at the bounds.
func TestNormalizeSpecRefusesHostileValues(t *testing.T) {
	hex64 := strings.Repeat("0f", 32)
	tests := []struct {
		name     string
		edit     func(*events.RolloutSpec)
		insecure bool   // rollout.allow_insecure_urls
		want     string // the refusal, or "" to accept
	}{
		{"https", func(s *events.RolloutSpec) {}, false, ""},
		{"scheme in upper case", func(s *events.RolloutSpec) { s.Target.URL = "HTTPS://fw.example/a.bin" }, false, ""},
		{"http", func(s *events.RolloutSpec) { s.Target.URL = "http://fw.example/a.bin" }, false,
			`target url "http://fw.example/a.bin" is http: use https, or set rollout.allow_insecure_urls: true`},
		{"http when allowed", func(s *events.RolloutSpec) { s.Target.URL = "http://fw.example/a.bin" }, true, ""},
		{"ftp", func(s *events.RolloutSpec) { s.Target.URL = "ftp://fw.example/a.bin" }, true,
			`target url "ftp://fw.example/a.bin": scheme "ftp" is not https`},
		{"file", func(s *events.RolloutSpec) { s.Target.URL = "file:///etc/passwd" }, true,
			`target url "file:///etc/passwd": scheme "file" is not https`},
		{"javascript", func(s *events.RolloutSpec) { s.Target.URL = "javascript:alert(1)" }, true,
			`target url "javascript:alert(1)": scheme "javascript" is not https`},
		{"no scheme", func(s *events.RolloutSpec) { s.Target.URL = "//fw.example/a.bin" }, true,
			`target url "//fw.example/a.bin": scheme "" is not https`},
		{"no host", func(s *events.RolloutSpec) { s.Target.URL = "https:///a.bin" }, true, `target url "https:///a.bin" has no host`},
		{"port only", func(s *events.RolloutSpec) { s.Target.URL = "https://:443/a.bin" }, true, `target url "https://:443/a.bin" has no host`},
		{"opaque", func(s *events.RolloutSpec) { s.Target.URL = "https:fw.example/a.bin" }, true, `target url "https:fw.example/a.bin" has no host`},
		// The password is not repeated in the reason (it would be logged
		// and returned to the caller).
		{"userinfo", func(s *events.RolloutSpec) { s.Target.URL = "https://ops:hunter2@fw.example/a.bin" }, true,
			`target url "https://ops:xxxxx@fw.example/a.bin" has a user name or password; put no credentials in a job spec`},
		{"user only", func(s *events.RolloutSpec) { s.Target.URL = "https://ops@fw.example/a.bin" }, true,
			`target url "https://ops@fw.example/a.bin" has a user name or password; put no credentials in a job spec`},
		{"control character", func(s *events.RolloutSpec) { s.Target.URL = "https://fw.example/a\n.bin" }, true,
			`target url is not a URL: net/url: invalid control character in URL`},
		{"too long", func(s *events.RolloutSpec) { s.Target.URL = "https://fw.example/" + strings.Repeat("a", MaxURLLen) }, false,
			fmt.Sprintf("target url is %d bytes long, the limit is %d", len("https://fw.example/")+MaxURLLen, MaxURLLen)},

		{"checksum in upper case", func(s *events.RolloutSpec) { s.Target.Checksum = "sha256:" + strings.ToUpper(hex64) }, false, ""},
		{"checksum too short", func(s *events.RolloutSpec) { s.Target.Checksum = "sha256:aa" }, false,
			`target checksum "sha256:aa" is not sha256: and 64 hex digits`},
		{"checksum too long", func(s *events.RolloutSpec) { s.Target.Checksum = "sha256:" + hex64 + "0" }, false,
			`target checksum "sha256:` + hex64 + `0" is not sha256: and 64 hex digits`},
		{"checksum not hex", func(s *events.RolloutSpec) { s.Target.Checksum = "sha256:" + strings.Repeat("zz", 32) }, false,
			`target checksum "sha256:` + strings.Repeat("zz", 32) + `" is not sha256: and 64 hex digits`},
		{"checksum of another algorithm", func(s *events.RolloutSpec) { s.Target.Checksum = "md5:" + hex64[:32] }, false,
			`target checksum "md5:` + hex64[:32] + `" is not sha256: and 64 hex digits`},
		{"checksum with a newline after it", func(s *events.RolloutSpec) { s.Target.Checksum = "sha256:" + hex64 + "\n" }, false,
			`target checksum "sha256:` + hex64 + `\n" is not sha256: and 64 hex digits`},
		{"checksum very long", func(s *events.RolloutSpec) { s.Target.Checksum = strings.Repeat("x", 1000) }, false,
			`target checksum "` + strings.Repeat("x", 80) + `..." is not sha256: and 64 hex digits`},

		{"waves at the bound", func(s *events.RolloutSpec) { s.Waves = MaxWaves }, false, ""},
		{"too many waves", func(s *events.RolloutSpec) { s.Waves = MaxWaves + 1 }, false, "waves 1001 is more than 1000"},
		{"wave size at the bound", func(s *events.RolloutSpec) { s.WaveSize = MaxWaveSize }, false, ""},
		{"waves too large", func(s *events.RolloutSpec) { s.WaveSize = MaxWaveSize + 1 }, false, "wave size 100001 is more than 100000"},
		{"rate at the bound", func(s *events.RolloutSpec) { s.Rate = MaxRate }, false, ""},
		{"rate too high", func(s *events.RolloutSpec) { s.Rate = MaxRate + 0.5 }, false, "rate 10000.5 is out of range (0, 10000] messages per second"},
		{"rate infinite", func(s *events.RolloutSpec) { s.Rate = math.Inf(1) }, false, "rate +Inf is out of range (0, 10000] messages per second"},
		{"rate NaN", func(s *events.RolloutSpec) { s.Rate = math.NaN() }, false, "rate NaN is out of range (0, 10000] messages per second"},
		{"rate negative", func(s *events.RolloutSpec) { s.Rate = -1 }, false, "rate -1 is out of range (0, 10000] messages per second"},
		{"too many devices listed", func(s *events.RolloutSpec) {
			s.Devices = make([]string, MaxJobDevices+1)
			for i := range s.Devices {
				s.Devices[i] = fmt.Sprintf("t/d%d", i)
			}
		}, false, "100001 devices listed, the limit is 100000 (MaxJobDevices): split the job"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := Config{AllowInsecureURLs: tt.insecure}
			def.SetDefaults()
			spec := testSpec(1)
			spec.Target.Checksum = "sha256:" + hex64
			spec.Target.URL = "https://fw.example/a.bin"
			tt.edit(&spec)
			_, err := NormalizeSpec(spec, def, nil)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ce *CommandError
			if !errors.As(err, &ce) || ce.Code != events.RolloutErrInvalid {
				t.Fatalf("got %v (%T), want an invalid *CommandError", err, err)
			}
			if want := "invalid job spec: " + tt.want; ce.Msg != want {
				t.Errorf("reason\n got: %s\nwant: %s", ce.Msg, want)
			}
		})
	}
}

// manyDevices is a fleet of n devices of type t, made up as they are read.
type manyDevices int

func (n manyDevices) Device(typeID, deviceID string) (fleet.Device, bool) {
	return fleet.Device{TypeID: typeID, DeviceID: deviceID}, typeID == "t"
}

func (n manyDevices) Devices(fn func(*fleet.Device)) {
	for i := range int(n) {
		fn(&fleet.Device{TypeID: "t", DeviceID: fmt.Sprintf("d%06d", i)})
	}
}

func (n manyDevices) Metrics() fleet.Metrics { return fleet.Metrics{} }

// TestStartRefusesTooManyDevices: a job whose device type selects more
// than MaxJobDevices devices is refused when it starts, where the type is
// resolved.
func TestStartRefusesTooManyDevices(t *testing.T) {
	for _, tc := range []struct {
		name    string
		devices int
		want    string
	}{
		{"at the bound", MaxJobDevices, ""},
		{"one more", MaxJobDevices + 1, "cannot start job big: it targets 100001 devices, the limit is 100000: split the job (by device list)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var def Config
			def.SetDefaults()
			spec := events.RolloutSpec{ID: "big", DeviceType: "t", WaveSize: MaxWaveSize,
				Target: events.DesiredFirmware{Version: "2", Checksum: "sha256:" + strings.Repeat("ab", 32), URL: "https://fw.example/2.bin"}}
			c := CommandContext{Now: t0, Fleet: manyDevices(tc.devices), Jobs: map[string]*Job{}, Defaults: def}
			pend, err := Command(nil, CmdCreate, events.RolloutRequest{Spec: &spec, Start: true}, c)
			if tc.want == "" {
				if err != nil || len(pend) != 2 {
					t.Fatalf("got %d events, %v; want created and started", len(pend), err)
				}
				return
			}
			var ce *CommandError
			if !errors.As(err, &ce) || ce.Code != events.RolloutErrConflict || ce.Msg != tc.want {
				t.Fatalf("got %v, want conflict %q", err, tc.want)
			}
		})
	}
}

// TestDecodeRequest: a body the rollout service cannot take exactly is an
// invalid command (400 through the HTTP API), naming the field.
func TestDecodeRequest(t *testing.T) {
	for _, tc := range []struct{ name, cmd, body, want string }{
		{"actor", CmdPause, `{"jobId":"j","actor":"root"}`, `pause request: "actor" is taken from the caller's identity, not the body`},
		{"unknown field", CmdCreate, `{"spec":{"id":"j","wavez":3}}`, `create request: unknown field "spec.wavez"`},
		{"trailing data", CmdAbort, `{"jobId":"j"}{}`, `abort request: data after the JSON object at byte 13`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeRequest(tc.cmd, []byte(tc.body))
			var ce *CommandError
			if !errors.As(err, &ce) || ce.Code != events.RolloutErrInvalid || ce.Msg != tc.want {
				t.Fatalf("got %v, want invalid %q", err, tc.want)
			}
		})
	}
	req, err := DecodeRequest(CmdPause, []byte(`{"jobId":"j","reason":"night"}`))
	if err != nil || req.JobID != "j" || req.Reason != "night" {
		t.Errorf("got %+v, %v", req, err)
	}
}
