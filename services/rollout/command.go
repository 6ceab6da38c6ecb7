package rollout

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/otawatch/otawatch/events"
)

// CommandError is a refused command; Code is one of the events.RolloutErr*
// codes.
type CommandError struct {
	Code string
	Msg  string
}

func (e *CommandError) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &CommandError{Code: events.RolloutErrInvalid, Msg: fmt.Sprintf(format, args...)}
}

func refuse(cmd string, j *Job, format string, args ...any) error {
	return &CommandError{Code: events.RolloutErrConflict,
		Msg: fmt.Sprintf("cannot %s job %s: %s", cmd, j.ID, fmt.Sprintf(format, args...))}
}

// CommandContext is what a command is validated against besides its job.
type CommandContext struct {
	// Now is the command's time: the time of the events it produces.
	Now   time.Time
	Fleet FleetView
	// Jobs are all known jobs, so a start can refuse devices another
	// active job drives.
	Jobs map[string]*Job
	// Defaults fill in a created spec's unset fields.
	Defaults Config
	// CheckCEL compiles a CEL gate expression; nil accepts none.
	CheckCEL func(expr string) error
	// MaxPlanBytes bounds the encoded plan of job_started (the server's
	// max payload less room for the envelope); 0 means no check.
	MaxPlanBytes int
}

// Commands that change a job (the queries list, show and delta do not).
const (
	CmdCreate      = "create"
	CmdStart       = "start"
	CmdPause       = "pause"
	CmdResume      = "resume"
	CmdAbort       = "abort"
	CmdRetryFailed = "retry-failed"
)

// Command validates a command against the job's state (nil when the job
// does not exist) and returns the events it produces, or a *CommandError
// that says why not. It reads no clock: c.Now is the events' time.
func Command(j *Job, cmd string, req events.RolloutRequest, c CommandContext) ([]Pending, error) {
	if cmd == CmdCreate {
		return create(j, req, c)
	}
	if j == nil {
		return nil, &CommandError{Code: events.RolloutErrNotFound, Msg: fmt.Sprintf("no rollout job %q", req.JobID)}
	}
	data := events.RolloutData{JobID: j.ID, Actor: req.Actor}
	switch cmd {
	case CmdStart:
		switch j.Status {
		case events.RolloutCreated:
		case events.RolloutRunning:
			return nil, refuse(cmd, j, "it is already running")
		case events.RolloutPaused:
			return nil, refuse(cmd, j, "it is paused (resume it)")
		default:
			return nil, refuse(cmd, j, "it is %s", j.Status)
		}
		plan, err := planJob(j, c)
		if err != nil {
			return nil, err
		}
		data.Plan = plan
		return []Pending{{events.TypeRolloutJobStarted, data}}, nil
	case CmdPause:
		switch j.Status {
		case events.RolloutRunning:
		case events.RolloutCreated:
			return nil, refuse(cmd, j, "it has not started")
		case events.RolloutPaused:
			return nil, refuse(cmd, j, "it is already paused")
		default:
			return nil, refuse(cmd, j, "it is %s", j.Status)
		}
		data.Reason, data.By, data.Wave = req.Reason, events.ByOperator, j.Wave
		if data.Reason == "" {
			data.Reason = "paused by an operator"
		}
		return []Pending{{events.TypeRolloutJobPaused, data}}, nil
	case CmdResume:
		switch j.Status {
		case events.RolloutPaused:
		case events.RolloutCreated:
			return nil, refuse(cmd, j, "it has not started (start it)")
		case events.RolloutRunning:
			return nil, refuse(cmd, j, "it is running, not paused")
		default:
			return nil, refuse(cmd, j, "it is %s", j.Status)
		}
		return []Pending{{events.TypeRolloutJobResumed, data}}, nil
	case CmdAbort:
		switch j.Status {
		case events.RolloutCreated, events.RolloutRunning, events.RolloutPaused:
		case events.RolloutAborted:
			return nil, refuse(cmd, j, "it is already aborted")
		default:
			return nil, refuse(cmd, j, "it is %s", j.Status)
		}
		data.Reason, data.By, data.Wave = req.Reason, events.ByOperator, j.Wave
		if data.Reason == "" {
			data.Reason = "aborted by an operator"
		}
		return []Pending{{events.TypeRolloutJobAborted, data}}, nil
	case CmdRetryFailed:
		switch j.Status {
		case events.RolloutRunning, events.RolloutPaused:
		case events.RolloutCreated:
			return nil, refuse(cmd, j, "it has not started")
		default:
			return nil, refuse(cmd, j, "it is %s; create a new job for the devices that did not update", j.Status)
		}
		var devs []events.DeviceRef
		for w := 1; w <= j.Wave; w++ {
			for _, ref := range j.Plan[w-1] {
				if st := classify(j, ref, c.Fleet, c.Now); st == stFailed || st == stTimedOut {
					devs = append(devs, ref)
				}
			}
		}
		if len(devs) == 0 {
			return nil, refuse(cmd, j, "no device of its started waves has failed or timed out")
		}
		data.Devices, data.Attempt = devs, j.Attempt+1
		return []Pending{{events.TypeRolloutDevicesRetried, data}}, nil
	}
	return nil, invalid("unknown rollout command %q (create, start, pause, resume, abort, retry-failed)", cmd)
}

