package events

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestDecodeRolloutRequest(t *testing.T) {
	tests := []struct {
		name, cmd, body string
		want            RolloutRequest
		wantErr         string
	}{
		{name: "empty", cmd: "start", body: "", want: RolloutRequest{}},
		{name: "space", cmd: "start", body: " \n", want: RolloutRequest{}},
		{name: "create", cmd: "create",
			body: `{"spec":{"id":"j1","target":{"version":"2.0","checksum":"sha256:aa","url":"https://fw/2.0"},"deviceType":"gw","waves":3,"deviceTimeout":"5m"},"start":true}`,
			want: RolloutRequest{Start: true, Spec: &RolloutSpec{ID: "j1", DeviceType: "gw", Waves: 3, DeviceTimeout: Duration(5 * time.Minute),
				Target: DesiredFirmware{Version: "2.0", Checksum: "sha256:aa", URL: "https://fw/2.0"}}}},
		{name: "pause with a reason", cmd: "pause", body: `{"jobId":"j1","reason":"night"}`, want: RolloutRequest{JobID: "j1", Reason: "night"}},
		{name: "delta", cmd: "delta", body: `{"typeId":"gw","deviceId":"d1"}`, want: RolloutRequest{TypeID: "gw", DeviceID: "d1"}},
		{name: "a command it does not know", cmd: "explode", body: `{"jobId":"j1","reason":"x"}`, want: RolloutRequest{JobID: "j1", Reason: "x"}},

		{name: "actor", cmd: "pause", body: `{"jobId":"j1","actor":"root"}`,
			wantErr: `pause request: "actor" is taken from the caller's identity, not the body`},
		{name: "actor in another case", cmd: "create", body: `{"Actor":"root"}`,
			wantErr: `create request: "actor" is taken from the caller's identity, not the body`},
		{name: "unknown top-level field", cmd: "pause", body: `{"jobId":"j1","force":true}`,
			wantErr: `pause request: unknown field "force"`},
		{name: "a field in another case", cmd: "pause", body: `{"JobID":"j1"}`,
			wantErr: `pause request: unknown field "JobID"`},
		{name: "unknown spec field", cmd: "create", body: `{"spec":{"id":"j1","wavez":3}}`,
			wantErr: `create request: unknown field "spec.wavez"`},
		{name: "unknown target field", cmd: "create", body: `{"spec":{"target":{"version":"1","sha":"x"}}}`,
			wantErr: `create request: unknown field "spec.target.sha"`},
		{name: "field the command does not use", cmd: "resume", body: `{"jobId":"j1","reason":"x"}`,
			wantErr: `resume request: field "reason" is not used by resume (it takes jobId)`},
		{name: "spec on start", cmd: "start", body: `{"spec":{}}`,
			wantErr: `start request: field "spec" is not used by start (it takes jobId)`},
		{name: "anything on list", cmd: "list", body: `{"jobId":"j1"}`,
			wantErr: `list request: field "jobId" is not used by list (it takes no fields)`},
		{name: "trailing object", cmd: "pause", body: `{"jobId":"j1"} {"jobId":"j2"}`,
			wantErr: `pause request: data after the JSON object at byte 14`},
		{name: "trailing garbage", cmd: "pause", body: `{"jobId":"j1"}x`,
			wantErr: `pause request: data after the JSON object at byte 14`},
		{name: "array", cmd: "create", body: `[1]`, wantErr: `create request: body is a JSON array, want a JSON object`},
		{name: "null", cmd: "create", body: `null`, wantErr: `create request: body is null, want a JSON object`},
		{name: "broken", cmd: "create", body: `{"spec":`, wantErr: `create request: body is not a JSON object: unexpected EOF`},
		{name: "wrong type", cmd: "create", body: `{"spec":{"waves":"3"}}`,
			wantErr: `create request: field "spec.waves" is a JSON string, want int`},
		{name: "bad duration", cmd: "create", body: `{"spec":{"soak":"soon"}}`,
			wantErr: `create request: duration "soon": time: invalid duration "soon"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRolloutRequest(tt.cmd, []byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error\n got: %v\nwant: %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	_, err := DecodeRolloutRequest("abort", []byte(`{"actor":"x"}`))
	if !errors.Is(err, ErrActorInBody) {
		t.Errorf("an actor in the body: %v, want ErrActorInBody", err)
	}
}

// TestRolloutRequestHasNoActorOnTheWire: the actor never leaves in a body.
func TestRolloutRequestHasNoActorOnTheWire(t *testing.T) {
	b, err := json.Marshal(RolloutRequest{Actor: "alice", JobID: "j1"})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"jobId":"j1"}` {
		t.Errorf("encoded %s, want no actor", b)
	}
}
