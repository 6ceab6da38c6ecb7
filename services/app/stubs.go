package app

import (
	"context"
	"errors"
)

// Commands whose issues are still open. Each is replaced by its own file.

func cmdSimulate(context.Context, *Env, []string) error {
	return errors.New("not implemented yet")
}
