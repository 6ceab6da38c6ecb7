package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Rollout event types, on subject rollout.{jobId}.{event} where event is the
// name between "io.otawatch.rollout." and ".v1".
const (
	TypeRolloutJobCreated    = "io.otawatch.rollout.job_created.v1"
	TypeRolloutJobStarted    = "io.otawatch.rollout.job_started.v1"
	TypeRolloutJobPaused     = "io.otawatch.rollout.job_paused.v1"
	TypeRolloutJobResumed    = "io.otawatch.rollout.job_resumed.v1"
	TypeRolloutJobAborted    = "io.otawatch.rollout.job_aborted.v1"
	TypeRolloutJobCompleted  = "io.otawatch.rollout.job_completed.v1"
	TypeRolloutWaveStarted   = "io.otawatch.rollout.wave_started.v1"
	TypeRolloutWaveGated     = "io.otawatch.rollout.wave_gated.v1"
	TypeRolloutWaveCompleted = "io.otawatch.rollout.wave_completed.v1"
)

// RolloutData is the data of every rollout event. JobID is always set; each
// type sets its own fields:
//
//	job_created       Spec, Target
//	job_started       Plan
//	job_paused        Reason, By, Wave
//	job_aborted       Reason, By, Wave
//	wave_started      Wave
//	wave_gated        Wave, Gate, Progress, Reason
//	wave_completed    Wave, Progress
//	devices_sent      Devices, Attempt
//	devices_retried   Devices, Attempt
//	devices_retracted Devices
type RolloutData struct {
	JobID string `json:"jobId"`
	// Wave is the 1-based wave of wave_* events; 0 otherwise.
	Wave int `json:"wave,omitempty"`
	// Target is the job's firmware, on job_created.
	Target *DesiredFirmware `json:"target,omitempty"`
	// Reason says why, on paused, aborted, wave_gated.
	Reason string `json:"reason,omitempty"`

	// Spec is the effective job spec, on job_created.
	Spec *RolloutSpec `json:"spec,omitempty"`
	// Plan is the devices by wave, fixed on job_started.
	Plan *RolloutPlan `json:"plan,omitempty"`
	// Gate is the gate decision, on wave_gated.
	Gate *GateDecision `json:"gate,omitempty"`
	// Progress is the wave's devices by state when it was gated or
	// completed (reports after that still count in the live view).
	Progress *WaveProgress `json:"progress,omitempty"`
	// Devices are the devices of devices_sent, devices_retried and
	// devices_retracted.
	Devices []DeviceRef `json:"devices,omitempty"`
	// Attempt is the send round of devices_sent and devices_retried (0 is
	// the waves' first send, n the n-th retry-failed).
	Attempt int `json:"attempt,omitempty"`
	// By is who paused or aborted the job (ByOperator, ByFailurePolicy).
	By string `json:"by,omitempty"`
	// Actor names who sent the command that wrote the event (the API
	// token's name, or the CLI user), when known.
	Actor string `json:"actor,omitempty"`
}

// Rollout command subjects: the rollout service answers NATS requests on
// RolloutCommandSubject(cmd, identity); the CLI and the HTTP API send them.
const RolloutCommandPrefix = "otawatch.rollout.cmd"

// RolloutCommandSubject is the request subject of a rollout command
// ("create", "start", "list", "show", "pause", "resume", "abort",
// "retry-failed", and "delta": a device's desired-vs-reported difference)
// sent by identity (ConnIdentity of the sender's connection). The server's
// permissions let each identity publish only under its own name, so the
// last token tells the rollout service who asks.
func RolloutCommandSubject(cmd, identity string) string {
	return RolloutCommandPrefix + "." + cmd + "." + identity
}

// ParseRolloutCommandSubject splits a rollout command subject into its
// command and the sender's identity.
func ParseRolloutCommandSubject(subject string) (cmd, identity string, ok bool) {
	rest, found := strings.CutPrefix(subject, RolloutCommandPrefix+".")
	if !found {
		return "", "", false
	}
	cmd, identity, found = strings.Cut(rest, ".")
	if !found || cmd == "" || identity == "" || strings.Contains(identity, ".") {
		return "", "", false
	}
	return cmd, identity, true
}

