package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"

	"dataport.dev/shared/telemetry"
)

// PermanentError marks a failure that no retry can fix (a malformed message,
// a job that refers to nothing). The consume loop terminates such messages
// instead of redelivering them.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so the consume loop terminates the message.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// DefaultReason is a failed job's reason when nothing on the way worded
// one: what went wrong inside is for the logs, not for the job's owner.
const DefaultReason = "The export failed because of an internal error; please try again."

// Reasoner is an error worded for the people who read a failed job's
// reason: a sentence in the product's words, without hosts, URLs, bucket
// names, upload ids or other internals (those stay in Error, for the
// logs).
type Reasoner interface {
	error
	Reason() string
}

// WordedError carries a reason for people next to the internal error it
// explains.
type WordedError struct {
	// Sentence is the reason people read.
	Sentence string
	Err      error
}

func (e *WordedError) Error() string {
	if e.Err == nil {
		return e.Sentence
	}
	return e.Sentence + " (" + e.Err.Error() + ")"
}
func (e *WordedError) Unwrap() error  { return e.Err }
func (e *WordedError) Reason() string { return e.Sentence }

// Worded returns err with sentence as the reason people read; Error keeps
// err's text for the logs. err may be nil.
func Worded(sentence string, err error) error {
	return &WordedError{Sentence: sentence, Err: err}
}

// Reason is err worded for a person, e.g. as a failed job's reason: the
// outermost Reasoner's sentence, else DefaultReason. Error text never
// reaches people this way: it names internals (addresses, buckets, upload
// ids) and means nothing to them.
func Reason(err error) string {
	if r, ok := errors.AsType[Reasoner](err); ok {
		return r.Reason()
	}
	return DefaultReason
}

// ReasonFor is Reason with the trace id of ctx's span appended when there
// is one, so that a person quoting the reason to support leads to the
// logs and traces of what happened.
func ReasonFor(ctx context.Context, err error) string {
	return WithTraceID(Reason(err), trace.SpanContextFromContext(ctx).TraceID())
}

// WithTraceID appends a trace id to a reason when the id is valid.
func WithTraceID(reason string, id trace.TraceID) string {
	if !id.IsValid() {
		return reason
	}
	return reason + " (trace " + id.String() + ")"
}

// Unavailable reports whether err says NATS could not be reached or did
// not answer in time: no connection, a reconnect in progress, no
// responders (a stream without a leader), a timeout, missed heartbeats, a
// JetStream API that answered 503. Such a failure is the bus's state, not
// the work's fault: the work waits and tries again instead of counting the
// failure against its deliveries.
func Unavailable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	if ae, ok := errors.AsType[*jetstream.APIError](err); ok {
		return ae.Code == 503
	}
	return false
}

// IsPermanent reports whether err carries a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// Decode unmarshals a message body; a body that does not decode is
// permanent, since redelivering the same bytes cannot help.
func Decode(msg jetstream.Msg, m proto.Message) error {
	if err := proto.Unmarshal(msg.Data(), m); err != nil {
		return Permanent(fmt.Errorf("decode %T from %s: %w", m, msg.Subject(), err))
	}
	return nil
}

// Handler processes one message. Its verdict decides the ack:
//   - nil: the side effect is durable; the message is acked.
//   - a PermanentError: the message is terminated and never redelivered.
//   - any other error: the message is nak'ed with a growing delay and
//     retried until the consumer's MaxDeliver.
//
// Handlers must be idempotent: JetStream delivers at least once. ctx is
// canceled when the service shuts down and the grace period runs out; a
// handler that stops early must return an error so the message goes back.
type Handler func(ctx context.Context, msg jetstream.Msg) error

// ConsumeOptions tune Consume.
type ConsumeOptions struct {
	// Concurrency is how many messages are handled at once (default 1).
	Concurrency int
	// Heartbeat is how often a running handler's message gets an
	// in-progress ack; keep it under AckWait/2 (default 10s).
	Heartbeat time.Duration
	// NakDelay returns the redelivery delay after the given failed delivery
	// (1-based); default 1s doubling up to 1 minute.
	NakDelay func(delivery uint64) time.Duration
	// Grace is how long in-flight handlers may keep running after ctx is
	// canceled before their own contexts are canceled (default 10s).
	Grace time.Duration
	// OnTerminated is called after a message was terminated, with the
	// handler's error, so the owner can record why (e.g. fail the job).
	OnTerminated func(ctx context.Context, msg jetstream.Msg, err error)
	Logger       *slog.Logger
	Tracer       trace.Tracer
	Propagator   propagation.TextMapPropagator
	// Meter records the loop's metrics (handler duration, outcomes,
	// redeliveries) and observes the consumer's backlog; nil records
	// nothing.
	Meter metric.Meter
	// FetchWhenFree pulls a message only once a slot is free, instead of
	// keeping up to Concurrency messages buffered ahead. Set it for
	// handlers that run for minutes (export tasks): a message buffered
	// ahead gets no in-progress acks, so it outlives its AckWait while
	// the slots are busy and is delivered again, to be run twice. Quick
	// handlers are better served by the buffer, which saves a round trip
	// per message.
	FetchWhenFree bool
}

