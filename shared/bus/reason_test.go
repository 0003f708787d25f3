package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/otel/trace"

	"dataport.dev/shared/bus"
)

func TestReasonIsASentence(t *testing.T) {
	internal := errors.New(`Get "http://127.0.0.1:9100/b?uploadId=u1": dial tcp 127.0.0.1:9100: connect: connection refused`)
	worded := bus.Worded("The file storage was unavailable.", internal)
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"internal error", internal, bus.DefaultReason},
		{"permanent internal error", bus.Permanent(internal), bus.DefaultReason},
		{"worded", bus.Permanent(fmt.Errorf("part 0: %w", worded)), "The file storage was unavailable."},
		{"outermost wording wins", bus.Worded("Outer.", worded), "Outer."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, bus.Reason(tc.err))
		})
	}
	assert.Contains(t, worded.Error(), "dial tcp", "the logs keep the cause")

	id := trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: id, SpanID: trace.SpanID{1}}))
	assert.Equal(t, "Outer. (trace "+id.String()+")", bus.ReasonFor(ctx, bus.Worded("Outer.", nil)))
	assert.Equal(t, "Outer.", bus.ReasonFor(context.Background(), bus.Worded("Outer.", nil)), "no trace, no suffix")
}

func TestUnavailable(t *testing.T) {
	for _, err := range []error{nats.ErrNoResponders, nats.ErrTimeout, nats.ErrConnectionClosed, nats.ErrConnectionReconnecting,
		jetstream.ErrNoHeartbeat, context.DeadlineExceeded, &jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}} {
		assert.True(t, bus.Unavailable(fmt.Errorf("read job: %w", err)), "%v", err)
	}
	for _, err := range []error{nil, errors.New("boom"), jetstream.ErrKeyNotFound, context.Canceled, bus.Permanent(errors.New("bad"))} {
		assert.False(t, bus.Unavailable(err), "%v", err)
	}
}
