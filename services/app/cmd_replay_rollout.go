package app

import (
	"context"
	"errors"
)

// cmdReplayRollout is being written; until it lands the command says so and fails.
func cmdReplayRollout(_ context.Context, _ *Env, _ []string) error {
	return errors.New("not built yet")
}
