package notify

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// MetricSends counts notification attempts by channel kind ("email",
// "webhook") and outcome: "sent"; "error", a failed attempt that will be
// retried; "given_up", a notification that will never be sent (refused,
// out of attempts, or unsendable).
const MetricSends = "dataport.notification.sends"

// Outcomes of MetricSends.
const (
	OutcomeSent    = "sent"
	OutcomeError   = "error"
	OutcomeGivenUp = "given_up"
)

func newSends(mp metric.MeterProvider) (metric.Int64Counter, error) {
	return mp.Meter("dataport.dev/services/notifier/internal/notify").Int64Counter(MetricSends,
		metric.WithUnit("{notification}"),
		metric.WithDescription("Email and webhook notification attempts, by channel and outcome (sent, error: retried, given_up: never sent)."))
}

// count records one outcome of channel (a record key's channel, such as
// "email" or "webhook.<hash>"), by the kind of channel only: a series per
// webhook URL would grow without bound.
func (n *Notifier) count(ctx context.Context, channel, outcome string) {
	kind, _, _ := strings.Cut(channel, ".")
	n.sends.Add(context.WithoutCancel(ctx), 1, metric.WithAttributes(
		attribute.String("channel", kind), attribute.String("outcome", outcome)))
}
