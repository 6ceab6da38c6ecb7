package app

import (
	"context"
	"errors"
)

// cmdReplayAlerting is being written; until it lands the command says so and fails.
func cmdReplayAlerting(_ context.Context, _ *Env, _ []string) error {
	return errors.New("not built yet")
}
