package bridge

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/otawatch/otawatch/events"
)

// badPayloadReasons is the reason each bad payload of testdata/payloads must
// be refused with. Every bad-*.json file must be listed (TestCorpusIsCovered).
var badPayloadReasons = map[string]string{
	"bad-array.json":             "payload: is an array, want object",
	"bad-broken-json.json":       "payload is not JSON: it ends unexpectedly after 107 bytes",
	"bad-duration-negative.json": "state.reported.firmware.updateDuration: -5 is less than 0",
	"bad-duration-overflow.json": "state.reported.firmware.updateDuration: 1e999 is more than 604800",
	"bad-duration-too-long.json": "state.reported.firmware.updateDuration: 604801 is more than 604800",
	// 604800 as a float64; the schema compares the decimal exactly.
	"bad-duration-just-over-limit.json": "state.reported.firmware.updateDuration: 604800.000000000000001 is more than 604800",
	"bad-duration-string.json":          `state.reported.firmware.updateDuration: "127" is a string, want number`,
	"bad-empty.json":                    "payload is empty",
	"bad-errorcode-number.json":         "state.reported.firmware.errorCode: 42 is a number, want null or string",
	"bad-firmware-null.json":            "state.reported.firmware: is null, want object",
	"bad-missing-firmware.json":         "state.reported.firmware is missing",
	"bad-missing-state.json":            "state is missing",
	"bad-missing-status.json":           "state.reported.firmware.status is missing",
	"bad-missing-timestamp.json":        "state.reported.firmware.timestamp is missing",
	"bad-missing-version.json":          "state.reported.firmware.version is missing",
	"bad-not-json.json":                 "payload is not JSON: invalid character 'o' in literal null (expecting 'u') (at byte 2)",
	"bad-status-unknown.json":           `state.reported.firmware.status: "done" is not one of in_progress, completed, failed`,
	"bad-status-uppercase.json":         `state.reported.firmware.status: "COMPLETED" is not one of in_progress, completed, failed`,
	"bad-timestamp-not-date.json":       `state.reported.firmware.timestamp: "yesterday" is not a valid date-time`,
	"bad-timestamp-number.json":         "state.reported.firmware.timestamp: 1753183800 is a number, want string",
	// ClickHouse would have stored these as 0000-00-00 00:00:00.
	"bad-timestamp-year-9999.json": `state.reported.firmware.timestamp: "9999-12-31T23:59:59Z" is outside the accepted window 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z`,
	"bad-timestamp-1969.json":      `state.reported.firmware.timestamp: "1969-12-31T23:59:59Z" is outside the accepted window 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z`,
	// A device whose clock was never set.
	"bad-timestamp-unix-zero.json": `state.reported.firmware.timestamp: "1970-01-01T00:00:00Z" is outside the accepted window 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z`,
	"bad-timestamp-2100.json":      `state.reported.firmware.timestamp: "2100-01-01T00:00:00Z" is outside the accepted window 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z`,
	// 1999-12-31T23:30:00Z: the window is compared in UTC.
	"bad-timestamp-before-2000-by-offset.json": `state.reported.firmware.timestamp: "2000-01-01T00:30:00+01:00" is outside the accepted window 2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z`,
	"bad-trailing-comma.json":                  "payload is not JSON: invalid character '}' looking for beginning of object key string (at byte 109)",
	"bad-two-documents.json":                   "payload is not JSON: invalid character after top-level value",
	"bad-version-empty.json":                   "state.reported.firmware.version: is empty",
	"bad-version-number.json":                  "state.reported.firmware.version: 4.2 is a number, want string",
}

const goodTopic = "iot-2/type/gateway/id/dev-0001/update/shadow"

func readCorpus(t testing.TB, prefix string) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "payloads", prefix+"*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/payloads/%s*.json: %v", prefix, err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

func readTopics(t testing.TB) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "topics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCorpusIsCovered(t *testing.T) {
	bad := readCorpus(t, "bad-")
	for name := range bad {
		if _, ok := badPayloadReasons[name]; !ok {
			t.Errorf("testdata/payloads/%s has no expected reason in badPayloadReasons", name)
		}
	}
	for name := range badPayloadReasons {
		if _, ok := bad[name]; !ok {
			t.Errorf("badPayloadReasons lists %s, which is not in testdata/payloads", name)
		}
	}
}

