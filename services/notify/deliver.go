package notify

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/otawatch/otawatch/events"
)

// DigestNotifier is a receiver that renders a digest route's
// notification (a route with digest_at) as a digest of the period from
// since (zero: before the group's first digest) to n.Time. A receiver
// without it gets digests through Notify.
type DigestNotifier interface {
	NotifyDigest(ctx context.Context, n *Notification, since time.Time) (Result, error)
}

// sentRecordTimeout bounds recording a delivery the receiver accepted,
// which goes on after the run's context ended: a sent notification whose
// record is lost would be sent again by the next active instance.
const sentRecordTimeout = 30 * time.Second

// maxAnswer is how much of a receiver's answer NOTIFY keeps.
const maxAnswer = 512

// deliver makes the attempts of one notification. Each attempt is
// recorded on NOTIFY before the receiver is called (attempt) and after it
// answered (sent or failed). A failure the receiver calls retryable is
// tried again after an exponential backoff with jitter, or after the
// Retry-After it asked for when that is longer, until retry_for has
// passed; a failure it does not is final, and the same notification is
// not tried again.
func (s *Service) deliver(ctx context.Context, d *dispatcher, g *group, notifier Notifier, n *Notification, dec decision) {
	defer s.wg.Done()
	defer s.busy.Add(-1)
	nd := dec.nd
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval = s.retryInitial, s.retryMax
	start := s.clock.Now()
	log := s.log.With("receiver", nd.Receiver, "group", nd.GroupKey, "notification", nd.ID)
	for {
		nd.Attempt++
		nd.Code, nd.Answer, nd.Error, nd.Retry, nd.Final = 0, "", "", false, false
		now := s.clock.Now()
		if err := s.publish(ctx, events.NotifySubject(nd.Receiver, events.NotifyAttempt),
			events.NotifyEventID(nd.ID, events.NotifyAttempt, nd.Attempt), events.TypeNotifyAttempt, nd.GroupKey, now, nd); err != nil {
			if ctx.Err() == nil {
				log.Error("record a delivery attempt; not attempting", "err", err)
			}
			s.finish(d, g, nil, nil, nil, now)
			return
		}
		s.attempts.Add(1)
		actx, cancel := context.WithTimeout(ctx, s.timeout)
		var res Result
		var err error
		if dn, ok := notifier.(DigestNotifier); ok && dec.digest {
			res, err = dn.NotifyDigest(actx, n, dec.since)
		} else {
			res, err = notifier.Notify(actx, n)
		}
		cancel()
		nd.Code, nd.Answer = res.Status, trim(res.Answer, maxAnswer)
		now = s.clock.Now()
		if err == nil {
			// The receiver has it: record that even when the run is
			// stopping, or the next active instance sends it again.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sentRecordTimeout)
			err := s.publish(rctx, events.NotifySubject(nd.Receiver, events.NotifySent),
				events.NotifyEventID(nd.ID, events.NotifySent, nd.Attempt), events.TypeNotifySent, nd.GroupKey, now, nd)
			cancel()
			if err != nil {
				log.Error("record a delivered notification: the next active instance may send it again", "err", err)
			}
			s.sent.Add(1)
			log.Info("notification sent", "status", nd.Status, "alerts", len(n.Alerts), "attempt", nd.Attempt, "code", nd.Code)
			s.finish(d, g, &nd, nil, dec.done, now)
			return
		}
		if ctx.Err() != nil {
			// Stopping: the attempt is on record without an outcome; the
			// next active instance makes it again.
			s.finish(d, g, nil, nil, nil, now)
			return
		}
		nd.Error, nd.Retry = trim(err.Error(), maxAnswer), res.Retry
		nd.Final = !res.Retry || now.Sub(start) >= s.retryFor
		if perr := s.publish(ctx, events.NotifySubject(nd.Receiver, events.NotifyFailed),
			events.NotifyEventID(nd.ID, events.NotifyFailed, nd.Attempt), events.TypeNotifyFailed, nd.GroupKey, now, nd); perr != nil && ctx.Err() == nil {
			log.Error("record a failed delivery attempt", "err", perr)
		}
		s.failed.Add(1)
		log.Warn("notification attempt failed", "attempt", nd.Attempt, "code", nd.Code, "retry", nd.Retry, "final", nd.Final, "err", err)
		if nd.Final {
			s.finish(d, g, nil, &nd, nil, now)
			return
		}
		wait := bo.NextBackOff()
		if res.RetryAfter > wait {
			wait = res.RetryAfter
		}
		if !s.sleep(ctx, wait) {
			s.finish(d, g, nil, nil, nil, now)
			return
		}
	}
}

// finish ends a delivery: sent is the notification delivered (done the
// resolved alerts the group may now forget), failed one that failed for
// good, both nil one abandoned.
func (s *Service) finish(d *dispatcher, g *group, sent, failed *events.NotificationData, done []*alert, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.d != d {
		return
	}
	g.inflight = false
	switch {
	case sent != nil:
		d.applySent(*sent, at)
		for _, al := range done {
			d.drop(g, al)
		}
	case failed != nil:
		d.applyFailed(*failed)
	}
	d.gc(g)
}

// sleep waits d on the service's clock; false when ctx ended first.
func (s *Service) sleep(ctx context.Context, d time.Duration) bool {
	ch := make(chan struct{})
	t := s.clock.AfterFunc(d, func() { close(ch) })
	s.retryWaits.Add(1)
	defer s.retryWaits.Add(-1)
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		t.Stop()
		return false
	}
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
