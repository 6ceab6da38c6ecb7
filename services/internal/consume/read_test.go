package consume_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

func TestReadRangeAndLastMsg(t *testing.T) {
	js := testutil.StartJetStream(t, testutil.JetStreamOptions{})
	ctx := context.Background()
	if m, err := consume.LastMsg(ctx, js.JS, events.StreamAlerts, events.AlertSubject("raised", "warning", "r")); m != nil || err != nil {
		t.Fatalf("LastMsg of an empty subject: %v, %v; want nil, nil", m, err)
	}
	if m, err := consume.LastMsg(ctx, js.JS, "NO_SUCH_STREAM", "x"); m != nil || err != nil {
		t.Fatalf("LastMsg of a missing stream: %v, %v; want nil, nil", m, err)
	}
	publishEvent(t, js, "e1")
	publishRaw(t, js, []byte("not an envelope")) // raw: handed over too
	publishEvent(t, js, "e3")
	// e4 and e5 on another subject.
	for _, id := range []string{"e4", "e5"} {
		ev, err := events.New(id, events.SourceAlerting, events.TypeAlertResolved, events.AlertSubject("resolved", "critical", "q"), time.Date(2025, 7, 22, 11, 31, 0, 0, time.UTC), map[string]string{"id": id})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := ev.Marshal()
		if _, err := js.JS.Publish(ctx, ev.Subject, b); err != nil {
			t.Fatal(err)
		}
	}
	publishEvent(t, js, "e6")

	read := func(subjects []string, from, to uint64, stopAt uint64) (string, error) {
		var got []uint64
		err := consume.ReadRange(ctx, js.JS, events.StreamAlerts, subjects, from, to, func(m consume.Msg) (bool, error) {
			got = append(got, m.Seq)
			return m.Seq == stopAt, nil
		})
		return fmt.Sprint(got), err
	}
	for _, tc := range []struct {
		name     string
		subjects []string
		from, to uint64
		stopAt   uint64
		want     string
	}{
		{"whole range", nil, 0, 6, 0, "[1 2 3 4 5 6]"},
		{"middle", nil, 2, 4, 0, "[2 3 4]"},
		{"stop early", nil, 1, 6, 3, "[1 2 3]"},
		{"empty", nil, 5, 4, 0, "[]"},
		{"one subject", []string{events.AlertSubject("resolved", "critical", "q")}, 1, 5, 0, "[4 5]"},
	} {
		got, err := read(tc.subjects, tc.from, tc.to, tc.stopAt)
		if err != nil || got != tc.want {
			t.Errorf("%s: read %s, %v; want %s", tc.name, got, err, tc.want)
		}
	}
	boom := errors.New("boom")
	err := consume.ReadRange(ctx, js.JS, events.StreamAlerts, nil, 1, 6, func(m consume.Msg) (bool, error) {
		if m.Seq == 2 {
			return false, boom
		}
		return false, nil
	})
	if !errors.Is(err, boom) {
		t.Errorf("a failing fn: got %v, want it back", err)
	}
	last, err := consume.LastMsg(ctx, js.JS, events.StreamAlerts, events.AlertSubject("resolved", "critical", "q"))
	if err != nil || last == nil || last.Sequence != 5 {
		t.Errorf("LastMsg: %v, %v; want seq 5", last, err)
	}
	info, err := consume.StreamInfo(ctx, js.JS, events.StreamAlerts)
	if err != nil || info.State.LastSeq != 6 {
		t.Errorf("StreamInfo: %v, %v; want last seq 6", info, err)
	}
}