// Rollout event types that record what the orchestrator did toward devices;
// they sit next to the job and wave lifecycle types above.
const (
	// TypeRolloutDevicesSent marks devices whose desired state the broker
	// acknowledged (MQTT PUBACK): a restarted orchestrator does not send to
	// them again.
	TypeRolloutDevicesSent = "io.otawatch.rollout.devices_sent.v1"
	// TypeRolloutDevicesRetried is a retry-failed command: the devices listed
	// get the desired state again, as attempt Attempt.
	TypeRolloutDevicesRetried = "io.otawatch.rollout.devices_retried.v1"
	// TypeRolloutDevicesRetracted marks devices of an aborted job whose
	// retained desired state was cleared: the broker acknowledged a
	// zero-length retained publish to their delta topic (MQTT PUBACK), so a
	// device that connects later receives nothing. A restarted orchestrator
	// clears only the devices not marked yet; clearing one twice is
	// harmless.
	TypeRolloutDevicesRetracted = "io.otawatch.rollout.devices_retracted.v1"
)

// RolloutEventName is the last subject token of a rollout event type
// ("io.otawatch.rollout.wave_started.v1" -> "wave_started"), or "" when typ
// is not a rollout type.
func RolloutEventName(typ string) string {
	const pre, suf = "io.otawatch.rollout.", ".v1"
	if !strings.HasPrefix(typ, pre) || !strings.HasSuffix(typ, suf) || len(typ) <= len(pre)+len(suf) {
		return ""
	}
	return typ[len(pre) : len(typ)-len(suf)]
}

// Rollout job statuses.
const (
	RolloutCreated   = "created"
	RolloutRunning   = "running"
	RolloutPaused    = "paused"
	RolloutCompleted = "completed"
	RolloutAborted   = "aborted"
)

// Who paused or aborted a job (RolloutData.By).
const (
	ByOperator      = "operator"
	ByFailurePolicy = "failure_policy"
)

// Failure policy actions (RolloutSpec.OnFailure).
const (
	OnFailurePause = "pause"
	OnFailureAbort = "abort"
)

// Duration is a time.Duration written in JSON as a Go duration string
// ("30m", "1h30m"), so job specs read the way operators type them.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string, or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration %s: want a string like \"30m\"", b)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// DeviceRef names one device.
type DeviceRef struct {
	TypeID   string `json:"typeId"`
	DeviceID string `json:"deviceId"`
}

// String is "typeId/deviceId".
func (d DeviceRef) String() string { return d.TypeID + "/" + d.DeviceID }

// ParseDeviceRef reads "typeId/deviceId", or a bare "deviceId" (TypeID
// empty, to be resolved by the caller). Both ids must pass ValidateID.
func ParseDeviceRef(s string) (DeviceRef, error) {
	typ, id, ok := strings.Cut(s, "/")
	if !ok {
		if err := ValidateID("device id", s); err != nil {
			return DeviceRef{}, err
		}
		return DeviceRef{DeviceID: s}, nil
	}
	if err := ValidateID("type id", typ); err != nil {
		return DeviceRef{}, err
	}
	if err := ValidateID("device id", id); err != nil {
		return DeviceRef{}, err
	}
	return DeviceRef{TypeID: typ, DeviceID: id}, nil
}

// RolloutSpec is what a rollout job asks for. The rollout service fills in
// its configured defaults at create, and job_created records the effective
// spec, so the job's behaviour never depends on a later config change.
type RolloutSpec struct {
	// ID is the job id (ValidateID); create generates one when empty.
	ID     string          `json:"id"`
	Target DesiredFirmware `json:"target"`
	// DeviceType selects every known device of that type when the job
	// starts; Devices names devices ("typeId/deviceId", or a bare id whose
	// type is known or is DeviceType). Either or both.
	DeviceType string   `json:"deviceType,omitempty"`
	Devices    []string `json:"devices,omitempty"`
	// Waves caps the number of waves and WaveSize the devices per wave (0:
	// no cap). The plan has ceil(devices/WaveSize) waves, at most Waves, of
	// equal size (the first ones one larger when it does not divide).
	Waves    int `json:"waves,omitempty"`
	WaveSize int `json:"waveSize,omitempty"`
	// Gate is the share of a wave's online devices that must complete before
	// the next wave starts (0 < Gate <= 1).
	Gate float64 `json:"gate"`
	// MaxFailure is the share of a wave's online devices that may fail or
	// time out; beyond it (once MinFinished devices of the wave finished)
	// the job is paused or aborted, as OnFailure says.
	MaxFailure  float64 `json:"maxFailure"`
	MinFinished int     `json:"minFinished"`
	OnFailure   string  `json:"onFailure"`
	// DeviceTimeout: a device that neither completes nor fails this long
	// after its desired state was recorded counts as timed out.
	DeviceTimeout Duration `json:"deviceTimeout"`
	// Rate is the most desired-state messages sent to devices per second.
	Rate float64 `json:"rate"`
	// Soak is how long a gated wave is watched before the next one starts.
	Soak Duration `json:"soak,omitempty"`
	// CELGate is an extra condition, in the alert rules' language, that must
	// hold (besides Gate) for a wave to pass.
	CELGate string `json:"celGate,omitempty"`
}

