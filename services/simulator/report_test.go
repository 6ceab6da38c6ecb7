package simulator

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/schemas"
)

// reportSchema compiles the repository's shadow report schema, asserting
// formats (a timestamp must be a date-time), as the bridge does.
func reportSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemas.ShadowReport))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(schemas.ShadowReportID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(schemas.ShadowReportID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var checksumRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// checkReport validates one report payload against the schema and the
// seed's shape: the fields a status must and must not have. It returns the
// firmware part.
func checkReport(t testing.TB, schema *jsonschema.Schema, payload []byte) events.Firmware {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, payload)
	}
	if err := schema.Validate(doc); err != nil {
		t.Fatalf("report does not match the schema: %v\n%s", err, payload)
	}
	// Field by field, strictly: nothing the seed payload does not have.
	var raw struct {
		State struct {
			Reported struct {
				Firmware map[string]json.RawMessage `json:"firmware"`
			} `json:"reported"`
		} `json:"state"`
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		t.Fatalf("report has more than state.reported.firmware: %v\n%s", err, payload)
	}
	fields := raw.State.Reported.Firmware
	var r report
	if err := json.Unmarshal(payload, &r); err != nil {
		t.Fatal(err)
	}
	fw := r.State.Reported.Firmware
	var ts string
	_ = json.Unmarshal(fields["timestamp"], &ts)
	if _, err := time.Parse(time.RFC3339, ts); err != nil {
		t.Errorf("timestamp %q is not RFC 3339: %v", ts, err)
	}
	if !checksumRE.MatchString(fw.Checksum) {
		t.Errorf("checksum %q is not sha256:<64 hex>", fw.Checksum)
	}
	if fw.PreviousVersion == "" || fw.PreviousVersion == fw.Version {
		t.Errorf("previousVersion %q for version %q", fw.PreviousVersion, fw.Version)
	}
	if string(fields["errorCode"]) == "" {
		t.Errorf("errorCode missing; the seed sends null")
	}
	switch fw.Status {
	case statusInProgress:
		if _, ok := fields["updateDuration"]; ok || fw.ErrorCode != nil {
			t.Errorf("in_progress with updateDuration or errorCode: %s", payload)
		}
	case statusCompleted:
		if fw.UpdateDuration < 1 || fw.ErrorCode != nil {
			t.Errorf("completed without updateDuration or with an errorCode: %s", payload)
		}
	case statusFailed:
		if fw.UpdateDuration < 1 || fw.ErrorCode == nil || *fw.ErrorCode == "" {
			t.Errorf("failed without updateDuration or errorCode: %s", payload)
		}
	default:
		t.Errorf("status %q", fw.Status)
	}
	return fw
}

// TestReportShape checks the three kinds of report against the schema and
// the seed's shape.
func TestReportShape(t *testing.T) {
	schema := reportSchema(t)
	f, _, _ := unitFleet(t, FleetConfig{Devices: 1, FailureRate: 0.5, Seed: 1})
	d := f.devs[0]
	u := &update{from: "4.1.5", dur: 127 * time.Second, code: "E_FLASH_WRITE"}
	u.target.Version, u.target.Checksum = "4.2.1", Checksum("4.2.1")
	tests := []struct {
		name, status, code string
	}{
		{"in progress", statusInProgress, ""},
		{"completed", statusCompleted, ""},
		{"failed", statusFailed, "E_FLASH_WRITE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := d.report(u, tt.status, tt.code, u.dur)
			fw := checkReport(t, schema, p)
			if fw.Status != tt.status || fw.Version != "4.2.1" || fw.PreviousVersion != "4.1.5" {
				t.Errorf("got %+v", fw)
			}
			if tt.status != statusInProgress && fw.UpdateDuration != 127 {
				t.Errorf("updateDuration %v, want 127", fw.UpdateDuration)
			}
			if tt.code != "" && *fw.ErrorCode != tt.code {
				t.Errorf("errorCode %q, want %q", *fw.ErrorCode, tt.code)
			}
		})
	}
}

// TestStampStrictlyIncreases: two reports of a device within one
// millisecond still get different timestamps, so the bridge's dedup (on
// device, timestamp, status, version) never merges two real reports.
func TestStampStrictlyIncreases(t *testing.T) {
	f, _, _ := unitFleet(t, FleetConfig{Devices: 1})
	d := f.devs[0]
	var prev time.Time
	for i := 0; i < 5; i++ {
		ts := d.stamp()
		if !ts.After(prev) {
			t.Fatalf("stamp %d: %s not after %s", i, ts, prev)
		}
		prev = ts
	}
}

func TestBumpPatch(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"4.1.5", "4.1.6", true},
		{"0.0.9", "0.0.10", true},
		{"4.1", "", false},
		{"4.1.x", "", false},
		{"4..1", "", false},
		{"4.1.-1", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := bumpPatch(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Errorf("bumpPatch(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestDurations checks the install-time distribution has the configured
// mean and standard deviation (seeded, so the check is exact every run).
func TestDurations(t *testing.T) {
	tests := []struct {
		name         string
		mean, stddev time.Duration
	}{
		{"seed default", DefaultDurationMean, DefaultDurationStddev},
		{"wide", 10 * time.Minute, 8 * time.Minute},
		{"narrow", 30 * time.Second, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := newDurations(tt.mean, tt.stddev)
			rng := rand.New(rand.NewPCG(1, 2))
			const n = 50000
			var sum, sum2 float64
			for i := 0; i < n; i++ {
				x := ds.draw(rng).Seconds()
				sum += x
				sum2 += x * x
			}
			mean := sum / n
			sd := math.Sqrt(sum2/n - mean*mean)
			if math.Abs(mean-tt.mean.Seconds())/tt.mean.Seconds() > 0.02 {
				t.Errorf("mean %.1fs, want %.1fs ±2%%", mean, tt.mean.Seconds())
			}
			if math.Abs(sd-tt.stddev.Seconds())/tt.stddev.Seconds() > 0.05 {
				t.Errorf("stddev %.1fs, want %.1fs ±5%%", sd, tt.stddev.Seconds())
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  FleetConfig
		want []string // substrings of the error; none means valid
	}{
		{"defaults", FleetConfig{Devices: 10}, nil},
		{"every problem at once", FleetConfig{
			Devices: 0, Broker: "nope", Mode: "chaos", Types: []string{"a.b"}, FromVersion: "4",
			FailureRate: 2, OfflineShare: -1, TimeScale: -1, APIURL: "ftp://x",
		}, []string{"broker", "mode", "devices", "type id", "from_version", "failure_rate", "offline_share", "time_scale", "api"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewFleet(tt.cfg, nil)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q: %v", w, err)
				}
			}
		})
	}
}

func TestDeviceIDs(t *testing.T) {
	f, err := NewFleet(FleetConfig{Devices: 120000, Types: []string{"a", "b"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := f.DeviceIDs()
	if ids[0] != "d-000001" || ids[len(ids)-1] != "d-120000" {
		t.Errorf("ids %s..%s", ids[0], ids[len(ids)-1])
	}
	for _, d := range f.devs[:4] {
		if err := events.ValidateID("device id", d.id); err != nil {
			t.Error(err)
		}
	}
	if f.devs[0].typeID != "a" || f.devs[1].typeID != "b" || f.devs[0].reportTopic != "iot-2/type/a/id/d-000001/update/shadow" {
		t.Errorf("types dealt %s %s, topic %s", f.devs[0].typeID, f.devs[1].typeID, f.devs[0].reportTopic)
	}
}
