package alerting

import (
	"context"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/ruleeval"
)

// The rules in force are part of the record: when the service starts to
// run a rule set (at start, and on a reload) that differs from the last
// one recorded, it puts the set's text on ALERTS (events.TypeRulesLoaded
// on events.SubjectRulesLoaded) with the SHADOW and ROLLOUT positions and
// the engine time where it takes over, in the same turn and before the
// alert events the swap causes. `otawatch replay alerting` runs the history
// through the sets so recorded.

// recordRules queues the record of the rule set l taking over now, unless
// it is the set last recorded (a restart with unchanged rules records
// nothing). The turn's flush stores it.
func (s *Service) recordRules(r *run, l loaded, reason string) {
	d := ruleeval.RulesRecord(s.cfg.RulesDir, l.files, l.set)
	if d.SHA256 == r.rulesHash {
		return
	}
	d.ShadowSeq, d.RolloutSeq, d.EngineTime, d.Reason = r.eng.ShadowSeq, r.eng.RolloutSeq, r.eng.Now(), reason
	at := s.clock.Now()
	ev, err := events.New(events.RulesLoadedEventID(d.SHA256, d.ShadowSeq, d.RolloutSeq, at), events.SourceAlerting,
		events.TypeRulesLoaded, d.Dir, at, d)
	if err == nil {
		err = r.pub.add(events.SubjectRulesLoaded, ev, nil)
	}
	if err != nil {
		// The rules run all the same; a replay without the record uses
		// the set recorded before it.
		s.log.Error("record the rule set on ALERTS", "sha256", d.SHA256, "err", err)
		return
	}
	r.rulesHash = d.SHA256
	r.dirty = true
	s.log.Info("rule set recorded", "sha256", d.SHA256, "shadow_seq", d.ShadowSeq, "rollout_seq", d.RolloutSeq, "reason", reason)
}

// lastRecordedRules is the hash of the rule set last recorded on ALERTS,
// "" when there is none or it cannot be read (the set is then recorded
// again, which is harmless).
func (s *Service) lastRecordedRules(ctx context.Context) string {
	msg, err := consume.LastMsg(ctx, s.deps.JS, events.StreamAlerts, events.SubjectRulesLoaded)
	if err != nil {
		s.log.Warn("read the last recorded rule set; recording the running one", "err", err)
		return ""
	}
	if msg == nil {
		return ""
	}
	ev, err := events.Decode(msg.Data)
	if err != nil {
		return ""
	}
	d, err := events.DecodeRulesLoaded(ev)
	if err != nil {
		s.log.Warn("the last recorded rule set does not read; recording the running one", "seq", msg.Sequence, "err", err)
		return ""
	}
	return d.SHA256
}
