package events

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

// RolloutData is the part every rollout event's data shares. Each type adds
// its own fields next to these (see services/rollout).
type RolloutData struct {
	JobID string `json:"jobId"`
	// Wave is the 1-based wave of wave_* events; 0 otherwise.
	Wave int `json:"wave,omitempty"`
	// Target is the job's firmware, on job_created.
	Target *DesiredFirmware `json:"target,omitempty"`
	// Reason says why, on paused, aborted, wave_gated.
	Reason string `json:"reason,omitempty"`
}

// Rollout command subjects: the rollout service answers NATS requests on
// RolloutCommandSubject(cmd); the CLI and the HTTP API send them.
const RolloutCommandPrefix = "otawatch.rollout.cmd"

// RolloutCommandSubject is the request subject of a rollout command
// ("create", "list", "show", "pause", "resume", "abort", "retry-failed").
func RolloutCommandSubject(cmd string) string { return RolloutCommandPrefix + "." + cmd }
