package audit

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/testutil"
)

// chainStream is a SHADOW stream of 30 events whose range (from..to) holds
// sequences 11..20; after is later than every event.
type chainStream struct {
	t               *testing.T
	j               *testutil.JetStream
	from, to, after time.Time
}

func newChainStream(t *testing.T) *chainStream {
	s := &chainStream{t: t, j: testutil.StartJetStream(t, testutil.JetStreamOptions{})}
	mark := func() time.Time {
		time.Sleep(20 * time.Millisecond)
		at := time.Now()
		time.Sleep(20 * time.Millisecond)
		return at
	}
	publishReports(t, s.j.JS, 0, 10)
	s.from = mark()
	publishReports(t, s.j.JS, 10, 10)
	s.to = mark()
	publishReports(t, s.j.JS, 20, 10)
	s.after = mark()
	return s
}

// live is the chain value after seq; fold the one after seq when the
// chain was head after from-1.
func (s *chainStream) live(seq uint64) string {
	return hexHead(liveHead(s.t, s.j.JS, events.StreamShadow, seq))
}

func (s *chainStream) fold(head string, from, to uint64) string {
	s.t.Helper()
	h, err := headAt(context.Background(), s.j.JS, events.StreamShadow, to, []Checkpoint{{Seq: from - 1, Head: head}})
	if err != nil {
		s.t.Fatal(err)
	}
	return hexHead(h)
}

// mismatch is checkStream's problem for checkpoint cp at seq, where the
// chain it carries is live and the stretch since the last checkpoint
// starts at since.
func mismatch(seq uint64, live string, cp Checkpoint, since uint64) string {
	return fmt.Sprintf("after sequence %d the live events fold into %s, but AUDIT's checkpoint (AUDIT seq %d, written %s) recorded %s: an event of sequences %d..%d was changed, removed or inserted, or the checkpoint is wrong",
		seq, live, cp.AuditSeq, cp.Time.UTC().Format(time.RFC3339), cp.Head, since, seq)
}

