package rollout

import (
	"context"
	"errors"

	"github.com/otawatch/otawatch/services/internal/svc"
)

// Service is the rollout service.
type Service struct {
	cfg  Config
	deps svc.Deps
}

// New builds the service; it does no I/O.
func New(cfg Config, deps svc.Deps) (*Service, error) {
	return &Service{cfg: cfg, deps: deps}, nil
}

// Run runs the service until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	return errors.New("rollout: not implemented yet")
}
