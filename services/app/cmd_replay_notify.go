package app

import (
	"context"
	"errors"
)

// cmdReplayNotify is being written; until it lands the command says so and fails.
func cmdReplayNotify(_ context.Context, _ *Env, _ []string) error {
	return errors.New("not built yet")
}
