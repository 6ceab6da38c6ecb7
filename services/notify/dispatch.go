package notify

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/match"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// dispatcher is the state of one active run: the alerts (the fold of
// ALERTS), their groups, and what NOTIFY says was decided and delivered
// (the fold of NOTIFY: Alertmanager's notification log, silences). The
// service's mutex guards it.
type dispatcher struct {
	root    *route
	inhibit []inhibitRule

	alerts map[string]*alert // by events.NotifyAlertID
	groups map[string]*group // by groupID(receiver, key)
	// nflog is what each group last told its receiver (NOTIFY's sent
	// events), by groupID.
	nflog map[string]*entry
	// notifs are the notifications NOTIFY has attempts of, by id.
	notifs   map[string]*notifRecord
	silences map[string]*silence
	// suppressed are the suppressed events on NOTIFY, by id.
	suppressed map[string]bool
	// live is false while the log as it was at start is read: groups
	// collect alerts but no flush runs, so a half-read log decides
	// nothing.
	live bool
}

type alert struct {
	id       string
	data     events.AlertData
	labels   map[string]string
	resolved bool
	// in are the groups that hold it.
	in []*group
}

// group is an aggregation group: the alerts of one route with the same
// group_by values, notified together to the route's receiver.
type group struct {
	id       string
	key      string
	route    *route
	labels   map[string]string
	alerts   map[string]*alert
	timer    svc.Timer
	inflight bool
}

// entry is what a group's last sent notification reported.
type entry struct {
	firing, resolved map[string]bool
	at               time.Time
	// count is the number of notifications of the group sent so far.
	count int
}

type notifRecord struct {
	attempts int
	// decidedAt is when the notification was first decided (its attempt
	// events say).
	decidedAt time.Time
	sent      bool
	// refused: a final failure that retrying cannot fix; the same
	// notification is not tried again (a change of its group is a new
	// one).
	refused bool
}

type silence struct {
	data     events.SilenceData
	matchers match.Matchers
	expired  *time.Time
}

type inhibitRule struct {
	source, target match.Matchers
	equal          []string
}

func groupID(receiver, key string) string { return receiver + "\x00" + key }

func newDispatcher(root *route, inhibit []inhibitRule) *dispatcher {
	return &dispatcher{
		root: root, inhibit: inhibit,
		alerts: map[string]*alert{}, groups: map[string]*group{}, nflog: map[string]*entry{},
		notifs: map[string]*notifRecord{}, silences: map[string]*silence{}, suppressed: map[string]bool{},
	}
}

// applyAlert folds one ALERTS event. It returns the groups that are new
// (the caller schedules their first flush once live).
func (d *dispatcher) applyAlert(a events.AlertData, now time.Time) []*group {
	id := events.NotifyAlertID(a)
	al := d.alerts[id]
	var fresh []*group
	if al == nil {
		al = &alert{id: id, labels: Labels(a)}
		d.alerts[id] = al
		for _, r := range d.root.match(al.labels) {
			if r.receiver == "" {
				continue // a route without a receiver drops what ends there
			}
			gl := r.groupLabels(al.labels)
			key := r.groupKey(gl)
			gid := groupID(r.receiver, key)
			g := d.groups[gid]
			if g == nil {
				g = &group{id: gid, key: key, route: r, labels: gl, alerts: map[string]*alert{}}
				d.groups[gid] = g
				fresh = append(fresh, g)
			}
			if g.alerts[id] == nil {
				g.alerts[id] = al
				al.in = append(al.in, g)
			}
		}
		if len(al.in) == 0 {
			delete(d.alerts, id)
			return nil
		}
	}
	al.data = a
	al.resolved = a.State == events.AlertResolved
	if al.resolved && !d.live {
		// Reading the log at start: an alert resolved before its group
		// last told anyone it fired needs no announcement; forget it now
		// rather than hold the whole history until the first flush.
		for _, g := range slices.Clone(al.in) {
			if !d.owed(g, al, now) {
				d.drop(g, al)
			}
		}
	}
	return fresh
}

// owed says whether g still owes its receiver word of the resolved alert
// al: an ordinary group when its last notification reported al firing; a
// digest when al ended after the last digest (or, before the first one,
// within the last day).
func (d *dispatcher) owed(g *group, al *alert, now time.Time) bool {
	e := d.nflog[g.id]
	if !g.route.digest {
		return e != nil && e.firing[al.id]
	}
	end := al.data.StartsAt
	if al.data.EndsAt != nil {
		end = *al.data.EndsAt
	}
	if e == nil {
		return end.After(now.Add(-24 * time.Hour))
	}
	return end.After(e.at)
}

// drop removes al from g, forgetting the alert once no group holds it and
// the group once it is empty (and not delivering).
func (d *dispatcher) drop(g *group, al *alert) {
	if g.alerts[al.id] == nil {
		return
	}
	delete(g.alerts, al.id)
	al.in = slices.DeleteFunc(al.in, func(x *group) bool { return x == g })
	if len(al.in) == 0 {
		delete(d.alerts, al.id)
	}
	d.gc(g)
}

