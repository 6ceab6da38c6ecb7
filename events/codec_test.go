package events

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

var codecT0 = time.Date(2025, 7, 22, 11, 30, 0, 123456789, time.UTC)

// codecSamples are events of every type the fast paths write, and one
// they leave to encoding/json.
func codecSamples(t testing.TB) []Event {
	code := "E_CHECKSUM"
	value := 0.93
	datas := []struct {
		typ  string
		data any
	}{
		{TypeShadowReported, ShadowReportedData{TypeID: "gateway", DeviceID: "dev-1", Topic: ReportTopic("gateway", "dev-1"),
			Firmware: Firmware{Version: "4.2.1", Timestamp: codecT0, Status: StatusFailed, Checksum: "sha256:abc",
				PreviousVersion: "4.1.5", UpdateDuration: 127.5, ErrorCode: &code},
			PayloadSHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}},
		{TypeShadowReported, &ShadowReportedData{TypeID: "gateway", DeviceID: "dev-2",
			Firmware: Firmware{Version: "4.2.1", Timestamp: codecT0.In(time.FixedZone("", 7200)), Status: StatusInProgress}}},
		{TypeShadowDesired, ShadowDesiredData{TypeID: "gateway", DeviceID: "dev-1", JobID: "job-1", Wave: 3, Attempt: 2,
			Firmware: DesiredFirmware{Version: "4.2.1", Checksum: "sha256:abc", URL: "https://fw.example/4.2.1.bin"}}},
		{TypeDevicePresence, DevicePresenceData{TypeID: "gateway", DeviceID: "dev-1", State: PresenceOffline, LastSeen: codecT0}},
		{TypeRejected, NewRejected("bridge", "payload is not JSON", []byte("{\"state\":\xff"))},
		{TypeAlertRaised, AlertData{Key: "device-failed/gateway/dev-1", RuleID: "device-failed", Severity: "critical",
			State: AlertRaised, Labels: map[string]string{"b": "2", "a": "1"}, Value: &value, StartsAt: codecT0}},
	}
	var out []Event
	for i, d := range datas {
		e, err := New(IdentityID("t", string(rune('a'+i))), SourceBridge, d.typ, "subject.x", codecT0, d.data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// TestCodecMatchesEncodingJSON: for every sample, New's data, Marshal,
// Decode and DecodeData give what encoding/json gives on the same structs.
func TestCodecMatchesEncodingJSON(t *testing.T) {
	for _, e := range codecSamples(t) {
		t.Run(e.Type, func(t *testing.T) {
			got, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Marshal:\n got %s\nwant %s", got, want)
			}
			dec, err := Decode(got)
			if err != nil {
				t.Fatal(err)
			}
			var slow Event
			if err := json.Unmarshal(got, &slow); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(dec, slow) {
				t.Fatalf("Decode:\n got %+v\nwant %+v", dec, slow)
			}
		})
	}
}

// TestCodecFastPaths: the events otawatch writes most take the fast
// paths (else they would be dead code), and the values read back are the
// values written.
func TestCodecFastPaths(t *testing.T) {
	samples := codecSamples(t)
	for _, e := range samples[:5] {
		t.Run(e.Type, func(t *testing.T) {
			b, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte(`{"specversion":"1.0","id":`)) {
				t.Fatalf("unexpected encoding %s", b)
			}
			got, ok := decodeEnvelope(b)
			if !ok {
				t.Fatalf("envelope not read by the fast path: %s", b)
			}
			if !bytes.Equal(got.Data, e.Data) {
				t.Fatalf("data %s, want %s", got.Data, e.Data)
			}
			var v any
			switch e.Type {
			case TypeShadowReported:
				v = new(ShadowReportedData)
			case TypeShadowDesired:
				v = new(ShadowDesiredData)
			case TypeDevicePresence:
				v = new(DevicePresenceData)
			default:
				return
			}
			if !decodeData(got.Data, v) {
				t.Fatalf("data not read by the fast path: %s", got.Data)
			}
			again, err := marshalData(v)
			if err != nil || !bytes.Equal(again, e.Data) {
				t.Fatalf("data read back as %s (%v), want %s", again, err, e.Data)
			}
		})
	}
}

// TestMarshalRefusesWhatEncodingJSONRefuses: the errors come from
// encoding/json, for the values it cannot write.
func TestMarshalRefusesWhatEncodingJSONRefuses(t *testing.T) {
	tests := []struct {
		name string
		data any
		at   time.Time
	}{
		{"year 10000", DevicePresenceData{LastSeen: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, codecT0},
		{"offset of 24h", ShadowReportedData{Firmware: Firmware{Timestamp: codecT0.In(time.FixedZone("", 24*3600))}}, codecT0},
		{"NaN duration", ShadowReportedData{Firmware: Firmware{Timestamp: codecT0, UpdateDuration: math.NaN()}}, codecT0},
		{"event time", ShadowDesiredData{}, time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, wantErr := json.Marshal(tt.data)
			e, err := New("id", SourceBridge, TypeShadowReported, "", tt.at, tt.data)
			if err == nil {
				_, err = e.Marshal()
			}
			if err == nil {
				t.Fatalf("encoded %+v, encoding/json refuses it (%v)", tt.data, wantErr)
			}
			if wantErr != nil && !strings.Contains(err.Error(), wantErr.Error()) {
				t.Fatalf("error %q, want it to contain encoding/json's %q", err, wantErr)
			}
		})
	}
}

// TestMarshalEscapes: every character encoding/json escapes or replaces,
// alone in a string of the envelope and of the data, comes out as
// encoding/json writes it.
func TestMarshalEscapes(t *testing.T) {
	for _, c := range []string{"<", ">", "&", `"`, `\`, "\u2028", "\u2029", "\xff", "\x01", "\t", "\x7f", "é"} {
		t.Run(strconv.Quote(c), func(t *testing.T) {
			s := "a" + c + "b"
			e := Event{SpecVersion: s, ID: s, Source: s, Type: s, Subject: s, Time: codecT0, DataContentType: s, Data: []byte(`{"k":1}`)}
			got, err := e.Marshal()
			want, _ := json.Marshal(e)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Marshal: %s (%v), encoding/json %s", got, err, want)
			}
			d := ShadowReportedData{TypeID: s, Firmware: Firmware{Timestamp: codecT0, ErrorCode: &s}}
			got, err = marshalData(d)
			want, _ = json.Marshal(d)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("data: %s (%v), encoding/json %s", got, err, want)
			}
		})
	}
}

func fuzzTime(sec int64, nsec int32, offset int32) time.Time {
	t := time.Unix(sec, int64(nsec)%1e9)
	if offset == 0 {
		return t.UTC()
	}
	return t.In(time.FixedZone("", int(offset)%(48*3600)))
}

// FuzzMarshal: Marshal writes the bytes json.Marshal writes for any
// envelope, or both refuse it.
func FuzzMarshal(f *testing.F) {
	for _, e := range codecSamples(f) {
		f.Add(e.SpecVersion, e.ID, e.Source, e.Type, e.Subject, e.DataContentType, e.Time.Unix(), int32(e.Time.Nanosecond()), int32(0), []byte(e.Data))
	}
	f.Add("1.0", "a<b", "s\u2028", "t\xff", "", "", int64(-62135596801), int32(0), int32(3600), []byte(` {"a" : [1, 2e5,"<"]} `))
	f.Add("", "", "", "", "", "", int64(0), int32(0), int32(0), []byte(`nul`))
	f.Fuzz(func(t *testing.T, spec, id, source, typ, subject, ct string, sec int64, nsec, offset int32, data []byte) {
		e := Event{SpecVersion: spec, ID: id, Source: source, Type: typ, Subject: subject,
			Time: fuzzTime(sec, nsec, offset), DataContentType: ct, Data: data}
		got, err := e.Marshal()
		want, wantErr := json.Marshal(e)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("Marshal error %v, encoding/json %v", err, wantErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Marshal:\n got %q\nwant %q", got, want)
		}
	})
}

// FuzzNew: the data New writes for every type it writes by hand is what
// json.Marshal writes, or both refuse it.
func FuzzNew(f *testing.F) {
	f.Add("gateway", "dev-1", "iot-2/type/gateway/id/dev-1/update/shadow", "4.2.1", "completed", "sha256:a", "4.1.5", "E1",
		int64(1753183800), int32(5), int32(0), 127.5, int64(3), uint64(7), []byte("raw"), true)
	f.Add("g\"<&>", "d\u2028", "\xff", "", "", "", "", "", int64(-1), int32(-1), int32(-7200), 1e-7, int64(-1), uint64(0), []byte(nil), false)
	f.Add("", "", "", "", "", "", "", "", int64(253402300800), int32(0), int32(86400), 1e21, int64(0), uint64(0), []byte{}, false)
	f.Fuzz(func(t *testing.T, a, b, c, d, e, g, h, code string, sec int64, nsec, offset int32, dur float64, n int64, u uint64, raw []byte, flag bool) {
		at := fuzzTime(sec, nsec, offset)
		var ec *string
		if flag {
			ec = &code
		}
		datas := []any{
			ShadowReportedData{TypeID: a, DeviceID: b, Topic: c, Firmware: Firmware{Version: d, Timestamp: at, Status: e,
				Checksum: g, PreviousVersion: h, UpdateDuration: dur, ErrorCode: ec}, PayloadSHA256: code},
			&ShadowDesiredData{TypeID: a, DeviceID: b, JobID: c, Wave: int(n), Attempt: int(u % 5),
				Firmware: DesiredFirmware{Version: d, Checksum: e, URL: g}},
			DevicePresenceData{TypeID: a, DeviceID: b, State: c, LastSeen: at},
			RejectedData{Source: a, Reason: b, Topic: c, Stream: d, StreamSeq: u, Raw: raw, Size: n, SHA256: e, Truncated: flag},
		}
		for _, data := range datas {
			got, err := marshalData(data)
			want, wantErr := json.Marshal(data)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("%T: error %v, encoding/json %v", data, err, wantErr)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%T:\n got %q\nwant %q", data, got, want)
			}
			// Encode is New and Marshal in one: the same bytes, or both
			// refuse.
			enc, err := Encode(a, b, TypeShadowReported, c, at, data)
			ev, wantErr := New(a, b, TypeShadowReported, c, at, data)
			var wantEnc []byte
			if wantErr == nil {
				wantEnc, wantErr = json.Marshal(ev)
			}
			if (err != nil) != (wantErr != nil) || !bytes.Equal(enc, wantEnc) {
				t.Fatalf("%T: Encode %q (%v), encoding/json %q (%v)", data, enc, err, wantEnc, wantErr)
			}
		}
	})
}

// FuzzDecode: Decode reads any bytes as encoding/json and the envelope's
// checks do: the same event, or both refuse.
func FuzzDecode(f *testing.F) {
	for _, e := range codecSamples(f) {
		b, _ := e.Marshal()
		f.Add(b)
	}
	for _, s := range []string{
		`{"specversion":"1.0","id":"a","source":"s","type":"t","time":"2025-07-22T11:00:00Z","data":null}`,
		` { "specversion" : "1.0" , "id":"a","source":"s","type":"t","time":"2025-07-22T11:00:00.123+02:00","data": {"x":[1,{"a":[]}]} } `,
		`{"specversion":"1.0","ID":"a","id":"b","source":"s","type":"t","time":"2025-07-22T11:00:00Z"}`,
		`{"specversion":"1.0","id":"a\u0062","source":"s","type":"t","time":"2025-07-22T11:00:00Z"}`,
		`{"specversion":"1.0","id":"a","id":"b","source":"s","type":"t","time":"2025-07-22T11:00:00Z"}`,
		`{"specversion":"1.0","id":"a","source":"s","type":"t","time":"2025-07-22 11:00:00"}`,
		`{"specversion":"1.0","id":"a","source":"s","type":"t","time":null}`,
		`{"specversion":"1.0","id":"a","source":"s","type":"t","time":"2025-07-22T11:00:00Z"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := Decode(raw)
		var want Event
		wantErr := json.Unmarshal(raw, &want)
		if wantErr == nil {
			wantErr = want.check()
		}
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("Decode error %v, encoding/json %v: %q", err, wantErr, raw)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(got.Data, want.Data) {
			t.Fatalf("data %q, encoding/json %q", got.Data, want.Data)
		}
		got.Data, want.Data = nil, nil
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("envelope %+v, encoding/json %+v", got, want)
		}
	})
}

