package bus

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
)

// AttrJobID is the span attribute naming the job a message is about.
const AttrJobID = "dataport.job_id"

// Header names.
const (
	HeaderMsgID       = jetstream.MsgIDHeader
	HeaderTraceParent = "traceparent"
)

// headerCarrier adapts nats.Header to OpenTelemetry without changing the
// case of keys: NATS headers are case-sensitive and W3C names are lower case.
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { c[key] = []string{value} }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Publisher publishes protobuf messages to JetStream. It is safe for
// concurrent use.
type Publisher struct {
	js         jetstream.JetStream
	propagator propagation.TextMapPropagator
}

// NewPublisher returns a Publisher that injects trace context with p.
func NewPublisher(js jetstream.JetStream, p propagation.TextMapPropagator) *Publisher {
	if p == nil {
		p = propagation.TraceContext{}
	}
	return &Publisher{js: js, propagator: p}
}

// Publish sends m to subject and waits for the stream's ack. msgID becomes
// Nats-Msg-Id, so a second publish with the same id inside the stream's
// duplicate window is stored only once; pass a stable id derived from the
// job (never a random one) so retries stay idempotent.
func (p *Publisher) Publish(ctx context.Context, subject, msgID string, m proto.Message) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %T: %w", m, err)
	}
	return p.publishMsg(ctx, &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}, msgID)
}

// publishMsg sends msg in a producer span ("send <destination>", as the
// semantic conventions for messaging name it) whose context travels in the
// traceparent header, so the consumer's span is its child. The span comes
// from the tracer provider of the span already in ctx (an HTTP request's,
// a handler's): a publish is always part of some work, and this way the
// Publisher needs no provider of its own. Without a span in ctx there is
// no send span either, and nothing to continue.
func (p *Publisher) publishMsg(ctx context.Context, msg *nats.Msg, msgID string) error {
	template := SubjectTemplate(msg.Subject)
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(messagingSystem),
		semconv.MessagingOperationName("send"),
		semconv.MessagingOperationTypeSend,
		semconv.MessagingDestinationName(msg.Subject),
		semconv.MessagingDestinationTemplate(template),
	}
	if msgID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(msgID))
		if id, _, ok := strings.Cut(msgID, "."); ok {
			attrs = append(attrs, attribute.String(AttrJobID, id))
		}
	}
	tracer := trace.SpanFromContext(ctx).TracerProvider().Tracer(instrumentation)
	ctx, span := tracer.Start(ctx, "send "+template, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	defer span.End()

	p.propagator.Inject(ctx, headerCarrier(msg.Header))
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := p.js.PublishMsg(ctx, msg, opts...); err != nil {
		span.SetStatus(codes.Error, err.Error())
		return fmt.Errorf("publish %s: %w", msg.Subject, err)
	}
	return nil
}

// PublishStatus publishes a job's status event on its subject with the
// dedup id "<jobId>.<event>.<discriminator>". Use an empty discriminator for
// events that happen once per job (completed, failed) so redelivered work
// cannot emit them twice.
func (p *Publisher) PublishStatus(ctx context.Context, ev Event, jobID, discriminator string, m proto.Message) error {
	subject, err := StatusSubject(ev, jobID)
	if err != nil {
		return err
	}
	id := jobID + "." + string(ev)
	if discriminator != "" {
		id += "." + discriminator
	}
	return p.Publish(ctx, subject, id, m)
}

// ExtractTrace returns ctx carrying the trace context found in h.
func ExtractTrace(ctx context.Context, p propagation.TextMapPropagator, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return p.Extract(ctx, headerCarrier(h))
}
