package bridge

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// checkParse: parseJSON gives what encoding/json (via jsonschema) gives.
func checkParse(t *testing.T, in []byte) {
	t.Helper()
	want, werr := jsonschema.UnmarshalJSON(bytes.NewReader(in))
	got, gerr := parseJSON(in)
	if (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
		t.Fatalf("%q: error %v, encoding/json says %v", in, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\n got %#v\nwant %#v", in, got, want)
	}
}

func TestParseJSON(t *testing.T) {
	tests := []string{
		``, ` `, `null`, `true`, `false`, `tru`, `nul`, `0`, `-0`, `01`, `-`, `1.`, `1.5e`, `1e+5`, `-1.25E-7`, `1e999`,
		`""`, `"a"`, `"\u00e9\n"`, `"é"`, "\"\xff\"", "\"a\x01\"", `"\`, `"\"`, `"\q"`,
		`{}`, `[]`, `{"a":1,"a":2}`, `{"a":[1,{"b":null}],"c":"d"}`, `{"a" 1}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{a:1}`,
		` {"x": [ true , false ] } `, `{} {}`, `{}x`, `{"a":1}}`, `[`, `{`, `{"a":`,
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
		strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001),
	}
	for _, in := range tests {
		checkParse(t, []byte(in))
	}
	for _, b := range readCorpus(t, "") {
		checkParse(t, b)
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, b := range readCorpus(f, "") {
		f.Add(b)
	}
	f.Add([]byte(`{"a":"\ud800","b":-0.0e-0,"c":[{}]}`))
	f.Fuzz(func(t *testing.T, in []byte) { checkParse(t, in) })
}