// FuzzDecodeData: DecodeData reads any data of the types it reads by hand
// as json.Unmarshal does: the same value, or both refuse.
func FuzzDecodeData(f *testing.F) {
	for _, e := range codecSamples(f) {
		f.Add([]byte(e.Data))
	}
	for _, s := range []string{
		`null`,
		`{"firmware":null,"typeId":null}`,
		`{"firmware":{"errorCode":null,"updateDuration":1e2,"timestamp":"2025-07-22T11:00:00Z"},"typeId":"x"}`,
		`{"firmware":{"version":"\n"}}`,
		`{"firmware":{"updateDuration":"12"}}`,
		`{"firmware":{"updateDuration":1e400}}`,
		`{"wave":1.5,"attempt":-0}`,
		`{"wave":99999999999999999999}`,
		`{"typeId":"a","typeId":"b"}`,
		`{"TypeId":"a"}`,
		`{"lastSeen":"2025-07-22T11:00:00+24:00"}`,
		`{"typeId":"a"} x`,
		`{"payloadSha256":"ab","payloadSha256":"cd"}`,
		`{"payloadSha256":null,"firmware":{}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(got, want any) {
			t.Helper()
			err := Event{Data: data}.DecodeData(got)
			wantErr := json.Unmarshal(data, want)
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("%T: DecodeData error %v, encoding/json %v: %q", got, err, wantErr, data)
			}
			if err == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("%T: DecodeData %+v, encoding/json %+v: %q", got, got, want, data)
			}
		}
		check(new(ShadowReportedData), new(ShadowReportedData))
		check(new(ShadowDesiredData), new(ShadowDesiredData))
		check(new(DevicePresenceData), new(DevicePresenceData))
	})
}

// BenchmarkCodec compares the codec with encoding/json on a report event,
// the log's most common: encode is New+Marshal, decode is Decode+DecodeData.
func BenchmarkCodec(b *testing.B) {
	e := codecSamples(b)[0]
	var d ShadowReportedData
	if err := e.DecodeData(&d); err != nil {
		b.Fatal(err)
	}
	raw, _ := e.Marshal()
	b.Run("encode/events", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev, err := New(e.ID, e.Source, e.Type, e.Subject, e.Time, &d)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := ev.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode/events.Encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Encode(e.ID, e.Source, e.Type, e.Subject, e.Time, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode/encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			data, _ := json.Marshal(&d)
			ev := e
			ev.Data = data
			if _, err := json.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/events", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ev, err := Decode(raw)
			if err != nil {
				b.Fatal(err)
			}
			var d ShadowReportedData
			if err := ev.DecodeData(&d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var ev Event
			if err := json.Unmarshal(raw, &ev); err != nil {
				b.Fatal(err)
			}
			var d ShadowReportedData
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzReportEventID: the allocation-free ReportEventID is IdentityID's
// formula (event ids are dedup keys: they must never change), and topics
// split as strings.Split splits them.
func FuzzReportEventID(f *testing.F) {
	f.Add("gateway", "dev-1", "4.2.1", "completed", int64(1753183800), int32(5), int32(3600))
	f.Add("", "", "", "", int64(0), int32(0), int32(0))
	f.Add(strings.Repeat("x", 300), "d/e/f", "\x00", "é", int64(-1), int32(-1), int32(-60))
	f.Fuzz(func(t *testing.T, typeID, deviceID, version, status string, sec int64, nsec, offset int32) {
		fw := Firmware{Version: version, Status: status, Timestamp: fuzzTime(sec, nsec, offset)}
		want := IdentityID("sr", typeID, deviceID, fw.Timestamp.UTC().Format(time.RFC3339Nano), fw.Status, fw.Version)
		if got := ReportEventID(typeID, deviceID, fw); got != want {
			t.Fatalf("ReportEventID %q, IdentityID %q", got, want)
		}
		topic := typeID + "/" + deviceID + "/" + version
		var levels [8]string
		got, want2 := splitTopic(topic, &levels), strings.Split(topic, "/")
		if len(want2) > 7 {
			want2 = append(want2[:7], strings.Join(want2[7:], "/"))
		}
		if !reflect.DeepEqual(got, want2) {
			t.Fatalf("splitTopic(%q) = %q, want %q", topic, got, want2)
		}
	})
}