func (o *ConsumeOptions) defaults() {
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 10 * time.Second
	}
	if o.NakDelay == nil {
		o.NakDelay = DefaultNakDelay
	}
	if o.Grace <= 0 {
		o.Grace = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider().Tracer("bus")
	}
	if o.Propagator == nil {
		o.Propagator = propagation.TraceContext{}
	}
	if o.Meter == nil {
		o.Meter = metricnoop.NewMeterProvider().Meter(instrumentation)
	}
}

// DefaultNakDelay is 1s doubling per delivery, capped at one minute.
func DefaultNakDelay(delivery uint64) time.Duration {
	d := time.Second
	for i := uint64(1); i < delivery && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// Consume pulls messages from c and runs h on each until ctx is canceled.
// On cancellation it stops pulling, hands buffered messages straight back
// (nak without delay), waits up to Grace for running handlers and then
// cancels them; their messages are nak'ed so another replica picks them up.
// It returns nil after a clean shutdown.
func Consume(ctx context.Context, c jetstream.Consumer, h Handler, o ConsumeOptions) error {
	o.defaults()
	metrics, err := newConsumeMetrics(o.Meter)
	if err != nil {
		return fmt.Errorf("consume metrics: %w", err)
	}
	backlog, err := observeConsumer(o.Meter, c)
	if err != nil {
		return fmt.Errorf("consumer metrics: %w", err)
	}
	defer func() { _ = backlog.Unregister() }()
	name := c.CachedInfo().Name
	if o.FetchWhenFree {
		return consumeWhenFree(ctx, c, name, h, &o, metrics)
	}
	// A missed heartbeat (a consumer leader change, a server restart)
	// means the pull request is gone, not that consuming failed: the
	// iterator then issues a new one by itself. Reported, it ended the
	// loop and so the service (TestClusterLosesANode's leader stepdowns).
	it, err := c.Messages(jetstream.PullMaxMessages(o.Concurrency), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return fmt.Errorf("start consuming: %w", err)
	}
	// Handlers outlive ctx by the grace period so that quick work finishes
	// instead of being redone elsewhere.
	handlerCtx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		select {
		case <-ctx.Done():
			it.Drain()
		case <-stopWatch:
		}
	}()

	slots := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	var loopErr error
	for {
		msg, err := it.Next()
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				loopErr = fmt.Errorf("next message: %w", err)
			}
			break
		}
		if ctx.Err() != nil {
			// Buffered before the drain: give it back at once.
			_ = msg.Nak()
			continue
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			handle(handlerCtx, name, msg, h, &o, metrics)
		}()
	}
	close(stopWatch)
	<-watchDone
	it.Stop()
	awaitHandlers(&wg, o.Grace, cancelHandlers)
	return loopErr
}

// consumeWhenFree is Consume's loop for FetchWhenFree: take a slot, then
// pull one message for it, so nothing waits unacknowledged for a slot.
func consumeWhenFree(ctx context.Context, c jetstream.Consumer, name string, h Handler, o *ConsumeOptions, metrics *consumeMetrics) error {
	handlerCtx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	slots := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	var loopErr error
	backoff := time.Duration(0)
loop:
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		// The pull request lives at most the client's default 30 s and
		// ends with ctx, so shutdown does not wait for it.
		msg, err := c.Next(jetstream.FetchContext(ctx))
		if err != nil {
			<-slots
			switch {
			case ctx.Err() != nil:
				break loop
			case errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoHeartbeat):
				// Nothing to do for a while, or the pull request was lost
				// to a leader change: ask again.
				backoff = 0
				continue
			case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
				loopErr = fmt.Errorf("next message: %w", err)
				break loop
			}
			// An outage: the client reconnects by itself; ask again with
			// a growing pause instead of spinning.
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			o.Logger.WarnContext(ctx, "pull failed; asking again", "consumer", name, "error", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				break loop
			}
			continue
		}
		backoff = 0
		if ctx.Err() != nil {
			_ = msg.Nak()
			<-slots
			break loop
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			handle(handlerCtx, name, msg, h, o, metrics)
		}()
	}
	awaitHandlers(&wg, o.Grace, cancelHandlers)
	return loopErr
}

