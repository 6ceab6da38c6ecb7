package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	StreamShadow   = "SHADOW"
	StreamRollout  = "ROLLOUT"
	StreamAlerts   = "ALERTS"
	StreamNotify   = "NOTIFY"
	StreamRejected = "REJECTED"
	// StreamAudit (events/audit.go) holds the hash-chain checkpoints.
)

// Durable consumer names. They are public API: renaming one replays its stream.
//
// ConsumerAlertingShadow and ConsumerAlertingRollout are reserved and not
// created: the alerting service keeps its position in its snapshot
// (JetStream KV) and reads with ordered consumers from there, so a durable
// could only disagree with it (see services/alerting).
const (
	ConsumerProjectorShadow  = "projector-shadow"
	ConsumerProjectorRollout = "projector-rollout"
	ConsumerProjectorAlerts  = "projector-alerts"
	ConsumerProjectorNotify  = "projector-notify"
	ConsumerAlertingShadow   = "alerting-shadow"
	ConsumerAlertingRollout  = "alerting-rollout"
	ConsumerRolloutShadow    = "rollout-shadow"
	ConsumerNotifyAlerts     = "notify-alerts"
)

// StreamOptions are the operator's settings shared by every stream.
type StreamOptions struct {
	// Replicas is the number of copies in a cluster (1 on one server).
	Replicas int
	// MaxAge is how long events are kept; 0 keeps them forever.
	MaxAge time.Duration
	// DuplicateWindow is how long a Nats-Msg-Id is remembered for dedup.
	DuplicateWindow time.Duration
	// MaxBytes bounds every stream's size in bytes; 0 or -1 leaves the
	// audit streams unbounded (REJECTED always has a bound, see
	// MaxBytesFor).
	MaxBytes int64
	// StreamMaxBytes overrides MaxBytes for the streams it names (keys are
	// stream names, e.g. StreamShadow); -1 is unbounded, 0 is no override.
	StreamMaxBytes map[string]int64
}

// DefaultRejectedMaxBytes is REJECTED's bound when neither MaxBytes nor an
// override sets a smaller one: REJECTED holds what anyone could send, so it
// is never unbounded unless an operator says so explicitly.
const DefaultRejectedMaxBytes int64 = 1 << 30

// MaxRejectedEventSize is REJECTED's per-message limit (MaxMsgSize). A
// record built by NewRejected is far below it: 64 KiB of raw bytes are
// 87,384 in base64, plus a reason of at most 1 KiB and an MQTT topic of at
// most 64 KiB.
const MaxRejectedEventSize int32 = 256 << 10

// StreamNames returns the name of every otawatch stream.
func StreamNames() []string {
	return []string{StreamShadow, StreamRollout, StreamAlerts, StreamNotify, StreamRejected, StreamAudit}
}

// ChainedStreams returns the streams the audit service chains and
// checkpoints (every stream but AUDIT itself).
func ChainedStreams() []string {
	return []string{StreamShadow, StreamRollout, StreamAlerts, StreamNotify, StreamRejected}
}

// MaxBytesFor returns stream's byte limit in JetStream's terms (-1 is
// unbounded): its override if it has one; for REJECTED otherwise the
// smaller of MaxBytes and DefaultRejectedMaxBytes; for the others
// MaxBytes.
func (o StreamOptions) MaxBytesFor(stream string) int64 {
	if v, ok := o.StreamMaxBytes[stream]; ok && v != 0 {
		return max(v, -1)
	}
	if stream == StreamRejected {
		if o.MaxBytes > 0 && o.MaxBytes < DefaultRejectedMaxBytes {
			return o.MaxBytes
		}
		return DefaultRejectedMaxBytes
	}
	if o.MaxBytes > 0 {
		return o.MaxBytes
	}
	return -1
}

// DefaultDuplicateWindow covers a device's retries (5 s, 15 s, 45 s) and a
// bridge restart.
const DefaultDuplicateWindow = 2 * time.Minute

