package api

import (
	"context"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/consume"
)

// RejectedSource names the api on REJECTED (rejected.api): an event its
// read model can never apply is recorded there with the reason.
const RejectedSource = "api"

// fold is one stream the read model follows with the shared consume loop:
// an ordered consumer from the start of the stream (the model is in memory
// and rebuilt on every start; nobody else depends on it), one backoff, one
// caught-up rule. An event that does not decode, that the model refuses,
// or whose fold panics goes to REJECTED with the reason, and the fold goes
// on: the model only reads the log, so nothing it refuses is transient.
type fold struct {
	stream string
	*consume.Follower
}

// newFold follows stream into apply.
func (s *Service) newFold(stream string, apply func(m consume.Msg) error) *fold {
	return &fold{stream: stream, Follower: consume.New(s.deps.JS, consume.Config{
		Stream:      stream,
		Source:      RejectedSource,
		EventSource: events.SourceAPI,
		Log:         s.log,
		Handle: func(_ context.Context, m consume.Msg) error {
			if err := apply(m); err != nil {
				return consume.Poison(err)
			}
			return nil
		},
	})}
}

// caughtUp reports whether the fold has applied the stream's history.
func (f *fold) caughtUp() bool {
	select {
	case <-f.CaughtUp():
		return true
	default:
		return false
	}
}