func TestDecodeReportRefusesBadPayloads(t *testing.T) {
	for name, payload := range readCorpus(t, "bad-") {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeReport(goodTopic, payload, DefaultMaxPayload)
			var rej *RejectError
			if !errors.As(err, &rej) {
				t.Fatalf("got error %v (%T), want a *RejectError", err, err)
			}
			if want := badPayloadReasons[name]; rej.Reason != want {
				t.Errorf("reason\n got: %s\nwant: %s", rej.Reason, want)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestDecodeReportAcceptsGoodPayloads(t *testing.T) {
	tests := []struct {
		file string
		want events.Firmware
	}{
		{"good-seed-completed.json", events.Firmware{Version: "4.2.1", Timestamp: time.Date(2025, 7, 22, 11, 30, 0, 0, time.UTC),
			Status: "completed", Checksum: "sha256:abc123def456", PreviousVersion: "4.1.5", UpdateDuration: 127}},
		{"good-in-progress.json", events.Firmware{Version: "4.2.1", Timestamp: time.Date(2025, 7, 22, 9, 27, 53, 125e6, time.UTC),
			Status: "in_progress", Checksum: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", PreviousVersion: "4.1.5"}},
		{"good-failed.json", events.Firmware{Version: "4.2.1", Timestamp: time.Date(2025, 7, 22, 11, 41, 2, 0, time.UTC),
			Status: "failed", Checksum: "sha256:abc123", PreviousVersion: "4.1.5", UpdateDuration: 311.5, ErrorCode: ptr("E_CHECKSUM_MISMATCH")}},
		{"good-minimal.json", events.Firmware{Version: "1.0.0", Timestamp: time.Date(2025, 7, 22, 11, 30, 0, 0, time.UTC), Status: "completed"}},
		{"good-extra-fields.json", events.Firmware{Version: "4.2.1", Timestamp: time.Date(2025, 7, 22, 11, 30, 0, 0, time.UTC), Status: "completed"}},
		// The first instant of the timestamp window, a duration just under
		// the limit (one at the limit is the schema path's to judge).
		{"good-limits.json", events.Firmware{Version: "4.2.1", Timestamp: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), Status: "completed", UpdateDuration: 604799.5}},
	}
	corpus := readCorpus(t, "good-")
	if len(tests) != len(corpus) {
		t.Fatalf("%d good-*.json files, %d test cases: add the new file here", len(corpus), len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, err := DecodeReport(goodTopic, corpus[tc.file], DefaultMaxPayload)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got.TypeID != "gateway" || got.DeviceID != "dev-0001" || got.Topic != goodTopic {
				t.Errorf("ids: got %q %q %q", got.TypeID, got.DeviceID, got.Topic)
			}
			if !sameFirmware(got.Firmware, tc.want) {
				t.Errorf("firmware\n got: %s\nwant: %s", mustJSON(got.Firmware), mustJSON(tc.want))
			}
			// The digest is of the bytes as sent, not of a re-encoding.
			sum := sha256.Sum256(corpus[tc.file])
			if want := hex.EncodeToString(sum[:]); got.PayloadSHA256 != want {
				t.Errorf("payloadSha256: got %q, want %q", got.PayloadSHA256, want)
			}
		})
	}
}

func TestDecodeReportTopicsAndSize(t *testing.T) {
	good := readCorpus(t, "good-")["good-seed-completed.json"]
	tests := []struct {
		name    string
		topic   string
		payload []byte
		max     int
		reason  string // empty: accepted
	}{
		{"ok", goodTopic, good, 0, ""},
		{"at the limit", goodTopic, good, len(good), ""},
		{"over the limit", goodTopic, good, len(good) - 1, "payload is 208 bytes, the limit is 207"},
		{"dot in device id", "iot-2/type/gateway/id/dev.1/update/shadow", good, 0, `topic: device id "dev.1" has '.' at byte 3; allowed are A-Z a-z 0-9 _ -`},
		{"star in device id", "iot-2/type/gateway/id/dev*/update/shadow", good, 0, `topic: device id "dev*" has '*' at byte 3; allowed are A-Z a-z 0-9 _ -`},
		{"gt as device id", "iot-2/type/gateway/id/>/update/shadow", good, 0, `topic: device id ">" has '>' at byte 0; allowed are A-Z a-z 0-9 _ -`},
		{"space in type id", "iot-2/type/gate way/id/dev-1/update/shadow", good, 0, `topic: type id "gate way" has a space at byte 4; allowed are A-Z a-z 0-9 _ -`},
		{"empty type id", "iot-2/type//id/dev-1/update/shadow", good, 0, "topic: type id is empty"},
		{"empty device id", "iot-2/type/gateway/id//update/shadow", good, 0, "topic: device id is empty"},
		{"device id too long", "iot-2/type/gateway/id/" + strings.Repeat("x", 65) + "/update/shadow", good, 0, "topic: device id is 65 bytes long, the limit is 64"},
		{"device id at the length limit", "iot-2/type/gateway/id/" + strings.Repeat("x", 64) + "/update/shadow", good, 0, ""},
		{"not a report topic", "iot-2/type/gateway/id/dev-1/update/status", good, 0,
			`topic "iot-2/type/gateway/id/dev-1/update/status" is not iot-2/type/{typeId}/id/{deviceId}/update/shadow`},
		{"slash in an id", "iot-2/type/a/b/id/dev-1/update/shadow", good, 0,
			`topic "iot-2/type/a/b/id/dev-1/update/shadow" is not iot-2/type/{typeId}/id/{deviceId}/update/shadow`},
		{"size is checked first", "not/a/topic", good, 10, "payload is 208 bytes, the limit is 10"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeReport(tc.topic, tc.payload, tc.max)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.reason {
				t.Errorf("reason\n got: %q\nwant: %q", got, tc.reason)
			}
		})
	}
}

func sameFirmware(a, b events.Firmware) bool {
	if !a.Timestamp.Equal(b.Timestamp) {
		return false
	}
	a.Timestamp, b.Timestamp = time.Time{}, time.Time{}
	if (a.ErrorCode == nil) != (b.ErrorCode == nil) || a.ErrorCode != nil && *a.ErrorCode != *b.ErrorCode {
		return false
	}
	a.ErrorCode, b.ErrorCode = nil, nil
	return a == b
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// reportPayload is the device contract's payload around fw.
func reportPayload(fw events.Firmware) []byte {
	m := map[string]any{"version": fw.Version, "timestamp": fw.Timestamp.Format(time.RFC3339Nano), "status": fw.Status,
		"errorCode": fw.ErrorCode}
	if fw.Checksum != "" {
		m["checksum"] = fw.Checksum
	}
	if fw.PreviousVersion != "" {
		m["previousVersion"] = fw.PreviousVersion
	}
	if fw.UpdateDuration != 0 {
		m["updateDuration"] = fw.UpdateDuration
	}
	b, err := json.Marshal(map[string]any{"state": map[string]any{"reported": map[string]any{"firmware": m}}})
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzDecodeReport: whatever arrives, the decoder does not panic; a refusal
// has a one-line, valid UTF-8 reason; an accepted report has a valid status,
// a non-negative duration, ids that are subject tokens, and says the same
// thing again when re-encoded.
func FuzzDecodeReport(f *testing.F) {
	topics := readTopics(f)
	i := 0
	for _, p := range readCorpus(f, "") {
		f.Add(topics[i%len(topics)], p)
		f.Add(goodTopic, p)
		i++
	}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		d, err := DecodeReport(topic, payload, DefaultMaxPayload)
		if err != nil {
			var rej *RejectError
			if !errors.As(err, &rej) {
				t.Fatalf("error %v is %T, not a *RejectError", err, err)
			}
			if rej.Reason == "" || !utf8.ValidString(rej.Reason) || strings.ContainsAny(rej.Reason, "\n\r") {
				t.Fatalf("reason %q is not one readable line", rej.Reason)
			}
			return
		}
		switch d.Firmware.Status {
		case events.StatusInProgress, events.StatusCompleted, events.StatusFailed:
		default:
			t.Fatalf("accepted status %q", d.Firmware.Status)
		}
		if d.Firmware.UpdateDuration < 0 || d.Firmware.Version == "" || d.Firmware.Timestamp.IsZero() {
			t.Fatalf("accepted firmware %+v", d.Firmware)
		}
		if d.Topic != topic {
			t.Fatalf("topic %q became %q", topic, d.Topic)
		}
		subject := events.ShadowReportedSubject(d.TypeID, d.DeviceID)
		checkSubject(t, subject, d.TypeID, d.DeviceID)
		checkEncoding(t, events.ReportEventID(d.TypeID, d.DeviceID, d.Firmware), subject, time.Unix(1764090000, 5), d)
		again, err := DecodeReport(topic, reportPayload(d.Firmware), 0)
		if err != nil {
			t.Fatalf("re-encoded report refused: %v\n%s", err, reportPayload(d.Firmware))
		}
		if !sameFirmware(again.Firmware, d.Firmware) {
			t.Fatalf("re-encoded report differs\n got: %s\nwant: %s", mustJSON(again.Firmware), mustJSON(d.Firmware))
		}
	})
}

// FuzzReportSubject: a topic the bridge accepts maps to a subject of exactly
// four tokens, none empty and none a wildcard, that maps back to the same
// device and topic.
func FuzzReportSubject(f *testing.F) {
	for _, topic := range readTopics(f) {
		f.Add(topic)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		typeID, deviceID, err := events.ParseReportTopic(topic)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		checkSubject(t, events.ShadowReportedSubject(typeID, deviceID), typeID, deviceID)
		if got := events.ReportTopic(typeID, deviceID); got != topic {
			t.Fatalf("topic %q parsed to %q %q, which makes %q", topic, typeID, deviceID, got)
		}
	})
}

func checkSubject(t *testing.T, subject, typeID, deviceID string) {
	t.Helper()
	tokens := strings.Split(subject, ".")
	if len(tokens) != 4 || tokens[0]+"."+tokens[1] != events.SubjectShadowReported {
		t.Fatalf("subject %q does not have 4 tokens under %s", subject, events.SubjectShadowReported)
	}
	for _, tok := range tokens {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>.") {
			t.Fatalf("subject %q has a bad token %q", subject, tok)
		}
		for _, r := range tok {
			if r > 0x7e || r < 0x21 {
				t.Fatalf("subject %q has %q", subject, r)
			}
		}
	}
	gt, gd, ok := events.DeviceFromSubject(subject)
	if !ok || gt != typeID || gd != deviceID {
		t.Fatalf("subject %q maps back to %q %q %v, want %q %q", subject, gt, gd, ok, typeID, deviceID)
	}
}
