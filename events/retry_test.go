package events

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestRetry(t *testing.T) {
	refused := &jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use"}
	notReady := &jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}
	tests := []struct {
		name      string
		fails     int // failures before success
		err       error
		attempts  int
		wantCalls int
		wantErr   error
	}{
		{"succeeds at once", 0, nil, 3, 1, nil},
		{"retried until it works", 2, notReady, 3, 3, nil},
		{"gives up after attempts", 5, notReady, 3, 3, notReady},
		{"a refusal is not retried", 5, refused, 3, 1, refused},
		{"a plain error is retried", 1, errors.New("timeout"), 3, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := Retry(context.Background(), tt.attempts, func(context.Context) error {
				calls++
				if calls <= tt.fails {
					return tt.err
				}
				return nil
			})
			if calls != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls, tt.wantCalls)
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("err %v, want %v", err, tt.wantErr)
			}
			var apiErr *jetstream.APIError
			if tt.wantErr != nil && !errors.As(err, &apiErr) {
				t.Errorf("err %v does not unwrap to the API error", err)
			}
		})
	}
}
