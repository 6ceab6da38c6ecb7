package notify

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/otawatch/otawatch/services/internal/match"
)

// route is a Route compiled, with everything it inherits filled in.
type route struct {
	// id is the path of matchers from the root ("{}/{severity=\"critical\"}"):
	// it starts every group key of the route, so a group keeps its key
	// (and PagerDuty its incident) when siblings are added or reordered.
	id             string
	receiver       string
	matchers       match.Matchers
	cont           bool
	groupBy        []string
	groupAll       bool
	groupWait      time.Duration
	groupInterval  time.Duration
	repeatInterval time.Duration
	// digest: notified daily at digestHour:digestMin in loc.
	digest                bool
	digestHour, digestMin int
	loc                   *time.Location
	children              []*route
}

// compileRoute compiles r under parent (nil for the root). The config
// was validated: an error here is a bug's.
func compileRoute(r *Route, parent *route) (*route, error) {
	ms, err := match.ParseAll(r.Matchers)
	if err != nil {
		return nil, err
	}
	c := &route{matchers: ms, cont: r.Continue, receiver: r.Receiver, loc: time.Local}
	if parent != nil {
		c.id = parent.id + "/" + ms.String()
		c.groupBy, c.groupAll = parent.groupBy, parent.groupAll
		c.groupWait, c.groupInterval, c.repeatInterval = parent.groupWait, parent.groupInterval, parent.repeatInterval
		if c.receiver == "" {
			c.receiver = parent.receiver
		}
		c.digest, c.digestHour, c.digestMin, c.loc = parent.digest, parent.digestHour, parent.digestMin, parent.loc
	} else {
		c.id = ms.String()
	}
	if r.GroupBy != nil {
		c.groupBy, c.groupAll = nil, false
		for _, l := range r.GroupBy {
			if l == "..." {
				c.groupAll = true
				continue
			}
			c.groupBy = append(c.groupBy, l)
		}
		sort.Strings(c.groupBy)
	}
	for dst, src := range map[*time.Duration]*time.Duration{&c.groupWait: r.GroupWait, &c.groupInterval: r.GroupInterval, &c.repeatInterval: r.RepeatInterval} {
		if src != nil {
			*dst = *src
		}
	}
	if r.TimeZone != "" {
		if c.loc, err = time.LoadLocation(r.TimeZone); err != nil {
			return nil, fmt.Errorf("time_zone: %w", err)
		}
	}
	if r.DigestAt != "" {
		t, err := time.Parse("15:04", r.DigestAt)
		if err != nil {
			return nil, fmt.Errorf("digest_at %q: %w", r.DigestAt, err)
		}
		c.digest, c.digestHour, c.digestMin = true, t.Hour(), t.Minute()
	}
	for _, ch := range r.Routes {
		cc, err := compileRoute(ch, c)
		if err != nil {
			return nil, err
		}
		c.children = append(c.children, cc)
	}
	return c, nil
}

// match returns the routes an alert with labels ends at, Alertmanager's
// way: depth first, the first matching child (and later ones after a child
// with continue); a route no child takes ends there. The root matches
// everything.
func (r *route) match(labels map[string]string) []*route {
	if !r.matchers.Matches(labels) {
		return nil
	}
	var out []*route
	for _, ch := range r.children {
		m := ch.match(labels)
		out = append(out, m...)
		if len(m) > 0 && !ch.cont {
			break
		}
	}
	if len(out) == 0 {
		out = []*route{r}
	}
	return out
}

// groupLabels are the values of the route's group_by labels for labels.
func (r *route) groupLabels(labels map[string]string) map[string]string {
	out := map[string]string{}
	if r.groupAll {
		for k, v := range labels {
			out[k] = v
		}
		return out
	}
	for _, k := range r.groupBy {
		if v, ok := labels[k]; ok {
			out[k] = v
		}
	}
	return out
}

// groupKey is the key of the group with groupLabels gl in this route.
func (r *route) groupKey(gl map[string]string) string {
	keys := make([]string, 0, len(gl))
	for k := range gl {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(r.id)
	b.WriteByte(':')
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(gl[k]))
	}
	b.WriteByte('}')
	return b.String()
}

// nextDigest is the first digest time after now.
func (r *route) nextDigest(now time.Time) time.Time {
	l := now.In(r.loc)
	t := time.Date(l.Year(), l.Month(), l.Day(), r.digestHour, r.digestMin, 0, 0, r.loc)
	if !t.After(l) {
		t = time.Date(l.Year(), l.Month(), l.Day()+1, r.digestHour, r.digestMin, 0, 0, r.loc)
	}
	return t
}
