package app

import (
	"context"
	"errors"
)

// cmdAuditReport is being written; until it lands the command says so and fails.
func cmdAuditReport(_ context.Context, _ *Env, _ []string) error {
	return errors.New("not built yet")
}