// awaitHandlers waits for running handlers, canceling their contexts
// once grace has passed.
func awaitHandlers(wg *sync.WaitGroup, grace time.Duration, cancel context.CancelFunc) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cancel()
		<-done
	}
}

// handle runs h on msg in a span named and attributed as the semantic
// conventions for messaging have it ("process <destination>", kind
// consumer, continuing the publisher's trace), with the message's job_id
// on the span and on every log line written with its context.
func handle(ctx context.Context, consumer string, msg jetstream.Msg, h Handler, o *ConsumeOptions, metrics *consumeMetrics) {
	start := time.Now()
	template := SubjectTemplate(msg.Subject())
	jobID := JobIDOf(msg)
	ctx = ExtractTrace(ctx, o.Propagator, msg.Headers())
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String(messagingSystem),
		semconv.MessagingOperationName("process"),
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(msg.Subject()),
		semconv.MessagingDestinationTemplate(template),
		semconv.MessagingConsumerGroupName(consumer),
	}
	if h := msg.Headers(); h != nil && h.Get(HeaderMsgID) != "" {
		attrs = append(attrs, semconv.MessagingMessageID(h.Get(HeaderMsgID)))
	}
	if jobID != "" {
		attrs = append(attrs, attribute.String(AttrJobID, jobID))
		ctx = telemetry.WithLogAttrs(ctx, slog.String(telemetry.KeyJobID, jobID))
	}
	ctx, span := o.Tracer.Start(ctx, "process "+template, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attrs...))
	defer span.End()

	var delivery uint64 = 1
	if md, err := msg.Metadata(); err == nil {
		delivery = md.NumDelivered
	}
	span.SetAttributes(attribute.Int64("messaging.nats.delivery", int64(delivery)))

	beatCtx, stopBeat := context.WithCancel(ctx)
	beatDone := make(chan struct{})
	go func() {
		defer close(beatDone)
		t := time.NewTicker(o.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-beatCtx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	err := runHandler(ctx, msg, h)
	stopBeat()
	<-beatDone

	log := o.Logger.With("subject", msg.Subject(), "delivery", delivery)
	var outcome string
	switch {
	case err == nil:
		outcome = "ack"
		if ackErr := msg.DoubleAck(ctx); ackErr != nil {
			log.WarnContext(ctx, "ack failed; message will be redelivered", "error", ackErr)
		}
	case IsPermanent(err):
		outcome = "term"
		span.SetStatus(codes.Error, err.Error())
		log.ErrorContext(ctx, "message terminated", "error", err)
		_ = msg.TermWithReason(truncate(err.Error(), 200))
		if o.OnTerminated != nil {
			o.OnTerminated(context.WithoutCancel(ctx), msg, err)
		}
	case ctx.Err() != nil:
		outcome = "returned"
		log.InfoContext(ctx, "handing message back on shutdown", "error", err)
		_ = msg.Nak()
	default:
		outcome = "nak"
		span.SetStatus(codes.Error, err.Error())
		delay := o.NakDelay(delivery)
		log.WarnContext(ctx, "message failed; retrying", "error", err, "retry_in", delay.String())
		_ = msg.NakWithDelay(delay)
	}
	metrics.record(context.WithoutCancel(ctx), consumer, template, outcome, delivery, time.Since(start))
}

// runHandler turns a handler panic into a permanent error: the same message
// would panic again, and one bad message must not stop the service.
func runHandler(ctx context.Context, msg jetstream.Msg, h Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Permanent(fmt.Errorf("handler panic: %v", r))
		}
	}()
	return h(ctx, msg)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// GiveUpOnLastDelivery turns a transient handler error into a permanent one
// on the consumer's last allowed delivery (maxDeliver), so the consume
// loop terminates the message and its OnTerminated hook can fail the job
// with the reason, instead of the message quietly running out of
// deliveries. The reason says how many attempts failed, unless err was
// worded already; err's text stays for the logs. Errors during shutdown
// stay transient: the message goes back.
func GiveUpOnLastDelivery(ctx context.Context, msg jetstream.Msg, maxDeliver int, err error) error {
	if err == nil || IsPermanent(err) || ctx.Err() != nil || maxDeliver <= 0 {
		return err
	}
	if md, mdErr := msg.Metadata(); mdErr == nil && md.NumDelivered >= uint64(maxDeliver) {
		err = fmt.Errorf("giving up after %d attempts: %w", md.NumDelivered, err)
		if _, worded := errors.AsType[Reasoner](err); !worded {
			attempts := fmt.Sprintf("%d attempts", md.NumDelivered)
			if md.NumDelivered == 1 {
				attempts = "1 attempt"
			}
			err = Worded("The export failed, giving up after "+attempts+"; please try again.", err)
		}
		return Permanent(err)
	}
	return err
}