// TestCheckStream pins checkStream's result, the messages it hands over
// and how much of the stream it reads, for each branch of the chain walk:
// where the head before the range comes from, checkpoints before, in and
// after the range, several at one sequence, a wrong checkpoint, a changed
// event (the stretch after a mismatch folds from its checkpoint), events
// after the last checkpoint, none at all, and an empty range with a
// checkpoint past the stream's end.
func TestCheckStream(t *testing.T) {
	wrongX, wrongY := strings.Repeat("ee", 32), strings.Repeat("dd", 32)
	type at struct {
		seq  uint64
		head string
	}
	cases := []struct {
		name    string
		history bool
		empty   bool // the range is after every event
		// cps are the checkpoints to write, in order.
		cps func(s *chainStream) []at
		// want is the check, given the checkpoints as read back.
		want func(s *chainStream, cps []Checkpoint) ChainCheck
		// The messages handed over are contentFrom..contentTo (none when
		// contentFrom is 0); reads is how many the stream gave.
		contentFrom, contentTo, reads uint64
	}{
		{
			name: "checkpoint before the range, head before folded on the way",
			cps:  func(s *chainStream) []at { return []at{{5, s.live(5)}, {20, s.live(20)}} },
			want: func(s *chainStream, _ []Checkpoint) ChainCheck {
				return ChainCheck{Result: ChainPass, FirstSeq: 11, LastSeq: 20, Events: 10, HeadBefore: s.live(10), HeadAfter: s.live(20),
					FromSeq: 5, ToSeq: 20, Checked: 1}
			},
			contentFrom: 6, contentTo: 20, reads: 15,
		},
		{
			name:    "checkpoint just before the range and after it, with history",
			history: true,
			cps:     func(s *chainStream) []at { return []at{{10, s.live(10)}, {25, s.live(25)}} },
			want: func(s *chainStream, _ []Checkpoint) ChainCheck {
				return ChainCheck{Result: ChainPass, FirstSeq: 11, LastSeq: 20, Events: 10, HeadBefore: s.live(10), HeadAfter: s.live(20),
					FromSeq: 10, ToSeq: 25, Checked: 1}
			},
			contentFrom: 1, contentTo: 20, reads: 25,
		},
		{
			name: "two checkpoints at one sequence, one wrong",
			cps:  func(s *chainStream) []at { return []at{{15, wrongX}, {15, s.live(15)}, {20, s.live(20)}} },
			want: func(s *chainStream, cps []Checkpoint) ChainCheck {
				return ChainCheck{Result: ChainFail, FirstSeq: 11, LastSeq: 20, Events: 10, HeadBefore: s.live(10), HeadAfter: s.live(20),
					ToSeq: 20, Checked: 3, Problems: []string{mismatch(15, s.live(15), cps[0], 1)}}
			},
			contentFrom: 1, contentTo: 20, reads: 20,
		},
		{
			// 12 is wrong and 15 folds from it: the changed event is in
			// 1..12, and the chain goes on from 12's checkpoint. 17 is
			// wrong again and 20 folds from it.
			name:    "changed events: the stretch after a mismatch folds from its checkpoint",
			history: true,
			cps: func(s *chainStream) []at {
				return []at{{12, wrongX}, {15, s.fold(wrongX, 13, 15)}, {17, wrongY}, {20, s.fold(wrongY, 18, 20)}}
			},
			want: func(s *chainStream, cps []Checkpoint) ChainCheck {
				return ChainCheck{Result: ChainFail, FirstSeq: 11, LastSeq: 20, Events: 10, HeadBefore: s.live(10), HeadAfter: s.fold(wrongX, 13, 20),
					ToSeq: 20, Checked: 4, Problems: []string{mismatch(12, s.live(12), cps[0], 1), mismatch(17, s.fold(wrongX, 13, 17), cps[2], 16)}}
			},
			contentFrom: 1, contentTo: 20, reads: 20,
		},
		{
			name: "events after the last checkpoint",
			cps:  func(s *chainStream) []at { return []at{{5, s.live(5)}, {15, s.live(15)}} },
			want: func(s *chainStream, _ []Checkpoint) ChainCheck {
				return ChainCheck{Result: ChainIncomplete, FirstSeq: 11, LastSeq: 20, Events: 10, HeadBefore: s.live(10), HeadAfter: s.live(20),
					FromSeq: 5, ToSeq: 20, Checked: 1, Uncovered: 5}
			},
			contentFrom: 6, contentTo: 20, reads: 15,
		},
		{
			name: "no checkpoint",
			cps:  func(*chainStream) []at { return nil },
			want: func(s *chainStream, _ []Checkpoint) ChainCheck {
				return ChainCheck{Result: ChainIncomplete, FirstSeq: 11, LastSeq: 20, Events: 10, HeadBefore: s.live(10), HeadAfter: s.live(20),
					ToSeq: 20, Uncovered: 10}
			},
			contentFrom: 1, contentTo: 20, reads: 20,
		},
		{
			name:    "empty range with history and a checkpoint past the stream's end",
			history: true,
			empty:   true,
			cps:     func(s *chainStream) []at { return []at{{10, s.live(10)}, {40, wrongX}} },
			want: func(s *chainStream, cps []Checkpoint) ChainCheck {
				return ChainCheck{Result: ChainFail, FirstSeq: 31, LastSeq: 30, HeadBefore: s.live(30), HeadAfter: s.live(30), FromSeq: 10, ToSeq: 30,
					Problems: []string{fmt.Sprintf("AUDIT seq %d: a checkpoint of sequence 40, past the stream's last, 30", cps[1].AuditSeq)}}
			},
			contentFrom: 1, contentTo: 30, reads: 30,
		},
		{
			name:  "empty range without history",
			empty: true,
			cps:   func(s *chainStream) []at { return []at{{10, s.live(10)}} },
			want: func(s *chainStream, _ []Checkpoint) ChainCheck {
				return ChainCheck{Result: ChainPass, FirstSeq: 31, LastSeq: 30, HeadBefore: s.live(30), HeadAfter: s.live(30), FromSeq: 10, ToSeq: 30}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newChainStream(t)
			for _, cp := range tc.cps(s) {
				writeCheckpoint(t, s.j.JS, events.StreamShadow, cp.seq, cp.head)
			}
			cps, err := Checkpoints(context.Background(), s.j.JS, events.StreamShadow)
			if err != nil {
				t.Fatal(err)
			}
			from, to := s.from, s.to
			if tc.empty {
				from, to = s.after, s.after.Add(time.Hour)
			}
			p := &reportProgress{}
			var content []string
			got, err := checkStream(context.Background(), s.j.JS, events.StreamShadow, from, to, tc.history, p, func(m consume.Msg, inRange bool) {
				content = append(content, fmt.Sprintf("%d %t", m.Seq, inRange))
			})
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want(s, cps)
			want.Stream = events.StreamShadow
			if !reflect.DeepEqual(got, want) {
				t.Errorf("check:\n got %+v\nwant %+v", got, want)
			}
			var wantContent []string
			for seq := tc.contentFrom; seq > 0 && seq <= tc.contentTo; seq++ {
				wantContent = append(wantContent, fmt.Sprintf("%d %t", seq, seq >= want.FirstSeq && seq <= want.LastSeq))
			}
			if !reflect.DeepEqual(content, wantContent) {
				t.Errorf("messages handed over (seq, in range):\n got %q\nwant %q", content, wantContent)
			}
			if p.events != tc.reads {
				t.Errorf("read %d messages, want %d", p.events, tc.reads)
			}
		})
	}
}
