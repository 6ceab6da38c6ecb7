package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
)

const historyPath = "/api/v1/devices/sensor/d1/history"

// seedHistory stores d1's events of every kind far apart in a stream that
// other devices fill in between (noise events between each two of d1's),
// and returns d1's sequences in order. Sparse events are what makes a
// backward page read more than one window.
func seedHistory(t *testing.T, h *harness, noise int) []uint64 {
	t.Helper()
	var want []uint64
	at := t0
	for i := 0; i < 9; i++ {
		for j := 0; j < noise; j++ {
			h.report(t, "sensor", fmt.Sprintf("n%d", j%40), "1.0", events.StatusCompleted, 10, at.Add(time.Duration(i*noise+j)*time.Second))
		}
		at = at.Add(time.Hour)
		switch i % 3 {
		case 0:
			want = append(want, h.report(t, "sensor", "d1", fmt.Sprintf("1.%d", i), events.StatusInProgress, 0, at))
		case 1:
			want = append(want, h.desire(t, "sensor", "d1", "job1", 1, fmt.Sprintf("2.%d", i), at))
		case 2:
			want = append(want, h.presence(t, "sensor", "d1", events.PresencePotentiallyOffline, at, at.Add(time.Minute)))
		}
		// The same device id under another type is another device.
		h.report(t, "other", "d1", "9.9", events.StatusCompleted, 10, at)
	}
	return want
}

// historyAll follows next from the first page to the last and returns the
// sequences in the order served, checking each page's size and shape.
func historyAll(t *testing.T, h *harness, order string, limit int) []uint64 {
	t.Helper()
	var got []uint64
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("order=%s limit=%d: no last page after 100 pages", order, limit)
		}
		q := url.Values{"order": {order}, "limit": {fmt.Sprint(limit)}}
		if cursor != "" {
			key := "before_seq"
			if order == orderAsc {
				key = "after_seq"
			}
			q.Set(key, cursor)
		}
		var page historyPage
		h.getJSON(t, historyPath+"?"+q.Encode(), http.StatusOK, &page)
		if page.Order != order {
			t.Fatalf("page order %q, want %q", page.Order, order)
		}
		if len(page.Events) > limit {
			t.Fatalf("page of %d events, limit %d", len(page.Events), limit)
		}
		for _, e := range page.Events {
			ev, err := events.Decode(e.Event)
			if err != nil {
				t.Fatalf("event %d: envelope %s: %v", e.Seq, e.Event, err)
			}
			typ, dev, ok := events.DeviceFromSubject(e.Subject)
			if !ok || typ != "sensor" || dev != "d1" || ev.Subject != "d1" {
				t.Fatalf("event %d on %q (subject %q) is not sensor/d1's", e.Seq, e.Subject, ev.Subject)
			}
			got = append(got, e.Seq)
		}
		if page.Next == "" {
			return got
		}
		if len(page.Events) != limit {
			t.Fatalf("a page with a next has %d events, want a full page of %d", len(page.Events), limit)
		}
		cursor = page.Next
	}
}

