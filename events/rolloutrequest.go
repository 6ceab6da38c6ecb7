package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// rolloutRequestFields are the body fields each rollout command uses. A
// field the command does not use is refused rather than ignored, so a
// caller who puts a reason on a resume, or a spec on a start, hears that
// it had no effect.
var rolloutRequestFields = map[string][]string{
	"create":       {"spec", "start"},
	"start":        {"jobId"},
	"list":         {},
	"show":         {"jobId"},
	"pause":        {"jobId", "reason"},
	"resume":       {"jobId"},
	"abort":        {"jobId", "reason"},
	"retry-failed": {"jobId"},
	"delta":        {"typeId", "deviceId"},
}

// ErrActorInBody is returned (wrapped) by DecodeRolloutRequest for a body
// that names an "actor".
var ErrActorInBody = errors.New(`"actor" is taken from the caller's identity, not the body`)

// DecodeRolloutRequest reads the body of rollout command cmd strictly: a
// JSON object (or nothing), with no data after it, whose fields are all
// RolloutRequest's (matched exactly, case included, at every level of the
// spec) and used by cmd. The error names the command and the field, e.g.
// `pause request: unknown field "spec.wavez"` or `pause request: field
// "spec" is not used by pause (it takes jobId, reason)`. A command it does
// not know is checked for unknown fields only; the rollout service refuses
// the command itself.
func DecodeRolloutRequest(cmd string, data []byte) (RolloutRequest, error) {
	var req RolloutRequest
	if len(bytes.TrimSpace(data)) == 0 {
		return req, nil
	}
	fail := func(format string, args ...any) (RolloutRequest, error) {
		return RolloutRequest{}, fmt.Errorf("%s request: %s", cmd, fmt.Sprintf(format, args...))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var top map[string]json.RawMessage
	if err := dec.Decode(&top); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fail("body is a JSON %s, want a JSON object", te.Value)
		}
		return fail("body is not a JSON object: %v", err)
	}
	if top == nil {
		return fail("body is null, want a JSON object")
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF {
		return fail("data after the JSON object at byte %d", end)
	}
	keys := make([]string, 0, len(top))
	for k := range top {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.EqualFold(k, "actor") {
			return RolloutRequest{}, fmt.Errorf("%s request: %w", cmd, ErrActorInBody)
		}
	}
	if err := unknownField("", top, reflect.TypeFor[RolloutRequest]()); err != "" {
		return fail("unknown field %q", err)
	}
	if used, ok := rolloutRequestFields[cmd]; ok {
		for _, k := range keys {
			if !slices.Contains(used, k) {
				if len(used) == 0 {
					return fail("field %q is not used by %s (it takes no fields)", k, cmd)
				}
				return fail("field %q is not used by %s (it takes %s)", k, cmd, strings.Join(used, ", "))
			}
		}
	}
	// The same bytes into the struct, still refusing unknown fields: the
	// walk above matched names exactly, encoding/json matches them without
	// regard to case, and this decode checks the values' types.
	dec = json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fail("field %q is a JSON %s, want %s", te.Field, te.Value, te.Type)
		}
		return fail("%v", err)
	}
	return req, nil
}

// unknownField returns the dotted path of the first member of obj (in
// name order) that t, a struct type, has no JSON field for, looking into
// members that are themselves structs (or pointers to structs) without
// their own JSON decoding; "" when every member is known.
func unknownField(prefix string, obj map[string]json.RawMessage, t reflect.Type) string {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ft, ok := jsonField(t, k)
		if !ok {
			return prefix + k
		}
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() != reflect.Struct || reflect.PointerTo(ft).Implements(reflect.TypeFor[json.Unmarshaler]()) {
			continue
		}
		var sub map[string]json.RawMessage
		if json.Unmarshal(obj[k], &sub) != nil || sub == nil {
			continue // not an object: the typed decode says so
		}
		if u := unknownField(prefix+k+".", sub, ft); u != "" {
			return u
		}
	}
	return ""
}

// jsonField finds the field of struct type t whose JSON name is exactly
// name.
func jsonField(t reflect.Type, name string) (reflect.Type, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		if tag == name {
			return f.Type, true
		}
	}
	return nil, false
}
