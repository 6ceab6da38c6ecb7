package events_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

func TestMaxBytesFor(t *testing.T) {
	const gib = int64(1) << 30
	tests := []struct {
		name   string
		o      events.StreamOptions
		stream string
		want   int64
	}{
		{"audit stream unbounded by default", events.StreamOptions{}, events.StreamShadow, -1},
		{"REJECTED bounded by default", events.StreamOptions{}, events.StreamRejected, events.DefaultRejectedMaxBytes},
		{"max_bytes applies to audit streams", events.StreamOptions{MaxBytes: 10 * gib}, events.StreamAlerts, 10 * gib},
		{"REJECTED keeps its smaller default", events.StreamOptions{MaxBytes: 10 * gib}, events.StreamRejected, gib},
		{"REJECTED takes a smaller max_bytes", events.StreamOptions{MaxBytes: gib / 2}, events.StreamRejected, gib / 2},
		{"override wins", events.StreamOptions{MaxBytes: 10 * gib,
			StreamMaxBytes: map[string]int64{events.StreamShadow: 50 * gib}}, events.StreamShadow, 50 * gib},
		{"override of another stream", events.StreamOptions{MaxBytes: 10 * gib,
			StreamMaxBytes: map[string]int64{events.StreamShadow: 50 * gib}}, events.StreamNotify, 10 * gib},
		{"REJECTED override raises it", events.StreamOptions{
			StreamMaxBytes: map[string]int64{events.StreamRejected: 4 * gib}}, events.StreamRejected, 4 * gib},
		{"-1 override is unbounded", events.StreamOptions{MaxBytes: gib,
			StreamMaxBytes: map[string]int64{events.StreamRejected: -1}}, events.StreamRejected, -1},
		{"0 override is no override", events.StreamOptions{MaxBytes: gib,
			StreamMaxBytes: map[string]int64{events.StreamRollout: 0}}, events.StreamRollout, gib},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.o.MaxBytesFor(tc.stream); got != tc.want {
				t.Errorf("MaxBytesFor(%s) = %d, want %d", tc.stream, got, tc.want)
			}
		})
	}
}

// TestStreamConfigsDiscard: the audit streams refuse new events at their
// limit, REJECTED drops its oldest and has a per-message limit.
func TestStreamConfigsDiscard(t *testing.T) {
	for _, cfg := range events.StreamConfigs(events.StreamOptions{MaxBytes: 1 << 30}) {
		t.Run(cfg.Name, func(t *testing.T) {
			wantDiscard, wantMsg := jetstream.DiscardNew, int32(0)
			if cfg.Name == events.StreamRejected {
				wantDiscard, wantMsg = jetstream.DiscardOld, events.MaxRejectedEventSize
			}
			if cfg.Discard != wantDiscard || cfg.MaxMsgSize != wantMsg || cfg.MaxBytes != 1<<30 {
				t.Errorf("discard %v, max_msg_size %d, max_bytes %d; want %v, %d, %d",
					cfg.Discard, cfg.MaxMsgSize, cfg.MaxBytes, wantDiscard, wantMsg, 1<<30)
			}
		})
	}
}

func TestNewRejected(t *testing.T) {
	big := bytes.Repeat([]byte("A"), 5_000_000)
	tests := []struct {
		name          string
		raw           []byte
		reason        string
		wantRaw       int
		wantTruncated bool
		wantReason    int
	}{
		{"empty", nil, "empty payload", 0, false, len("empty payload")},
		{"small", []byte(`{"state":{}}`), "no firmware", 12, false, len("no firmware")},
		{"exactly the bound", big[:events.MaxRejectedRaw], "too big", events.MaxRejectedRaw, false, 7},
		{"one over the bound", big[:events.MaxRejectedRaw+1], "too big", events.MaxRejectedRaw, true, 7},
		{"5 MB", big, strings.Repeat("é", 2000), events.MaxRejectedRaw, true, events.MaxRejectedReason},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := events.NewRejected("bridge", tc.reason, tc.raw)
			sum := sha256.Sum256(tc.raw)
			if len(d.Raw) != tc.wantRaw || d.Truncated != tc.wantTruncated {
				t.Errorf("raw %d bytes, truncated %v; want %d, %v", len(d.Raw), d.Truncated, tc.wantRaw, tc.wantTruncated)
			}
			if !bytes.Equal(d.Raw, tc.raw[:len(d.Raw)]) {
				t.Errorf("raw is not the start of the input")
			}
			if d.Size != int64(len(tc.raw)) || d.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("size %d sha256 %s; want %d %x", d.Size, d.SHA256, len(tc.raw), sum)
			}
			if len(d.Reason) > tc.wantReason || !strings.HasPrefix(tc.reason, strings.TrimSuffix(d.Reason, "...")) {
				t.Errorf("reason %d bytes (%.20q...), want at most %d and a prefix of the input's", len(d.Reason), d.Reason, tc.wantReason)
			}
			if !utf8Valid(d.Reason) {
				t.Errorf("reason was cut inside a UTF-8 sequence")
			}
		})
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// TestRejectedEventFitsItsStream: the largest record NewRejected builds
// (raw at its bound, a long reason, the longest MQTT topic) is under
// REJECTED's per-message limit.
func TestRejectedEventFitsItsStream(t *testing.T) {
	d := events.NewRejected("bridge", strings.Repeat("r", 10_000), bytes.Repeat([]byte{0xff}, 10<<20))
	d.Topic = strings.Repeat("t", 65535)
	ev, err := events.New(strings.Repeat("i", 64), events.SourceBridge, events.TypeRejected,
		events.RejectedSubject("bridge"), time.Now(), d)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > int(events.MaxRejectedEventSize) {
		t.Errorf("largest REJECTED event is %d bytes, over MaxRejectedEventSize %d", len(b), events.MaxRejectedEventSize)
	}
}