func create(j *Job, req events.RolloutRequest, c CommandContext) ([]Pending, error) {
	if req.Spec == nil {
		return nil, invalid("create needs a job spec")
	}
	spec, err := NormalizeSpec(*req.Spec, c.Defaults, c.CheckCEL)
	if err != nil {
		return nil, err
	}
	if j != nil {
		return nil, &CommandError{Code: events.RolloutErrConflict, Msg: fmt.Sprintf("cannot create job %s: it already exists", spec.ID)}
	}
	target := spec.Target
	out := []Pending{{events.TypeRolloutJobCreated, events.RolloutData{JobID: spec.ID, Spec: &spec, Target: &target, Actor: req.Actor}}}
	if !req.Start {
		return out, nil
	}
	// Validate the start against the job as it will be once created.
	e, err := events.New("pending", events.SourceRollout, events.TypeRolloutJobCreated, spec.ID, c.Now, out[0].Data)
	if err != nil {
		return nil, err
	}
	created, err := Apply(nil, 0, e)
	if err != nil {
		return nil, err
	}
	more, err := Command(created, CmdStart, events.RolloutRequest{JobID: spec.ID, Actor: req.Actor}, c)
	if err != nil {
		return nil, err
	}
	return append(out, more...), nil
}

// DecodeRequest reads the body of rollout command cmd strictly
// (events.DecodeRolloutRequest: unknown fields, fields cmd does not use,
// data after the object and an "actor" are refused, by name). A refusal is
// a *CommandError with code invalid, which the HTTP API answers with 400.
func DecodeRequest(cmd string, data []byte) (events.RolloutRequest, error) {
	req, err := events.DecodeRolloutRequest(cmd, data)
	if err != nil {
		return events.RolloutRequest{}, invalid("%v", err)
	}
	return req, nil
}

// Upper bounds of a job spec. They are far above what a rollout needs and
// keep a hostile or mistyped spec from planning more than the service can
// hold or publish.
const (
	// MaxWaves is the most waves a job may ask for.
	MaxWaves = 1000
	// MaxWaveSize is the most devices a job may ask for per wave.
	MaxWaveSize = 100_000
	// MaxRate is the highest desired-state rate, in messages per second,
	// a job may ask for (the broker measured here takes ~41k msg/s in all).
	MaxRate = 10_000
	// MaxJobDevices is the most devices one job may target, listed or
	// selected by type: the plan travels in one job_started event, and a
	// larger fleet is better rolled out as several jobs.
	MaxJobDevices = 100_000
	// MaxURLLen is the longest firmware URL accepted.
	MaxURLLen = 2048
)

