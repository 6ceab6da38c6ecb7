package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

// Paging limits of GET /api/v1/devices.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// devicePage is the body of GET /api/v1/devices.
type devicePage struct {
	Devices []fleet.Device `json:"devices"`
	// Total is the number of devices matching the filters, on every page.
	Total int `json:"total"`
	// Next is the after= of the next page; empty on the last one.
	Next string `json:"next,omitempty"`
}

// deviceFilter is the query of GET /api/v1/devices.
type deviceFilter struct {
	typeID, status, job string
	afterType, afterDev string
	limit               int
}

// Statuses ?status= accepts besides the reported firmware statuses.
const (
	statusOnline  = "online"
	statusOffline = "potentially_offline"
)

func parseDeviceFilter(q map[string][]string) (deviceFilter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	f := deviceFilter{typeID: get("type"), status: get("status"), job: get("job"), limit: DefaultPageLimit}
	if f.typeID != "" {
		if err := events.ValidateID("type", f.typeID); err != nil {
			return f, err
		}
	}
	if f.job != "" {
		if err := events.ValidateID("job", f.job); err != nil {
			return f, err
		}
	}
	switch f.status {
	case "", events.StatusInProgress, events.StatusCompleted, events.StatusFailed, statusOnline, statusOffline:
	default:
		return f, fmt.Errorf("status %q is not one of %s, %s, %s, %s, %s", f.status,
			events.StatusInProgress, events.StatusCompleted, events.StatusFailed, statusOnline, statusOffline)
	}
	if l := get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxPageLimit {
			return f, fmt.Errorf("limit %q is not a number from 1 to %d", l, MaxPageLimit)
		}
		f.limit = n
	}
	if a := get("after"); a != "" {
		t, d, ok := strings.Cut(a, "/")
		if !ok {
			return f, fmt.Errorf("after %q is not typeId/deviceId", a)
		}
		if err := events.ValidateID("after type id", t); err != nil {
			return f, err
		}
		if err := events.ValidateID("after device id", d); err != nil {
			return f, err
		}
		f.afterType, f.afterDev = t, d
	}
	return f, nil
}

func (f deviceFilter) match(d *fleet.Device) bool {
	if f.typeID != "" && d.TypeID != f.typeID {
		return false
	}
	if f.job != "" && d.JobID != f.job {
		return false
	}
	switch f.status {
	case "":
	case statusOnline:
		return d.Reports > 0 && d.Online
	case statusOffline:
		return d.Reports > 0 && !d.Online
	default:
		return d.Status == f.status
	}
	return true
}

// handleDevices lists devices ordered by type then device id, a page at a
// time: ?limit= (default 100, at most 1000), ?after=typeId/deviceId (the
// previous page's next), filtered by ?type=, ?status= (in_progress,
// completed, failed, online, potentially_offline) and ?job=; with ?at=, as
// they were at that instant (past.go).
func (s *Service) handleDevices(w http.ResponseWriter, r *http.Request) {
	f, err := parseDeviceFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	m, _, ok := s.modelFor(w, r)
	if !ok {
		return
	}
	after := func(d *fleet.Device) bool {
		return f.afterType == "" || d.TypeID > f.afterType || d.TypeID == f.afterType && d.DeviceID > f.afterDev
	}
	var page devicePage
	var rest []fleet.Device
	m.mu.RLock()
	m.fleet.Devices(func(d *fleet.Device) {
		if !f.match(d) {
			return
		}
		page.Total++
		if after(d) {
			rest = append(rest, *d)
		}
	})
	m.mu.RUnlock()
	sortDevices(rest)
	if len(rest) > f.limit {
		last := rest[f.limit-1]
		page.Next = last.TypeID + "/" + last.DeviceID
		rest = rest[:f.limit]
	}
	page.Devices = rest
	if page.Devices == nil {
		page.Devices = []fleet.Device{}
	}
	writeJSON(w, http.StatusOK, page)
}

// handleDevice answers one device's state (?at=: at that instant), 404
// when unknown.
func (s *Service) handleDevice(w http.ResponseWriter, r *http.Request) {
	typeID, deviceID, ok := deviceIDs(w, r)
	if !ok {
		return
	}
	m, at, ok := s.modelFor(w, r)
	if !ok {
		return
	}
	m.mu.RLock()
	d, found := m.fleet.Device(typeID, deviceID)
	m.mu.RUnlock()
	if !found {
		msg := fmt.Sprintf("device %s/%s is unknown", typeID, deviceID)
		if r.URL.Query().Has("at") {
			msg = fmt.Sprintf("device %s/%s was unknown at %s", typeID, deviceID, at.Format(time.RFC3339Nano))
		}
		writeError(w, http.StatusNotFound, msg)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// handleFleet answers the fleet metrics (?at=: at that instant).
func (s *Service) handleFleet(w http.ResponseWriter, r *http.Request) {
	s.readModel(w, r, func(m *model, _ time.Time) any { return m.fleet.Metrics() })
}

// handleFleetState answers the fleet state (FleetState: metrics,
// versions, running and paused rollouts with their waves, devices not
// online, active alerts), now or, with ?at=, at that instant.
func (s *Service) handleFleetState(w http.ResponseWriter, r *http.Request) {
	s.readModel(w, r, func(m *model, at time.Time) any { return m.state(at.UTC(), false) })
}

// handleAlerts answers the active alerts, newest first (?at=: those
// active at that instant).
func (s *Service) handleAlerts(w http.ResponseWriter, r *http.Request) {
	s.readModel(w, r, func(m *model, _ time.Time) any { return map[string]any{"alerts": m.activeAlerts()} })
}

// readModel answers a GET with what read returns of the model the request
// reads (modelFor: live, or at ?at=), under its read lock.
func (s *Service) readModel(w http.ResponseWriter, r *http.Request, read func(m *model, at time.Time) any) {
	m, at, ok := s.modelFor(w, r)
	if !ok {
		return
	}
	m.mu.RLock()
	v := read(m, at)
	m.mu.RUnlock()
	writeJSON(w, http.StatusOK, v)
}
