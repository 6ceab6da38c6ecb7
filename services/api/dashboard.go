package api

import (
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/otawatch/otawatch/services/api/web"
	"github.com/otawatch/otawatch/services/internal/fleet"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// maxDashboardAlerts bounds the alerts one push carries.
const maxDashboardAlerts = 100

// snapshot is what the dashboard shows, pushed whole on every change: small
// (a few tens of kB) and simpler for the page than patches.
type snapshot struct {
	// Time is when the snapshot was built (wall clock: it is a view).
	Time time.Time `json:"time"`
	// Seq is the last SHADOW sequence the fleet state applied.
	Seq     uint64        `json:"seq"`
	Ready   bool          `json:"ready"`
	Fleet   fleet.Metrics `json:"fleet"`
	Jobs    []jobView     `json:"jobs"`
	Waves   []waveRow     `json:"waves"`
	Alerts  []alertView   `json:"alerts"`
	Recent  []recentEvent `json:"recent"`
	Streams []streamStat  `json:"streams"`
	// Notifications are the newest decisions on NOTIFY, newest first;
	// Silences the silences pending or active at Time, oldest first.
	Notifications []notificationView `json:"notifications"`
	Silences      []silenceView      `json:"silences"`

	// The charts' data (charts.go). ActiveJob is the job they follow (the
	// newest running, else paused, else newest job; "" with no job).
	ActiveJob string `json:"activeJob,omitempty"`
	// Durations is ActiveJob's update-duration histogram.
	Durations *durationHistogram `json:"durations,omitempty"`
	// Versions is the devices per reported firmware version, most first.
	Versions []versionCount `json:"versions"`
	// Timelines are the newest jobs' waves against time, newest first.
	Timelines []jobTimeline `json:"timelines"`
}

// dashboard is the dashboard's cache: the read model's view, rebuilt at
// most once per refresh period when an event changed it (and every
// streamInfoTTL for the stream counts), so a thousand browsers cost one
// build per period, not one per event per browser.
type dashboard struct {
	m     *model
	stats *streamStats
	folds []*fold
	// clock is the service's: a silence past its end at its time is not
	// shown, as GET /api/v1/silences does not list it.
	clock  svc.Clock
	mu     sync.Mutex
	snap   []byte
	change chan struct{} // closed when snap is replaced
	built  uint64        // model version snap was built from
	at     time.Time
}

func newDashboard(m *model, stats *streamStats, folds []*fold, clock svc.Clock) *dashboard {
	return &dashboard{m: m, stats: stats, folds: folds, clock: clock, change: make(chan struct{})}
}

// current returns the latest snapshot (nil before the first) and a channel
// closed when a newer one replaces it.
func (d *dashboard) current() ([]byte, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.snap, d.change
}

// run rebuilds the snapshot every period when something changed, until ctx
// ends.
func (d *dashboard) run(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if v := d.m.version.Load(); d.snap == nil || v != d.built || time.Since(d.at) >= streamInfoTTL {
			d.publish(d.build(), v)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *dashboard) build() snapshot {
	streams := d.stats.get() // outside the model lock: it may wait on JetStream
	ready := true
	for _, f := range d.folds {
		ready = ready && f.caughtUp()
	}
	now := d.clock.Now().UTC()
	d.m.mu.RLock()
	defer d.m.mu.RUnlock()
	s := snapshot{
		Time:    now,
		Seq:     d.m.fleet.LastSeq,
		Ready:   ready,
		Fleet:   d.m.fleet.Metrics(),
		Jobs:    d.m.jobList(),
		Waves:   d.m.waveRows(time.Now()),
		Alerts:  d.m.activeAlerts(),
		Recent:  d.m.recentEvents(),
		Streams: streams,

		Notifications: d.m.recentNotifications(),
		Silences:      d.m.activeSilences(now),
	}
	job, target := "", ""
	if a := activeJob(s.Jobs); a != nil {
		s.ActiveJob, job = a.JobID, a.JobID
		if a.Target != nil {
			target = a.Target.Version
		}
	}
	c := charts(d.m.fleet, job, target)
	s.Durations, s.Versions = c.durations, c.versions
	s.Timelines = d.m.timelines.recent(s.Jobs)
	if len(s.Alerts) > maxDashboardAlerts {
		s.Alerts = s.Alerts[:maxDashboardAlerts]
	}
	if len(s.Silences) > maxDashboardSilences {
		s.Silences = s.Silences[:maxDashboardSilences]
	}
	return s
}

func (d *dashboard) publish(s snapshot, version uint64) {
	b, err := json.Marshal(s)
	if err != nil {
		return // every field is plain data: this does not happen
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.snap, d.built, d.at = b, version, time.Now()
	close(d.change)
	d.change = make(chan struct{})
}

// wsWriteTimeout drops a client that cannot take a push in this long.
const wsWriteTimeout = 10 * time.Second

// wsPingInterval finds clients that vanished without closing.
const wsPingInterval = 30 * time.Second

// handleWS is the dashboard's WebSocket: the current snapshot at once, then
// each new one as it is built. The page sends nothing; what it sends is
// read and dropped so control frames (close, pong) are handled.
func (s *Service) handleWS(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	// The page offers wsProtocol and its token as a second subprotocol
	// (wsToken); selecting wsProtocol completes the handshake without
	// echoing the token. A client that offers none gets none.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wsProtocol}})
	if err != nil {
		return // Accept has answered the request
	}
	defer c.CloseNow()
	s.metrics.streams.WithLabelValues("websocket").Inc()
	defer s.metrics.streams.WithLabelValues("websocket").Dec()
	// The read side ends when the client goes; the request's context ends
	// when the server stops. They are kept apart because the library drops
	// the connection at once when a read's context ends, and a stopping
	// server should say goodbye (StatusGoingAway) first.
	ctx := c.CloseRead(context.WithoutCancel(r.Context()))
	ping := time.NewTicker(wsPingInterval)
	defer ping.Stop()

	snap, change := s.dash.current()
	for {
		if snap != nil {
			wctx, cancel := context.WithTimeout(ctx, wsWriteTimeout)
			err := c.Write(wctx, websocket.MessageText, snap)
			cancel()
			if err != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.Context().Done():
			_ = c.Close(websocket.StatusGoingAway, "server stopping")
			return
		case <-ping.C:
			pctx, cancel := context.WithTimeout(ctx, wsWriteTimeout)
			err := c.Ping(pctx)
			cancel()
			if err != nil {
				return
			}
			snap = nil
		case <-change:
			snap, change = s.dash.current()
		}
	}
}

// handleIndex serves the dashboard page.
func (s *Service) handleIndex(w http.ResponseWriter, _ *http.Request) {
	b, err := fs.ReadFile(web.FS, "index.html")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "dashboard page missing from the build")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	// Everything the page needs is inline or from this origin.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:; img-src 'self' data:")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b)
}
