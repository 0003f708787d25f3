package telemetry

import (
	"context"
	"encoding/binary"
	"math/rand/v2"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// idsOnly is the tracer provider of a service that exports no spans. Its
// spans carry what the SDK's would carry beyond the process (a trace id,
// a fresh span id, the sampled flag of the SDK's default sampler,
// ParentBased(AlwaysSample), and the parent's trace state), so log lines,
// traceparent headers and the trace ids jobs store are the same, but
// record nothing: the SDK's provider without a span processor builds,
// fills and drops a whole span per request, which was about a tenth of
// the CPU the gateway's handler spent on a poll.
type idsOnly struct{ embedded.TracerProvider }

func (p *idsOnly) Tracer(string, ...trace.TracerOption) trace.Tracer { return idsTracer{p: p} }

type idsTracer struct {
	embedded.Tracer
	p *idsOnly
}

// Start returns a span with new ids in ctx's trace, or in a new trace
// when ctx has none or the options ask for a new root.
func (t idsTracer) Start(ctx context.Context, _ string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	parent := trace.SpanContextFromContext(ctx)
	if len(opts) > 0 {
		if cfg := trace.NewSpanStartConfig(opts...); cfg.NewRoot() {
			parent = trace.SpanContext{}
		}
	}
	cfg := trace.SpanContextConfig{SpanID: newSpanID()}
	if parent.TraceID().IsValid() {
		// ParentBased: a span is sampled exactly when its parent is.
		cfg.TraceID, cfg.TraceFlags, cfg.TraceState = parent.TraceID(), parent.TraceFlags(), parent.TraceState()
	} else {
		cfg.TraceID, cfg.TraceFlags = newTraceID(), trace.FlagsSampled
	}
	s := idsSpan{sc: trace.NewSpanContext(cfg), p: t.p}
	return trace.ContextWithSpan(ctx, s), s
}

// newTraceID and newSpanID draw ids as the SDK's generator does, from a
// generator that takes no lock; zero, which is invalid, is drawn again.
func newTraceID() trace.TraceID {
	for {
		var id trace.TraceID
		binary.NativeEndian.PutUint64(id[:8], rand.Uint64())
		binary.NativeEndian.PutUint64(id[8:], rand.Uint64())
		if id.IsValid() {
			return id
		}
	}
}

func newSpanID() trace.SpanID {
	for {
		var id trace.SpanID
		binary.NativeEndian.PutUint64(id[:], rand.Uint64())
		if id.IsValid() {
			return id
		}
	}
}

// idsSpan is a span that records nothing. Its TracerProvider is the
// provider it came from, so a child started from it (bus.Publisher's
// send span) gets ids of its own, as an SDK span's child does.
type idsSpan struct {
	embedded.Span
	sc trace.SpanContext
	p  *idsOnly
}

func (s idsSpan) SpanContext() trace.SpanContext        { return s.sc }
func (s idsSpan) IsRecording() bool                     { return false }
func (s idsSpan) TracerProvider() trace.TracerProvider  { return s.p }
func (idsSpan) End(...trace.SpanEndOption)              {}
func (idsSpan) AddEvent(string, ...trace.EventOption)   {}
func (idsSpan) AddLink(trace.Link)                      {}
func (idsSpan) RecordError(error, ...trace.EventOption) {}
func (idsSpan) SetStatus(codes.Code, string)            {}
func (idsSpan) SetName(string)                          {}
func (idsSpan) SetAttributes(...attribute.KeyValue)     {}