// checksumRE is a target checksum: "sha256:" and 64 hex digits.
var checksumRE = regexp.MustCompile(`^sha256:[0-9a-fA-F]{64}$`)

// checkURL says what is wrong with a firmware URL, or "". Devices download
// the image from it, so it must name a host over https (http only when
// allowInsecure, for a lab), and carries no credentials: they would be
// recorded on the event log and sent to every device. The reason never
// repeats a password.
func checkURL(raw string, allowInsecure bool) string {
	if len(raw) > MaxURLLen {
		return fmt.Sprintf("target url is %d bytes long, the limit is %d", len(raw), MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the URL, which may hold a password.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Sprintf("target url is not a URL: %v", err)
	}
	switch {
	case u.User != nil:
		return fmt.Sprintf("target url %q has a user name or password; put no credentials in a job spec", u.Redacted())
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Sprintf("target url %q: scheme %q is not https", raw, u.Scheme)
	case u.Opaque != "" || u.Hostname() == "":
		return fmt.Sprintf("target url %q has no host", raw)
	case u.Scheme == "http" && !allowInsecure:
		return fmt.Sprintf("target url %q is http: use https, or set rollout.allow_insecure_urls: true", raw)
	}
	return ""
}

// NormalizeSpec checks a spec and fills in the defaults: the effective spec
// is what job_created records. Every problem is reported at once.
func NormalizeSpec(s events.RolloutSpec, def Config, checkCEL func(string) error) (events.RolloutSpec, error) {
	var p specProblems
	if err := events.ValidateID("job id", s.ID); err != nil {
		p.add("%v", err)
	}
	p.target(s.Target, def.AllowInsecureURLs)
	p.devices(&s)
	p.policy(&s, def)
	if s.CELGate != "" {
		if checkCEL == nil {
			p.add("cel gate: this build has no CEL support")
		} else if err := checkCEL(s.CELGate); err != nil {
			p.add("cel gate: %v", err)
		}
	}
	if len(p) > 0 {
		return s, invalid("invalid job spec: %s", strings.Join(p, "; "))
	}
	return s, nil
}

// specProblems are the problems of a job spec, in the order found.
type specProblems []string

func (p *specProblems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// target checks the firmware a job sends.
func (p *specProblems) target(t events.DesiredFirmware, allowInsecure bool) {
	if strings.TrimSpace(t.Version) == "" {
		p.add("target version is empty")
	}
	switch {
	case strings.TrimSpace(t.Checksum) == "":
		p.add("target checksum is empty")
	case !checksumRE.MatchString(t.Checksum):
		p.add("target checksum %q is not sha256: and 64 hex digits", shorten(t.Checksum))
	}
	if strings.TrimSpace(t.URL) == "" {
		p.add("target url is empty")
	} else if why := checkURL(t.URL, allowInsecure); why != "" {
		p.add("%s", why)
	}
}

// devices checks whom a job is for: a device type, a list, or both.
func (p *specProblems) devices(s *events.RolloutSpec) {
	if s.DeviceType == "" && len(s.Devices) == 0 {
		p.add("no devices: give a device type, a device list, or both")
	}
	if len(s.Devices) > MaxJobDevices {
		p.add("%d devices listed, the limit is %d (MaxJobDevices): split the job", len(s.Devices), MaxJobDevices)
		s.Devices = nil // not checked one by one
	}
	if s.DeviceType != "" {
		if err := events.ValidateID("device type", s.DeviceType); err != nil {
			p.add("%v", err)
		}
	}
	for _, d := range s.Devices {
		if _, err := events.ParseDeviceRef(d); err != nil {
			p.add("%v", err)
		}
	}
}

// policy fills in the waves, gates, timeouts and rate a spec leaves to the
// service's defaults, and checks their ranges.
func (p *specProblems) policy(s *events.RolloutSpec, def Config) {
	switch {
	case s.Waves < 0 || s.WaveSize < 0:
		p.add("waves and wave size must not be negative")
	case s.Waves == 0 && s.WaveSize == 0:
		s.Waves, s.WaveSize = def.Waves, def.WaveSize
	}
	if s.Waves > MaxWaves {
		p.add("waves %d is more than %d", s.Waves, MaxWaves)
	}
	if s.WaveSize > MaxWaveSize {
		p.add("wave size %d is more than %d", s.WaveSize, MaxWaveSize)
	}
	if s.Gate == 0 {
		s.Gate = def.Gate
	}
	if s.Gate <= 0 || s.Gate > 1 {
		p.add("gate %v is out of range (0, 1]", s.Gate)
	}
	if s.MaxFailure == 0 {
		s.MaxFailure = def.MaxFailure
	}
	if s.MaxFailure < 0 || s.MaxFailure > 1 {
		p.add("max failure %v is out of range [0, 1]", s.MaxFailure)
	}
	if s.MinFinished == 0 {
		s.MinFinished = def.MinFinished
	}
	if s.MinFinished < 1 {
		p.add("min finished %d must be at least 1", s.MinFinished)
	}
	if s.OnFailure == "" {
		s.OnFailure = def.OnFailure
	}
	if s.OnFailure != events.OnFailurePause && s.OnFailure != events.OnFailureAbort {
		p.add("on failure %q is not pause or abort", s.OnFailure)
	}
	if s.DeviceTimeout == 0 {
		s.DeviceTimeout = events.Duration(def.DeviceTimeout)
	}
	if s.DeviceTimeout < 0 {
		p.add("device timeout must not be negative")
	}
	if s.Rate == 0 {
		s.Rate = def.Rate
	}
	if !(s.Rate > 0 && s.Rate <= MaxRate) {
		// !(in range) also refuses NaN, which a JSON body cannot carry but
		// an in-process caller can.
		p.add("rate %v is out of range (0, %d] messages per second", s.Rate, MaxRate)
	}
	if s.Soak < 0 {
		p.add("soak must not be negative")
	}
}

// shorten cuts a value quoted in a reason to a readable length.
func shorten(v string) string {
	const max = 80
	if len(v) <= max {
		return v
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return v[:cut] + "..."
}

// planJob fixes the job's plan: resolve its devices from the fleet, refuse
// devices another active job drives (two jobs would fight over the desired
// state), split into waves.
func planJob(j *Job, c CommandContext) (*events.RolloutPlan, error) {
	devs, err := ResolveDevices(j.Spec, c.Fleet)
	if err != nil {
		return nil, refuse(CmdStart, j, "%v", err)
	}
	if len(devs) == 0 {
		return nil, refuse(CmdStart, j, "it targets no device (no known device of type %q)", j.Spec.DeviceType)
	}
	if len(devs) > MaxJobDevices {
		return nil, refuse(CmdStart, j, "it targets %d devices, the limit is %d: split the job (by device list)", len(devs), MaxJobDevices)
	}
	var clash []string
	for _, other := range c.Jobs {
		if other.ID == j.ID || !other.Active() {
			continue
		}
		for _, ref := range devs {
			if other.WaveOf(ref) > 0 {
				clash = append(clash, ref.String()+" (job "+other.ID+")")
				if len(clash) == 5 {
					break
				}
			}
		}
	}
	if len(clash) > 0 {
		return nil, refuse(CmdStart, j, "devices are in another active job: %s", strings.Join(clash, ", "))
	}
	plan := &events.RolloutPlan{Waves: SplitWaves(devs, j.Spec.Waves, j.Spec.WaveSize)}
	if c.MaxPlanBytes > 0 {
		// Each device is about {"typeId":"...","deviceId":"..."}.
		size := 0
		for _, ref := range devs {
			size += len(ref.TypeID) + len(ref.DeviceID) + 28
		}
		if size > c.MaxPlanBytes {
			return nil, refuse(CmdStart, j, "its plan of %d devices (~%d bytes) exceeds the server's message limit (%d bytes); split the job",
				len(devs), size, c.MaxPlanBytes)
		}
	}
	return plan, nil
}