// gc forgets g if it holds no alert and is not delivering.
func (d *dispatcher) gc(g *group) {
	if len(g.alerts) == 0 && !g.inflight {
		if g.timer != nil {
			g.timer.Stop()
			g.timer = nil
		}
		delete(d.groups, g.id)
	}
}

// applySent folds a sent notification into the notification log; one
// already folded (this instance's own, coming back) changes nothing.
func (d *dispatcher) applySent(nd events.NotificationData, at time.Time) {
	d.record(nd).sent = true
	gid := groupID(nd.Receiver, nd.GroupKey)
	e := d.nflog[gid]
	if e == nil {
		e = &entry{}
		d.nflog[gid] = e
	}
	if nd.Count+1 <= e.count {
		return
	}
	e.firing, e.resolved, e.at, e.count = set(nd.Firing), set(nd.Resolved), at, nd.Count+1
}

func (d *dispatcher) record(nd events.NotificationData) *notifRecord {
	r := d.notifs[nd.ID]
	if r == nil {
		r = &notifRecord{}
		d.notifs[nd.ID] = r
	}
	r.attempts = max(r.attempts, nd.Attempt)
	if !nd.DecidedAt.IsZero() && (r.decidedAt.IsZero() || nd.DecidedAt.Before(r.decidedAt)) {
		r.decidedAt = nd.DecidedAt
	}
	return r
}

// applyFailed folds a failed attempt.
func (d *dispatcher) applyFailed(nd events.NotificationData) {
	r := d.record(nd)
	if nd.Final && !nd.Retry {
		r.refused = true
	}
}

func set(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// muter answers, for one flush, whether an alert is muted: the silences
// active then, and for each inhibition rule its raised source alerts by
// the values of the rule's equal labels. Built once per flush, so a group
// of n alerts costs n lookups, not n passes over every alert.
type muter struct {
	silences []*silence
	ids      []string
	inhibit  []inhibitIndex
}

type inhibitIndex struct {
	rule    inhibitRule
	sources map[string][]*alert // by equalKey
}

func (d *dispatcher) muter(now time.Time) *muter {
	m := &muter{}
	for id, s := range d.silences {
		if s.active(now) {
			m.ids = append(m.ids, id)
		}
	}
	sort.Strings(m.ids)
	for _, id := range m.ids {
		m.silences = append(m.silences, d.silences[id])
	}
	for _, ir := range d.inhibit {
		ix := inhibitIndex{rule: ir, sources: map[string][]*alert{}}
		for _, src := range d.alerts {
			if !src.resolved && ir.source.Matches(src.labels) {
				k := equalKey(ir.equal, src.labels)
				ix.sources[k] = append(ix.sources[k], src)
			}
		}
		m.inhibit = append(m.inhibit, ix)
	}
	return m
}

// muted says whether al is kept from its receiver: by an active silence,
// or (while it fires) by an inhibiting alert. reason and cause name which
// (events.Suppressed*, the silence or the source alert id).
func (m *muter) muted(al *alert) (reason, cause string, ok bool) {
	for i, s := range m.silences {
		if s.matchers.Matches(al.labels) {
			return events.SuppressedSilence, m.ids[i], true
		}
	}
	if al.resolved {
		return "", "", false
	}
	for _, ix := range m.inhibit {
		if !ix.rule.target.Matches(al.labels) {
			continue
		}
		srcs := ix.sources[equalKey(ix.rule.equal, al.labels)]
		// The first by id, so every flush names the same source.
		var best *alert
		for _, src := range srcs {
			if src != al && (best == nil || src.id < best.id) {
				best = src
			}
		}
		if best != nil {
			return events.SuppressedInhibited, best.id, true
		}
	}
	return "", "", false
}

// equalKey joins the values of names in labels.
func equalKey(names []string, labels map[string]string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString(labels[n])
		b.WriteByte(0)
	}
	return b.String()
}

// active says whether the silence silences at now.
func (s *silence) active(now time.Time) bool {
	end := s.data.EndsAt
	if s.expired != nil && s.expired.Before(end) {
		end = *s.expired
	}
	return !now.Before(s.data.StartsAt) && now.Before(end)
}

// decision is what a flush of a group decided.
type decision struct {
	// send: a notification is due (nd and alerts describe it).
	send   bool
	nd     events.NotificationData
	alerts []events.AlertData
	common map[string]string
	// digest: the notification is a digest route's, of the period from
	// since (zero before the group's first).
	digest bool
	since  time.Time
	// suppressed are the suppression records not yet on NOTIFY.
	suppressed []events.SuppressedData
	// done are the resolved alerts the group may forget once the
	// notification is sent (or now, when none is due).
	done []*alert
}