// WaveProgress is a wave's devices by state. Targeted is the wave's size
// in the job's plan from the moment the job starts (a wave not started has
// all its devices queued). The states are exclusive and add up to
// Targeted: Queued (desired state not sent yet), Pending (sent, no report
// since), InProgress, Completed, Failed, TimedOut (neither completed nor
// failed within the device timeout), Offline (potentially offline, or
// offline by its presence will, without a report since the desired state
// was sent). otawatch computes it in one place for show, the API and the
// dashboard alike.
type WaveProgress struct {
	Targeted   int `json:"targeted"`
	Queued     int `json:"queued"`
	Pending    int `json:"pending"`
	InProgress int `json:"inProgress"`
	Completed  int `json:"completed"`
	Failed     int `json:"failed"`
	TimedOut   int `json:"timedOut"`
	Offline    int `json:"offline"`
}

// Add returns the sum of two progresses.
func (p WaveProgress) Add(q WaveProgress) WaveProgress {
	return WaveProgress{
		Targeted: p.Targeted + q.Targeted, Queued: p.Queued + q.Queued, Pending: p.Pending + q.Pending,
		InProgress: p.InProgress + q.InProgress, Completed: p.Completed + q.Completed, Failed: p.Failed + q.Failed,
		TimedOut: p.TimedOut + q.TimedOut, Offline: p.Offline + q.Offline,
	}
}

// GateDecision is a wave's gate evaluated at one instant, with the reason in
// words.
type GateDecision struct {
	Passed bool   `json:"passed"`
	Reason string `json:"reason"`
	// Online is the wave's devices less the offline ones; Required is the
	// completions the gate needs of them.
	Online    int `json:"online"`
	Completed int `json:"completed"`
	Required  int `json:"required"`
	// CEL is the extra CEL gate's result, when the job has one.
	CEL *bool `json:"cel,omitempty"`
}

// RolloutPlan is the job's devices split into waves, fixed when it starts.
type RolloutPlan struct {
	Waves [][]DeviceRef `json:"waves"`
}

// RolloutJob is a job as the rollout service sees it: the fold of its
// events, plus live per-wave progress from the fleet state. It is the reply
// to list (without Waves) and show.
type RolloutJob struct {
	ID         string      `json:"id"`
	Status     string      `json:"status"`
	Spec       RolloutSpec `json:"spec"`
	CreatedAt  time.Time   `json:"createdAt"`
	StartedAt  time.Time   `json:"startedAt,omitzero"`
	FinishedAt time.Time   `json:"finishedAt,omitzero"`
	UpdatedAt  time.Time   `json:"updatedAt"`
	// Reason and By say why the job is paused or aborted.
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
	// Wave is the open wave (1-based); 0 before the first starts.
	Wave      int           `json:"wave"`
	WaveCount int           `json:"waveCount"`
	Attempts  int           `json:"attempts,omitempty"`
	Total     WaveProgress  `json:"total"`
	Waves     []RolloutWave `json:"waves,omitempty"`

	// Retracted and RetractPending count, for an aborted job, the devices
	// whose retained desired state was cleared and those still to clear
	// (sent a delta, no completed or failed report since).
	Retracted      int `json:"retracted,omitempty"`
	RetractPending int `json:"retractPending,omitempty"`
}

// Wave statuses of RolloutWave.
const (
	WavePlanned   = "planned"
	WaveOpen      = "open"
	WaveSoaking   = "soaking"
	WaveCompleted = "completed"
)

