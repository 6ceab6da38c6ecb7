package conf

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "-1", want: -1},
		{in: "100B", want: 100},
		{in: "64KiB", want: 64 << 10},
		{in: "512MiB", want: 512 << 20},
		{in: "10GiB", want: 10 << 30},
		{in: "2TiB", want: 2 << 40},
		{in: "1KB", want: 1000},
		{in: "1GB", want: 1_000_000_000},
		{in: "3 mb", want: 3_000_000},
		{in: " 1gib ", want: 1 << 30},
		{in: "", wantErr: true},
		{in: "GiB", wantErr: true},
		{in: "1.5GiB", wantErr: true},
		{in: "10GB2", wantErr: true},
		{in: "10 apples", wantErr: true},
		{in: "-", wantErr: true},
		{in: "9999999999TiB", wantErr: true},
		{in: "99999999999999999999", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseByteSize(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ParseByteSize(%q) = %d, want an error", tc.in, got)
				}
				if !strings.Contains(err.Error(), tc.in) {
					t.Errorf("error %q does not name the input", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseByteSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
			back, err := ParseByteSize(got.String())
			if err != nil || back != got {
				t.Errorf("String %q reads back as %d, %v", got.String(), back, err)
			}
		})
	}
}

type sized struct {
	Max   ByteSize  `yaml:"max"`
	PerID ByteSizes `yaml:"per_id"`
}

type sizedRoot struct {
	S sized `yaml:"s"`
}

// TestDecodeByteSize: sizes decode from the file and the environment, and
// a bad one is a problem at its key and line.
func TestDecodeByteSize(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		env     []string
		want    sized
		wantErr string
	}{
		{name: "file", yaml: "s:\n  max: 10GiB\n  per_id: {A: 1GB, B: 4096}\n",
			want: sized{Max: 10 << 30, PerID: ByteSizes{"A": 1e9, "B": 4096}}},
		{name: "plain bytes", yaml: "s:\n  max: 1073741824\n", want: sized{Max: 1 << 30}},
		{name: "environment", env: []string{"OTAWATCH_S_MAX=512MiB", "OTAWATCH_S_PER_ID=A=1GiB, B=2GiB"},
			want: sized{Max: 512 << 20, PerID: ByteSizes{"A": 1 << 30, "B": 2 << 30}}},
		{name: "environment replaces the file's map", yaml: "s:\n  per_id: {A: 1GB}\n", env: []string{"OTAWATCH_S_PER_ID=B=1KiB"},
			want: sized{PerID: ByteSizes{"B": 1 << 10}}},
		{name: "bad in file", yaml: "s:\n  max: 10 GiBs\n", wantErr: `(config):2: s.max: "10 GiBs" is not a size`},
		{name: "bad in environment", env: []string{"OTAWATCH_S_MAX=lots"}, wantErr: `s.max: from OTAWATCH_S_MAX: "lots" is not a size`},
		{name: "bad pair in environment", env: []string{"OTAWATCH_S_PER_ID=A"}, wantErr: `s.per_id: from OTAWATCH_S_PER_ID: "A" is not NAME=SIZE`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got sizedRoot
			err := Decode("", []byte(tc.yaml), tc.env, &got)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.S, tc.want) {
				t.Errorf("got %+v, want %+v", got.S, tc.want)
			}
		})
	}
}

func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"0", "10GiB", "1GB", "-1", "512 MiB", "9223372036854775807", "8EiB", "1.5k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseByteSize(s)
		if err != nil {
			return
		}
		back, err := ParseByteSize(v.String())
		if err != nil || back != v {
			t.Fatalf("%q -> %d -> %q -> %d, %v", s, v, v.String(), back, err)
		}
	})
}
