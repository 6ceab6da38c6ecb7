package app

import (
	"context"
	"errors"
)

// cmdFleet is being written; until it lands the command says so and fails.
func cmdFleet(_ context.Context, _ *Env, _ []string) error {
	return errors.New("not built yet")
}
