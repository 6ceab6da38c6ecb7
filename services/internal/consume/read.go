package consume

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
)

// ReadRange hands fn the messages of stream (only those on subjects, when
// given; wildcards allowed) with a sequence from from to to, both
// included, in order, undecoded (Config.Raw), through a Follower. It
// returns when fn has had to, when fn says stop or fails (its error), or
// when ctx ends (ctx's error). to must be the sequence of a message on
// subjects, or ReadRange waits for the next one after it.
func ReadRange(ctx context.Context, js jetstream.JetStream, stream string, subjects []string, from, to uint64, fn func(m Msg) (stop bool, err error)) error {
	from = max(from, 1)
	if from > to {
		return nil
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ferr error
	done := false // the follower may hand over what it holds after cancel
	f := New(js, Config{
		Stream: stream, From: from, Raw: true, Subjects: subjects,
		Handle: func(_ context.Context, m Msg) error {
			if done || m.Seq > to {
				done = true
				cancel()
				return nil
			}
			stop, err := fn(m)
			if err != nil {
				ferr = err
			}
			if err != nil || stop || m.Seq >= to {
				done = true
				cancel()
			}
			return nil
		},
	})
	if err := f.Run(ctx); err != nil {
		return err
	}
	if ferr != nil {
		return ferr
	}
	return parent.Err()
}

// LastMsg is the last message of stream on subject (wildcards allowed),
// read with events.Retry; nil and no error when there is none, or no such
// stream.
func LastMsg(ctx context.Context, js jetstream.JetStream, stream, subject string) (*jetstream.RawStreamMsg, error) {
	var m *jetstream.RawStreamMsg
	err := events.Retry(ctx, 3, func(ctx context.Context) error {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		m, err = s.GetLastMsgForSubject(ctx, subject)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	return m, err
}

// StreamInfo is the stream's info, read with events.Retry (a JetStream API
// call right after a leader failover can hang: a short timeout and a few
// tries).
func StreamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, error) {
	var info *jetstream.StreamInfo
	err := events.Retry(ctx, 3, func(ctx context.Context) error {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return err
		}
		info, err = s.Info(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	return info, nil
}
