package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/trace"
)

// InJobTrace returns ctx whose parent span is the one that created a job
// (its stored trace and span ids, W3C hex), so that work no message of the
// job starts, such as the watchdog failing it or the retention sweep
// expiring it, is traced in the job's one trace, and the events it
// publishes carry that trace on. With an id missing or malformed (a job
// created before span ids were stored) it returns ctx unchanged and the
// work starts a trace of its own.
func InJobTrace(ctx context.Context, traceID, spanID string) context.Context {
	tid, err := trace.TraceIDFromHex(traceID)
	if err != nil {
		return ctx
	}
	sid, err := trace.SpanIDFromHex(spanID)
	if err != nil {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
}