// RolloutWave is one wave's progress and gate.
type RolloutWave struct {
	Wave        int          `json:"wave"`
	Status      string       `json:"status"`
	StartedAt   time.Time    `json:"startedAt,omitzero"`
	GatedAt     time.Time    `json:"gatedAt,omitzero"`
	CompletedAt time.Time    `json:"completedAt,omitzero"`
	Progress    WaveProgress `json:"progress"`
	// Gate is the recorded decision of a gated wave, or the live one of the
	// open wave.
	Gate *GateDecision `json:"gate,omitempty"`
}

// RolloutRequest is the body of a request on RolloutCommandSubject. Create
// uses Spec (and Start to start it at once); list uses nothing; delta uses
// TypeID and DeviceID; the others use JobID, and pause and abort a Reason.
//
// A request body is read with DecodeRolloutRequest, which refuses unknown
// fields and fields the command does not use.
type RolloutRequest struct {
	// Actor names who asks, recorded on the events the command writes. It
	// is never part of a body (json "-"): the rollout service takes it
	// from the sender's identity (CommandActor), and a body that names an
	// "actor" is refused.
	Actor    string       `json:"-"`
	JobID    string       `json:"jobId,omitempty"`
	Spec     *RolloutSpec `json:"spec,omitempty"`
	Start    bool         `json:"start,omitempty"`
	Reason   string       `json:"reason,omitempty"`
	TypeID   string       `json:"typeId,omitempty"`
	DeviceID string       `json:"deviceId,omitempty"`
}

// RolloutActorHeader is the NATS header a front end (the HTTP API) puts
// its caller's name in on a rollout command request.
const RolloutActorHeader = "Otawatch-Actor"

// Rollout reply error codes: what an HTTP front end maps to a status.
const (
	RolloutErrInvalid     = "invalid"     // 400: the request is wrong
	RolloutErrNotFound    = "not_found"   // 404: no such job or device
	RolloutErrConflict    = "conflict"    // 409: refused in the job's state
	RolloutErrForbidden   = "forbidden"   // 403: the sender may not
	RolloutErrUnavailable = "unavailable" // 503: try again
)

// RolloutReply is the reply to a rollout command.
type RolloutReply struct {
	// Error is set when the command was refused; Code classifies it.
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
	// Job is the job after the command (create, show, pause, ...).
	Job *RolloutJob `json:"job,omitempty"`
	// Jobs answers list, newest first.
	Jobs []RolloutJob `json:"jobs,omitempty"`
	// Retried is how many devices retry-failed queued again.
	Retried int `json:"retried,omitempty"`
	// Delta answers delta: the difference between the device's desired and
	// reported firmware (State.Firmware nil when in sync).
	Delta *ShadowDelta `json:"delta,omitempty"`
}

// RolloutError is a refused command, as RolloutRequestDo returns it.
type RolloutError struct {
	Code string
	Msg  string
}

func (e *RolloutError) Error() string { return e.Msg }

// ErrRolloutNotRunning is returned by RolloutRequestDo when no rollout
// service answers the command subject.
var ErrRolloutNotRunning = errors.New("no rollout service answered: is otawatch running?")

// RolloutRequestDo sends a rollout command and waits for the reply. A
// refused command comes back as a *RolloutError; no responders as
// ErrRolloutNotRunning. ctx bounds the wait.
func RolloutRequestDo(ctx context.Context, nc *nats.Conn, cmd string, req RolloutRequest) (*RolloutReply, error) {
	// The actor a front end names travels in RolloutActorHeader, never in
	// the body: the rollout service trusts it only from identities that
	// act for their own users (CommandActor).
	actor := req.Actor
	req.Actor = ""
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode rollout %s request: %w", cmd, err)
	}
	out := nats.NewMsg(RolloutCommandSubject(cmd, ConnIdentity(nc)))
	out.Data = body
	if actor != "" {
		out.Header.Set(RolloutActorHeader, actor)
	}
	msg, err := nc.RequestMsgWithContext(ctx, out)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, ErrRolloutNotRunning
		}
		return nil, fmt.Errorf("rollout %s: %w", cmd, err)
	}
	var rep RolloutReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return nil, fmt.Errorf("decode rollout %s reply: %w", cmd, err)
	}
	if rep.Error != "" {
		return &rep, &RolloutError{Code: rep.Code, Msg: rep.Error}
	}
	return &rep, nil
}
