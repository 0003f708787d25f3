package bus

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Instrumentation scope of the bus's spans and metrics.
const instrumentation = "dataport.dev/shared/bus"

// messagingSystem is the messaging.system attribute: NATS has no
// registered value in the semantic conventions, so the lower-case product
// name, as they advise.
const messagingSystem = "nats"

// Names of the consume loop's metrics.
const (
	// MetricProcessDuration is the semantic conventions' histogram of
	// handler time per message.
	MetricProcessDuration = "messaging.process.duration"
	// MetricMessagesHandled counts messages by outcome (ack, term, nak,
	// returned).
	MetricMessagesHandled = "dataport.messages.handled"
	// MetricRedeliveries counts deliveries after the first.
	MetricRedeliveries = "dataport.messages.redelivered"
	// MetricConsumerPending is the consumer's undelivered messages.
	MetricConsumerPending = "dataport.consumer.pending"
	// MetricConsumerAckPending is the consumer's delivered, unacked
	// messages.
	MetricConsumerAckPending = "dataport.consumer.ack_pending"
	// MetricConsumerRedelivered is the consumer's unacked messages that
	// were delivered more than once.
	MetricConsumerRedelivered = "dataport.consumer.redelivered"
)

// SubjectTemplate is subject with its job id replaced by "*", the
// low-cardinality name spans and metrics use (messaging.destination.template):
// a status subject becomes its StatusFilter, any other subject (tasks)
// names no job and stays as it is.
func SubjectTemplate(subject string) string {
	if ev, _, err := ParseStatusSubject(subject); err == nil {
		return StatusFilter(ev)
	}
	return subject
}

// JobIDOf is the job a message is about: the last token of a status
// subject, else the prefix of its Nats-Msg-Id (every id the services
// publish with starts with "<jobId>."; job ids contain no dot). Empty when
// neither names one.
func JobIDOf(msg jetstream.Msg) string {
	if _, id, err := ParseStatusSubject(msg.Subject()); err == nil {
		return id
	}
	if h := msg.Headers(); h != nil {
		if id, _, ok := strings.Cut(h.Get(HeaderMsgID), "."); ok {
			return id
		}
	}
	return ""
}

// consumeMetrics are the consume loop's instruments.
type consumeMetrics struct {
	duration     metric.Float64Histogram
	handled      metric.Int64Counter
	redeliveries metric.Int64Counter
}

func newConsumeMetrics(m metric.Meter) (*consumeMetrics, error) {
	var cm consumeMetrics
	var err error
	if cm.duration, err = m.Float64Histogram(MetricProcessDuration, metric.WithUnit("s"),
		metric.WithDescription("Time a handler took per message."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)); err != nil {
		return nil, err
	}
	if cm.handled, err = m.Int64Counter(MetricMessagesHandled, metric.WithUnit("{message}"),
		metric.WithDescription("Messages handled, by outcome: ack, term (never redelivered), nak (retried), returned (shutdown).")); err != nil {
		return nil, err
	}
	if cm.redeliveries, err = m.Int64Counter(MetricRedeliveries, metric.WithUnit("{message}"),
		metric.WithDescription("Deliveries of a message after its first.")); err != nil {
		return nil, err
	}
	return &cm, nil
}

func (cm *consumeMetrics) record(ctx context.Context, consumer, template, outcome string, delivery uint64, took time.Duration) {
	attrs := metric.WithAttributes(
		semconv.MessagingSystemKey.String(messagingSystem),
		semconv.MessagingConsumerGroupName(consumer),
		semconv.MessagingDestinationTemplate(template),
	)
	cm.duration.Record(ctx, took.Seconds(), attrs)
	cm.handled.Add(ctx, 1, attrs, metric.WithAttributes(attribute.String("outcome", outcome)))
	if delivery > 1 {
		cm.redeliveries.Add(ctx, 1, attrs)
	}
}

// observeConsumer reports c's backlog, read from the server at each
// collection, until the returned registration is unregistered. Every
// replica of a service reports the same durable's numbers; aggregate them
// with max, not sum.
func observeConsumer(m metric.Meter, c jetstream.Consumer) (metric.Registration, error) {
	pending, err := m.Int64ObservableGauge(MetricConsumerPending, metric.WithUnit("{message}"),
		metric.WithDescription("Messages of the consumer's stream not yet delivered to it."))
	if err != nil {
		return nil, err
	}
	ackPending, err := m.Int64ObservableGauge(MetricConsumerAckPending, metric.WithUnit("{message}"),
		metric.WithDescription("Messages delivered to the consumer and not yet acknowledged."))
	if err != nil {
		return nil, err
	}
	redelivered, err := m.Int64ObservableGauge(MetricConsumerRedelivered, metric.WithUnit("{message}"),
		metric.WithDescription("Unacknowledged messages delivered more than once."))
	if err != nil {
		return nil, err
	}
	cached := c.CachedInfo()
	attrs := metric.WithAttributes(
		semconv.MessagingSystemKey.String(messagingSystem),
		semconv.MessagingConsumerGroupName(cached.Name),
		attribute.String("stream", cached.Stream),
	)
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		info, err := c.Info(ctx)
		if err != nil {
			// No number is better than a stale one; the scrape goes on.
			return nil
		}
		o.ObserveInt64(pending, int64(info.NumPending), attrs)
		o.ObserveInt64(ackPending, int64(info.NumAckPending), attrs)
		o.ObserveInt64(redelivered, int64(info.NumRedelivered), attrs)
		return nil
	}, pending, ackPending, redelivered)
}
