package app

import (
	"context"
	"errors"
)

// cmdRolloutWhatIf is being written; until it lands the command says so and fails.
func cmdRolloutWhatIf(_ context.Context, _ *Env, _ []string) error {
	return errors.New("not built yet")
}