func TestDeviceHistoryPages(t *testing.T) {
	h := startAPI(t, harnessOpts{})
	// 150 events between d1's: a backward page of 2 starts with a window
	// of 128 sequences, so most pages widen it.
	want := seedHistory(t, h, 150)
	newest := slices.Clone(want)
	slices.Reverse(newest)
	for _, tt := range []struct {
		name  string
		order string
		limit int
		want  []uint64
	}{
		{"newest first by 2", orderDesc, 2, newest},
		{"newest first by 4", orderDesc, 4, newest},
		{"newest first in one page", orderDesc, 1000, newest},
		{"oldest first by 2", orderAsc, 2, want},
		{"oldest first by 9", orderAsc, 9, want},
		{"oldest first in one page", orderAsc, 1000, want},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := historyAll(t, h, tt.order, tt.limit); !slices.Equal(got, tt.want) {
				t.Fatalf("sequences %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("a sparse device's page reads several windows", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dh, err := newDeviceHistory(ctx, h.js.JS, "sensor", "d1")
		if err != nil {
			t.Fatal(err)
		}
		page, err := dh.backward(ctx, 0, 2)
		if err != nil || len(page) != 2 || page[0].Seq != newest[0] || page[1].Seq != newest[1] {
			t.Fatalf("backward by 2: %v, %v; want %v", page, err, newest[:2])
		}
		if dh.reads < 2 {
			t.Fatalf("%d window read; the events are 150 apart, so a first window of 128 cannot hold two", dh.reads)
		}
	})
	t.Run("default is newest first, 100 a page", func(t *testing.T) {
		var page historyPage
		h.getJSON(t, historyPath, http.StatusOK, &page)
		if page.Order != orderDesc || len(page.Events) != len(want) || page.Events[0].Seq != newest[0] || page.Next != "" {
			t.Fatalf("default page: order %q, %d events from %d, next %q; want desc, %d from %d, no next",
				page.Order, len(page.Events), page.Events[0].Seq, page.Next, len(want), newest[0])
		}
	})
	t.Run("cursor between events", func(t *testing.T) {
		var page historyPage
		h.getJSON(t, fmt.Sprintf("%s?before_seq=%d&limit=1", historyPath, want[4]+1), http.StatusOK, &page)
		if len(page.Events) != 1 || page.Events[0].Seq != want[4] || page.Next != fmt.Sprint(want[4]) {
			t.Fatalf("before %d: %+v, want event %d with next %d", want[4]+1, page, want[4], want[4])
		}
		h.getJSON(t, fmt.Sprintf("%s?order=asc&after_seq=%d&limit=1", historyPath, want[4]), http.StatusOK, &page)
		if len(page.Events) != 1 || page.Events[0].Seq != want[5] {
			t.Fatalf("after %d: %+v, want event %d", want[4], page, want[5])
		}
	})
	t.Run("past either end", func(t *testing.T) {
		for _, path := range []string{
			fmt.Sprintf("%s?before_seq=%d", historyPath, want[0]),
			fmt.Sprintf("%s?order=asc&after_seq=%d", historyPath, want[len(want)-1]),
		} {
			var page historyPage
			h.getJSON(t, path, http.StatusOK, &page)
			if page.Events == nil || len(page.Events) != 0 || page.Next != "" {
				t.Fatalf("GET %s: %+v, want an empty last page", path, page)
			}
		}
	})
	t.Run("live", func(t *testing.T) {
		seq := h.report(t, "sensor", "d1", "3.0", events.StatusCompleted, 60, t0.Add(48*time.Hour))
		var page historyPage
		h.getJSON(t, historyPath+"?limit=1", http.StatusOK, &page)
		if len(page.Events) != 1 || page.Events[0].Seq != seq {
			t.Fatalf("newest after a new report: %+v, want seq %d", page, seq)
		}
	})
}

func TestDeviceHistoryErrors(t *testing.T) {
	h := startAPI(t, harnessOpts{cfg: Config{TokensFile: writeTokens(t)}})
	h.report(t, "sensor", "d1", "1.0", events.StatusCompleted, 10, t0)
	tests := []struct {
		name, path string
		token      string
		status     int
		names      string // a part of the error
	}{
		{"unknown device", "/api/v1/devices/sensor/nobody/history", opToken, 404, "sensor/nobody has no events"},
		{"hostile device id", "/api/v1/devices/sensor/%2A/history", opToken, 400, "device id"},
		{"bad order", historyPath + "?order=up", opToken, 400, `order "up"`},
		{"limit zero", historyPath + "?limit=0", opToken, 400, `limit "0"`},
		{"limit over the max", historyPath + "?limit=1001", opToken, 400, "1 to 1000"},
		{"before zero", historyPath + "?before_seq=0", opToken, 400, `before_seq "0"`},
		{"before not a number", historyPath + "?before_seq=x", opToken, 400, `before_seq "x"`},
		{"after with desc", historyPath + "?after_seq=3", opToken, 400, "after_seq pages order=asc"},
		{"before with asc", historyPath + "?order=asc&before_seq=3", opToken, 400, "before_seq pages order=desc"},
		{"no token", historyPath, "", 401, ""},
		{"read-only token", historyPath, roToken, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := http.Header{"Authorization": {"Bearer " + tt.token}}
			if tt.token == "" {
				hdr = http.Header{"Authorization": {"Bearer nope"}}
			}
			status, b := h.do(t, http.MethodGet, tt.path, "", hdr)
			if status != tt.status {
				t.Fatalf("GET %s: status %d, want %d; body %s", tt.path, status, tt.status, b)
			}
			if tt.names != "" && !strings.Contains(errorOf(t, b), tt.names) {
				t.Errorf("GET %s: error %q does not name %q", tt.path, errorOf(t, b), tt.names)
			}
		})
	}
}

func FuzzParseHistoryQuery(f *testing.F) {
	for _, s := range [][4]string{{"", "", "", ""}, {"asc", "10", "", "5"}, {"desc", "1000", "7", ""}, {"x", "-1", "0", "y"}} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, order, limit, before, after string) {
		q := map[string][]string{}
		for k, v := range map[string]string{"order": order, "limit": limit, "before_seq": before, "after_seq": after} {
			if v != "" {
				q[k] = []string{v}
			}
		}
		got, err := parseHistoryQuery(q)
		if err != nil {
			return
		}
		if got.limit < 1 || got.limit > MaxPageLimit {
			t.Fatalf("accepted limit %d", got.limit)
		}
		if got.order != orderAsc && got.order != orderDesc {
			t.Fatalf("accepted order %q", got.order)
		}
		if got.order == orderDesc && before != "" && got.cursor == 0 {
			t.Fatalf("before_seq %q accepted as 0, which means from the newest", before)
		}
	})
}
