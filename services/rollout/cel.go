package rollout

import (
	"github.com/otawatch/otawatch/events"
)

// celGate is a job's compiled extra gate.
type celGate struct{}

// checkCEL compiles a CEL gate expression.
func checkCEL(expr string) error { return nil }

// extraGateLocked returns the job's extra gate, nil when it has none.
func (s *Service) extraGateLocked(j *Job) ExtraGate { return nil }

var _ = events.RolloutRunning