// decide is Alertmanager's dedup stage for g at now: what fires and what
// resolved (less what is muted), against what the group last told its
// receiver.
func (d *dispatcher) decide(g *group, now time.Time) decision {
	var dec decision
	e := d.nflog[g.id]
	firing, resolved, mutedFiring := d.sortAlerts(g, now, e, &dec)
	firingIDs, resolvedIDs := ids(firing), ids(resolved)
	switch {
	case g.route.digest:
		dec.send = len(firing)+len(resolved) > 0
	case e == nil:
		dec.send = len(firing) > 0
	case !subset(firingIDs, e.firing):
		dec.send = true
	case len(firing) == 0:
		// Everything the receiver was told about resolved: say so once.
		// Alerts that are only muted did not resolve.
		dec.send = len(e.firing) > 0 && mutedFiring == 0
	case !subset(resolvedIDs, e.resolved):
		dec.send = true
	default:
		dec.send = !now.Before(e.at.Add(g.route.repeatInterval))
	}
	if !dec.send {
		return dec
	}
	count := 0
	if e != nil {
		count = e.count
	}
	status := StatusFiring
	if len(firing) == 0 {
		status = StatusResolved
	}
	id := events.NotificationID(g.route.receiver, g.key, status, count, firingIDs, resolvedIDs)
	if r := d.notifs[id]; r != nil && (r.sent || r.refused) {
		// Delivered already (its sent event is ahead of the log we
		// read), or refused for good: not again.
		dec.send = false
		return dec
	}
	dec.nd = events.NotificationData{ID: id, Receiver: g.route.receiver, GroupKey: g.key, GroupLabels: g.labels,
		Status: status, Firing: firingIDs, Resolved: resolvedIDs, Count: count, DecidedAt: now}
	if r := d.notifs[id]; r != nil {
		// Attempted before (by an instance that stopped without an
		// answer): the same notification, as it was decided then.
		dec.nd.Attempt = r.attempts
		if !r.decidedAt.IsZero() {
			dec.nd.DecidedAt = r.decidedAt
		}
	}
	dec.alerts, dec.common = notificationAlerts(firing, resolved)
	if g.route.digest {
		dec.digest = true
		if e != nil {
			dec.since = e.at
		}
	}
	return dec
}

// sortAlerts sorts g's alerts at now into those firing and those resolved
// that the receiver is to hear about (e is what it last heard), and counts
// the firing ones that are muted. It adds to dec the suppressions not yet
// recorded and the resolved alerts the group may forget.
func (d *dispatcher) sortAlerts(g *group, now time.Time, e *entry, dec *decision) (firing, resolved []*alert, mutedFiring int) {
	mu := d.muter(now)
	for _, al := range g.alerts {
		if reason, cause, ok := mu.muted(al); ok {
			if al.resolved {
				dec.done = append(dec.done, al)
				continue
			}
			mutedFiring++
			if sd, ok := d.suppression(g, al, reason, cause); ok {
				dec.suppressed = append(dec.suppressed, sd)
			}
			continue
		}
		if al.resolved {
			dec.done = append(dec.done, al)
			// A resolved alert is announced when the group's last
			// notification reported it firing (or in a digest, always).
			if g.route.digest || e != nil && e.firing[al.id] {
				resolved = append(resolved, al)
			}
			continue
		}
		firing = append(firing, al)
	}
	return firing, resolved, mutedFiring
}

// suppression is the record of al muted in g (by a silence or an
// inhibiting alert, cause), once: false when it was made before.
func (d *dispatcher) suppression(g *group, al *alert, reason, cause string) (events.SuppressedData, bool) {
	id := events.SuppressedEventID(g.route.receiver, al.id, reason, cause)
	if d.suppressed[id] {
		return events.SuppressedData{}, false
	}
	d.suppressed[id] = true
	sd := events.SuppressedData{Receiver: g.route.receiver, GroupKey: g.key, AlertID: al.id,
		Key: al.data.Key, RuleID: al.data.RuleID, Severity: al.data.Severity, JobID: al.data.JobID,
		DeviceID: al.data.DeviceID, Reason: reason}
	if reason == events.SuppressedSilence {
		sd.SilenceID = cause
	} else {
		sd.InhibitedBy = cause
	}
	return sd, true
}

// notificationAlerts is what a notification lists: its alerts, firing and
// resolved, by start time, and the labels they share.
func notificationAlerts(firing, resolved []*alert) ([]events.AlertData, map[string]string) {
	all := append(append([]*alert(nil), firing...), resolved...)
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i].data, all[j].data
		if !a.StartsAt.Equal(b.StartsAt) {
			return a.StartsAt.Before(b.StartsAt)
		}
		return all[i].id < all[j].id
	})
	var out []events.AlertData
	for _, al := range all {
		out = append(out, al.data)
	}
	return out, commonLabels(all)
}

func ids(as []*alert) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.id
	}
	slices.Sort(out)
	return out
}

func subset(ids []string, of map[string]bool) bool {
	for _, id := range ids {
		if !of[id] {
			return false
		}
	}
	return true
}

// commonLabels are the labels every alert of as shares.
func commonLabels(as []*alert) map[string]string {
	if len(as) == 0 {
		return nil
	}
	out := map[string]string{}
	for k, v := range as[0].labels {
		out[k] = v
	}
	for _, a := range as[1:] {
		for k, v := range out {
			if a.labels[k] != v {
				delete(out, k)
			}
		}
	}
	return out
}
