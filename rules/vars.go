package rules

import (
	"fmt"
	"io"
	"strings"
)

// Field is one key of a rule variable. Fields is the one place the
// variables are documented; `otawatch rules vars` prints it, the compiler
// refuses a key that is not in it, and the tests of
// services/internal/ruleeval check the maps it builds have exactly these
// keys.
type Field struct {
	Var  string // event, device, fleet, rollout
	Name string
	// Type is the CEL type: string, double, bool, timestamp.
	Type string
	// When says on which events the key is present; empty is always.
	When string
	Doc  string
}

// Event kinds, the value of event.kind.
const (
	KindReported = "reported" // a device's shadow report
	KindDesired  = "desired"  // a rollout sent a device its target
	KindPresence = "presence" // a device went potentially offline or came back
	KindRollout  = "rollout"  // a rollout job or wave changed
	KindTick     = "tick"     // the periodic check; no event arrived
)

// Fields documents every key of every map variable, in the order they are
// printed. Every number is a double, so arithmetic never mixes int and
// double ("no such overload"); comparisons with int literals work too.
// `now` is a timestamp: the event's time, or the tick's time on a tick.
var Fields = []Field{
	{VarEvent, "kind", "string", "", `what happened: "reported", "desired", "presence", "rollout" or "tick"`},
	{VarEvent, "time", "timestamp", "", "the event's time (when otawatch accepted it); the tick time on a tick"},
	{VarEvent, "id", "string", "not tick", "the CloudEvents id"},
	{VarEvent, "type", "string", "not tick", `the CloudEvents type, e.g. "io.otawatch.shadow.reported.v1"`},
	{VarEvent, "source", "string", "not tick", `who wrote it, e.g. "otawatch/bridge"`},
	{VarEvent, "typeId", "string", "reported, desired, presence", "the device's type id"},
	{VarEvent, "deviceId", "string", "reported, desired, presence", "the device id"},
	{VarEvent, "version", "string", "reported", "the firmware version the device reports"},
	{VarEvent, "status", "string", "reported", `"in_progress", "completed" or "failed"`},
	{VarEvent, "checksum", "string", "reported", "the reported firmware checksum (empty if none)"},
	{VarEvent, "previousVersion", "string", "reported", "the version before this update (empty if none)"},
	{VarEvent, "updateDuration", "double", "reported", "seconds the update took; 0 while in progress"},
	{VarEvent, "errorCode", "string", "reported with an error code", "the device's error code; absent when null: test with has(event.errorCode)"},
	{VarEvent, "deviceTime", "timestamp", "reported", "the device's own timestamp of the report"},
	{VarEvent, "topic", "string", "reported", "the MQTT topic it came on"},
	{VarEvent, "jobId", "string", "desired, rollout", "the rollout job"},
	{VarEvent, "wave", "double", "desired, rollout", "the 1-based wave (0 on job events)"},
	{VarEvent, "targetVersion", "string", "desired; rollout with a target", "the firmware version the job installs"},
	{VarEvent, "state", "string", "presence", `"online" or "offline" (the broker, from the device's presence topic), or "potentially_offline" (silent while it owes a report)`},
	{VarEvent, "lastSeen", "timestamp", "presence", "the device's last report before a potentially_offline transition"},
	{VarEvent, "name", "string", "rollout", `the rollout event, e.g. "job_started", "wave_started", "job_aborted"`},
	{VarEvent, "reason", "string", "rollout", "why (paused, aborted, wave_gated); empty otherwise"},

	{VarDevice, "typeId", "string", "", "the device's type id"},
	{VarDevice, "deviceId", "string", "", "the device id"},
	{VarDevice, "version", "string", "", "the latest reported version (empty if it never reported)"},
	{VarDevice, "status", "string", "", `the latest reported status: "in_progress", "completed", "failed" or empty`},
	{VarDevice, "previousVersion", "string", "", "the version before the latest update"},
	{VarDevice, "checksum", "string", "", "the latest reported checksum"},
	{VarDevice, "duration", "double", "", "seconds the latest finished update took"},
	{VarDevice, "errorCode", "string", "", "the latest error code, empty if none"},
	{VarDevice, "reports", "double", "", "how many reports it sent"},
	{VarDevice, "lastSeen", "timestamp", "", "event time of its latest report (0001-01-01 if none)"},
	{VarDevice, "deviceTime", "timestamp", "", "the device's own timestamp of its latest report"},
	{VarDevice, "online", "bool", "", "false while it is potentially offline or the broker says it is offline; true again when it reports or the broker says online"},
	{VarDevice, "presence", "string", "", `the broker's last word on its connection: "online", "offline", or empty for a device without the presence contract`},
	{VarDevice, "targeted", "bool", "", "a rollout sent it a desired state"},
	{VarDevice, "targetVersion", "string", "", "the version its latest desired state asks for (empty if not targeted)"},
	{VarDevice, "jobId", "string", "", "the job of its latest desired state"},
	{VarDevice, "wave", "double", "", "the wave of its latest desired state (0 if not targeted)"},
	{VarDevice, "desiredAt", "timestamp", "", "when its latest desired state was sent"},
	{VarDevice, "jobStatus", "string", "", `its progress toward the target: "pending", "in_progress", "completed", "failed" or empty`},
	{VarDevice, "quietSince", "timestamp", "", "the later of lastSeen and desiredAt: since when nothing was heard from it that the job cares about"},

	{VarFleet, "devices", "double", "", "devices that have reported or told their presence"},
	{VarFleet, "online", "double", "", "of those, online (a finished device that is silent is idle, and online)"},
	{VarFleet, "potentiallyOffline", "double", "", "of those, silent past offline_after while they owe a report (left out of everything below)"},
	{VarFleet, "offline", "double", "", "of those, offline by what the broker says (their will; left out of everything below)"},
	{VarFleet, "inProgress", "double", "", "online devices whose latest status is in_progress"},
	{VarFleet, "completed", "double", "", "online devices whose latest status is completed"},
	{VarFleet, "failed", "double", "", "online devices whose latest status is failed"},
	{VarFleet, "finished", "double", "", "completed + failed"},
	{VarFleet, "successRate", "double", "", "completed / finished; 1 when none has finished"},
	{VarFleet, "avgDuration", "double", "", "mean seconds of online devices' latest completed updates (0 if none)"},
	{VarFleet, "p95Duration", "double", "", "95th percentile of the same, to the second"},

	{VarRollout, "active", "bool", "", "the job is started and not paused, completed or aborted"},
	{VarRollout, "jobId", "string", "", "the job (empty when there is none)"},
	{VarRollout, "status", "string", "", `"created", "running", "paused", "completed", "aborted" or empty`},
	{VarRollout, "targetVersion", "string", "", "the firmware the job installs"},
	{VarRollout, "wave", "double", "", "the current (latest started) wave, 0 before the first"},
	{VarRollout, "startedAt", "timestamp", "", "when the job started"},
	{VarRollout, "waveStartedAt", "timestamp", "", "when the current wave started"},
	{VarRollout, "waveTargeted", "double", "", "devices targeted in the current wave"},
	{VarRollout, "wavePending", "double", "", "of those, no report since the desired state"},
	{VarRollout, "waveInProgress", "double", "", "of those, in progress"},
	{VarRollout, "waveCompleted", "double", "", "of those, completed on the target version"},
	{VarRollout, "waveFailed", "double", "", "of those, failed"},
	{VarRollout, "waveOffline", "double", "", "of those, potentially offline (also counted by job status)"},
}

// knownFields indexes Fields by variable.
var knownFields = func() map[string]map[string]Field {
	m := map[string]map[string]Field{}
	for _, f := range Fields {
		if m[f.Var] == nil {
			m[f.Var] = map[string]Field{}
		}
		m[f.Var][f.Name] = f
	}
	return m
}()

// FieldNames returns the documented keys of one variable.
func FieldNames(variable string) []string { return sortedKeys(knownFields[variable]) }

// WriteFields prints the variables' documentation, as `otawatch rules vars`
// shows it.
func WriteFields(w io.Writer) error {
	var b strings.Builder
	b.WriteString("now  timestamp  the event's time, or the tick's time on a tick\n")
	last := ""
	for _, f := range Fields {
		if f.Var != last {
			fmt.Fprintf(&b, "\n%s\n", f.Var)
			last = f.Var
		}
		when := ""
		if f.When != "" {
			when = " [" + f.When + "]"
		}
		fmt.Fprintf(&b, "  %-20s %-9s %s%s\n", f.Name, f.Type, f.Doc, when)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