// fill publishes events of size bytes to subject until the stream refuses
// one (returning that error) or n were stored.
func fill(ctx context.Context, t *testing.T, js jetstream.JetStream, subject string, size, n int) (stored int, err error) {
	t.Helper()
	body := bytes.Repeat([]byte("x"), size)
	for i := range n {
		if _, err := js.Publish(ctx, subject, body, jetstream.WithMsgID(fmt.Sprintf("%s-%d", subject, i))); err != nil {
			return i, err
		}
	}
	return n, nil
}

// TestByteLimits: at its limit an audit stream refuses new events and keeps
// every old one; REJECTED drops its oldest and keeps taking new ones; a
// bigger limit given to EnsureStreams applies to the existing streams.
func TestByteLimits(t *testing.T) {
	js := startJetStream(t) // streams created with the defaults first
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const limit = 64 << 10
	small := events.StreamOptions{StreamMaxBytes: map[string]int64{events.StreamShadow: limit, events.StreamRejected: limit}}
	if err := events.EnsureStreams(ctx, js, small); err != nil {
		t.Fatalf("ensure streams with small limits: %v", err)
	}

	t.Run("SHADOW refuses new", func(t *testing.T) {
		subject := events.ShadowReportedSubject("gateway", "dev-1")
		stored, err := fill(ctx, t, js, subject, 1000, 1000)
		if err == nil {
			t.Fatalf("stored %d KB on SHADOW with a %d-byte limit, want a refusal", stored, limit)
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || !strings.Contains(apiErr.Description, "maximum bytes exceeded") {
			t.Fatalf("refusal is %v, want JetStream's maximum bytes exceeded", err)
		}
		info := streamInfo(ctx, t, js, events.StreamShadow)
		if info.State.FirstSeq != 1 || info.State.Msgs != uint64(stored) || stored == 0 {
			t.Errorf("SHADOW first seq %d, %d messages; want 1 and the %d stored: nothing old dropped",
				info.State.FirstSeq, info.State.Msgs, stored)
		}
		if info.State.Bytes > limit {
			t.Errorf("SHADOW holds %d bytes, over its limit %d", info.State.Bytes, limit)
		}
	})

	t.Run("REJECTED drops oldest", func(t *testing.T) {
		subject := events.RejectedSubject("bridge")
		if stored, err := fill(ctx, t, js, subject, 1000, 300); err != nil {
			t.Fatalf("REJECTED refused after %d: %v", stored, err)
		}
		info := streamInfo(ctx, t, js, events.StreamRejected)
		if info.State.LastSeq != 300 || info.State.FirstSeq == 1 || info.State.Bytes > limit {
			t.Errorf("REJECTED seqs %d..%d, %d bytes; want the last 300, the first dropped, at most %d bytes",
				info.State.FirstSeq, info.State.LastSeq, info.State.Bytes, limit)
		}
		_, err := js.Publish(ctx, subject, bytes.Repeat([]byte("x"), int(events.MaxRejectedEventSize)+1))
		if err == nil {
			t.Errorf("REJECTED took a message over MaxRejectedEventSize")
		}
	})

	t.Run("a bigger limit applies on restart", func(t *testing.T) {
		big := events.StreamOptions{StreamMaxBytes: map[string]int64{events.StreamShadow: 4 * limit}}
		if err := events.EnsureStreams(ctx, js, big); err != nil {
			t.Fatalf("ensure streams with a bigger limit: %v", err)
		}
		info := streamInfo(ctx, t, js, events.StreamShadow)
		if info.Config.MaxBytes != 4*limit || info.Config.Discard != jetstream.DiscardNew {
			t.Fatalf("SHADOW max_bytes %d discard %v after update, want %d DiscardNew", info.Config.MaxBytes, info.Config.Discard, 4*limit)
		}
		if _, err := js.Publish(ctx, events.ShadowReportedSubject("gateway", "dev-2"), []byte("{}")); err != nil {
			t.Errorf("SHADOW refuses after its limit was raised: %v", err)
		}
		if got := streamInfo(ctx, t, js, events.StreamRejected).Config.MaxBytes; got != events.DefaultRejectedMaxBytes {
			t.Errorf("REJECTED max_bytes %d after its override was removed, want the default %d", got, events.DefaultRejectedMaxBytes)
		}
	})
}

func streamInfo(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}