// StreamConfigs returns the configuration of every stream: file storage,
// immutable (DenyDelete, DenyPurge), with the operator's replicas, age,
// duplicate window and byte limits (MaxBytesFor).
//
// What happens at a byte limit differs by stream. SHADOW, ROLLOUT, ALERTS
// and NOTIFY are the audit log: at their limit they refuse new events
// (DiscardNew) and keep every old one, so a publisher sees the refusal and
// holds its input (the bridge stops acknowledging MQTT) instead of the log
// silently losing its past. REJECTED holds what anyone could send: at its
// limit it drops its oldest records (DiscardOld), and each record is
// bounded (NewRejected, MaxRejectedEventSize), so no sender can make it
// refuse anything or grow past its bound.
func StreamConfigs(o StreamOptions) []jetstream.StreamConfig {
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
	}
	mk := func(name, desc string, subjects ...string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			MaxBytes:    o.MaxBytesFor(name),
			MaxAge:      o.MaxAge,
			Replicas:    o.Replicas,
			Duplicates:  o.DuplicateWindow,
			DenyDelete:  true,
			DenyPurge:   true,
		}
	}
	return []jetstream.StreamConfig{
		mk(StreamShadow, "every accepted device report, desired-state change and presence transition",
			SubjectShadowReported+".>", SubjectShadowDesired+".>", SubjectDevicePresence+".>"),
		mk(StreamRollout, "rollout job and wave lifecycle", SubjectRollout+".>"),
		mk(StreamAlerts, "alert lifecycle", SubjectAlert+".>"),
		mk(StreamNotify, "every notification routing and delivery decision", SubjectNotify+".>"),
		rejected(mk(StreamRejected, "input that could not be accepted, raw, with the reason", SubjectRejected+".>")),
		mk(StreamAudit, "hash-chain checkpoints of every other stream", SubjectAuditCheckpoint+".>"),
	}
}

// rejected makes REJECTED drop its oldest records at its limit and refuse
// a record larger than NewRejected builds.
func rejected(c jetstream.StreamConfig) jetstream.StreamConfig {
	c.Discard = jetstream.DiscardOld
	c.MaxMsgSize = MaxRejectedEventSize
	return c
}

// EnsureStreams creates every stream, or updates it to StreamConfigs(o). It is
// idempotent and safe to run from every service at start. Each call gets a
// short timeout and is retried, because a JetStream API call right after a
// leader failover can hang.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	for _, cfg := range StreamConfigs(o) {
		err := Retry(ctx, 5, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateStream(ctx, cfg)
			return err
		})
		if err != nil {
			return fmt.Errorf("create or update stream %q: %w", cfg.Name, err)
		}
	}
	return nil
}

// APITimeout bounds one JetStream API call made by Retry.
const APITimeout = 5 * time.Second

// Retry runs call up to attempts times, each under APITimeout, with a short
// growing pause between attempts (exponential with jitter from 100 ms; the
// one backoff library, cenkalti/backoff). It stops early on ctx's end or on
// an error that retrying cannot fix (a refused configuration).
func Retry(ctx context.Context, attempts int, call func(context.Context) error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	var last error
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		cctx, cancel := context.WithTimeout(ctx, APITimeout)
		defer cancel()
		last = call(cctx)
		if last != nil && !retryable(last) {
			return struct{}{}, backoff.Permanent(last)
		}
		return struct{}{}, last
	}, backoff.WithBackOff(b), backoff.WithMaxTries(uint(max(attempts, 1))), backoff.WithMaxElapsedTime(0))
	if err != nil && ctx.Err() != nil && last != nil && !errors.Is(err, last) {
		return errors.Join(last, ctx.Err())
	}
	return err
}

func retryable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 503 is "JetStream not ready / no leader"; everything else is a
		// refusal that will not change on its own.
		return apiErr.Code == 503
	}
	return true
}

// IsWrongLastSequence reports whether err is JetStream refusing a write
// whose expected last sequence (of the stream, a subject or a KV key) was
// not the actual one: someone else wrote first.
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
