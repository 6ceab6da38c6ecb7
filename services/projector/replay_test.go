package projector

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

// extraDatabase names another database for the test, dropped at its end
// when it passes.
func (e *env) extraDatabase(suffix string) string {
	e.t.Helper()
	name := e.cfg.Database + "_" + suffix
	e.t.Cleanup(func() {
		if e.t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := Dial(ctx, e.cfg, "")
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(name))
	})
	return name
}

func (e *env) replay(opts ReplayOptions) ReplayProgress {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := Replay(ctx, e.cfg, e.js.JS, testLogger(e.t), opts)
	if err != nil {
		e.t.Fatalf("replay %+v: %v", opts, err)
	}
	return p
}

func (e *env) verify(a, b string) []TableComparison {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Dial(ctx, e.cfg, "")
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	res, err := Verify(ctx, c, a, b)
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

// TestReplay: replaying into the live database changes nothing; a full
// rebuild into a fresh database is identical to it (replay verify says so);
// a replay from the middle of SHADOW gives those reports the same job and
// wave the live projector gave them.
func TestReplay(t *testing.T) {
	e := newEnv(t)
	e.cfg.BatchSize = 300
	shadow := fleetHistory(11, 2000)
	others := otherStreams()
	e.publish(shadow...)
	e.publish(others...)
	e.start(hooks{})
	c := e.conn()
	want, _ := expectShadow(t, shadow)
	waitRows(t, c, uint64(len(want)), "SELECT count() FROM shadow_events FINAL")
	waitRows(t, c, want[len(want)-1].Seq, "SELECT max(stream_seq) FROM device_firmware")
	waitRows(t, c, uint64(len(shadow)-len(want)), "SELECT count() FROM device_events FINAL")
	waitRows(t, c, 6, "SELECT (SELECT count() FROM rollout_events FINAL) + (SELECT count() FROM alerts FINAL) + (SELECT count() FROM notifications FINAL)")
	live := e.cfg.Database

	t.Run("into the live database", func(t *testing.T) {
		before := statusCounts(t, e)
		p := e.replay(ReplayOptions{})
		if p.Events() != uint64(len(shadow)+len(others)) {
			t.Errorf("replayed %d events, want %d", p.Events(), len(shadow)+len(others))
		}
		checkShadow(t, e, shadow)
		if after := statusCounts(t, e); !sameCounts(before, after) {
			t.Errorf("reports per status changed by the replay: %v, then %v", before, after)
		}
	})

	fresh := e.extraDatabase("rebuild")
	t.Run("full rebuild verifies identical", func(t *testing.T) {
		var reports []ReplayProgress
		p := e.replay(ReplayOptions{Database: fresh, Progress: func(p ReplayProgress) { reports = append(reports, p) }})
		if !p.Done || len(reports) == 0 || !reports[len(reports)-1].Done {
			t.Errorf("no final progress report: %+v", reports)
		}
		for _, s := range p.Streams {
			if !s.Done || s.Seq != s.LastSeq {
				t.Errorf("stream %s: at %d of %d, done %v", s.Stream, s.Seq, s.LastSeq, s.Done)
			}
		}
		res := e.verify(live, fresh)
		if len(res) != len(verifiedTables) {
			t.Fatalf("verify compared %d tables, want %d", len(res), len(verifiedTables))
		}
		for _, r := range res {
			if !r.Same() || r.RowsA == 0 {
				t.Errorf("%s: %+v, want identical and not empty", r.Table, r)
			}
		}
	})

	t.Run("from the middle of SHADOW", func(t *testing.T) {
		from := uint64(len(shadow) / 2)
		part := e.extraDatabase("part")
		p := e.replay(ReplayOptions{Database: part, Streams: []string{events.StreamShadow}, FromSeq: from})
		if got, want := p.Events(), uint64(len(shadow))-from+1; got != want {
			t.Errorf("replayed %d events, want %d", got, want)
		}
		pe := *e
		pe.cfg.Database = part
		got := pe.readShadow("shadow_events")
		var wantPart []shadowRow
		for _, r := range want {
			if r.Seq >= from {
				wantPart = append(wantPart, r)
			}
		}
		if len(got) != len(wantPart) {
			t.Fatalf("%d rows, want %d", len(got), len(wantPart))
		}
		for i := range got {
			if !sameRow(got[i], wantPart[i]) {
				t.Fatalf("row %d:\n got %+v\nwant %+v", i, got[i], wantPart[i])
			}
		}
	})

	t.Run("verify reports differences", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		fc, err := Open(ctx, e.cfg, fresh)
		if err != nil {
			t.Fatal(err)
		}
		defer fc.Close()
		// Another value for a row (the later insert wins under FINAL),
		// and a row the live database lacks.
		fe := *e
		fe.cfg.Database = fresh
		var tampered shadowRow
		for _, r := range fe.readShadow("shadow_events") {
			if r.Seq == 30 {
				tampered = r
			}
		}
		tampered.Status = "tampered"
		if err := shadowEventsTable.send(ctx, fc, []*shadowRow{&tampered}); err != nil {
			t.Fatal(err)
		}
		extra := notificationRow{Seq: 99, EventID: "x", Type: "t", Source: "s", Subject: "notify.x.sent", EventTime: t0, Receiver: "x", Outcome: "sent", Data: "{}"}
		if err := notificationsTable.send(ctx, fc, []*notificationRow{&extra}); err != nil {
			t.Fatal(err)
		}
		res := e.verify(live, fresh)
		tests := []struct {
			table string
			same  bool
			diffs []string
		}{
			{"shadow_events", false, []string{"stream_seq 30: values differ"}},
			{"device_firmware", true, nil},
			{"device_events", true, nil},
			{"rollout_events", true, nil},
			{"alerts", true, nil},
			{"notifications", false, []string{"stream_seq 99: only in " + fresh}},
		}
		for _, tt := range tests {
			t.Run(tt.table, func(t *testing.T) {
				i := slices.IndexFunc(res, func(r TableComparison) bool { return r.Table == tt.table })
				if i < 0 {
					t.Fatalf("%s not compared", tt.table)
				}
				r := res[i]
				if r.Same() != tt.same || strings.Join(r.Differences, ";") != strings.Join(tt.diffs, ";") {
					t.Errorf("same %v differences %q, want same %v differences %q (%+v)", r.Same(), r.Differences, tt.same, tt.diffs, r)
				}
			})
		}
	})
}
