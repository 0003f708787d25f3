package jobstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
)

// events pairs every status event kind this gateway knows with its
// message type. Emit publishes by it and the projection consumer decodes
// by it, so an event the gateway publishes comes back as the message it
// applied.
var events = []struct {
	kind bus.Event
	new  func() Event
}{
	{bus.EventRequested, func() Event { return &exportv1.ExportRequested{} }},
	{bus.EventQueued, func() Event { return &exportv1.ExportQueued{} }},
	{bus.EventProgress, func() Event { return &exportv1.ExportProgress{} }},
	{bus.EventPart, func() Event { return &exportv1.PartUploaded{} }},
	{bus.EventFinalizing, func() Event { return &exportv1.ExportFinalizing{} }},
	{bus.EventCompleted, func() Event { return &exportv1.ExportCompleted{} }},
	{bus.EventFailed, func() Event { return &exportv1.ExportFailed{} }},
	{bus.EventCanceled, func() Event { return &exportv1.ExportCanceled{} }},
	{bus.EventNotified, func() Event { return &exportv1.NotificationSent{} }},
	{bus.EventExpired, func() Event { return &exportv1.ExportExpired{} }},
}

// newEvent returns an empty message of the type published for ev, or nil
// for an event this gateway does not know.
func newEvent(ev bus.Event) Event {
	for _, e := range events {
		if e.kind == ev {
			return e.new()
		}
	}
	return nil
}

// kindOf is the event kind ev is published as.
func kindOf(ev Event) (bus.Event, bool) {
	for _, e := range events {
		if e.new().ProtoReflect().Descriptor() == ev.ProtoReflect().Descriptor() {
			return e.kind, true
		}
	}
	return "", false
}

// Projection returns the bus.Handler of the gateway-projection consumer:
// it decodes each status event by its subject and applies it. Events of a
// kind this gateway does not know are acked and skipped, so that a newer
// producer does not make an older gateway retry forever.
func (s *Store) Projection(log *slog.Logger) bus.Handler {
	return func(ctx context.Context, msg jetstream.Msg) error {
		kind, jobID, err := bus.ParseStatusSubject(msg.Subject())
		if err != nil {
			return bus.Permanent(err)
		}
		ev := newEvent(kind)
		if ev == nil {
			log.WarnContext(ctx, "skipping unknown status event", "subject", msg.Subject(), "job_id", jobID)
			return nil
		}
		if err := bus.Decode(msg, ev); err != nil {
			return err
		}
		if ev.GetJobId() != jobID {
			return bus.Permanent(fmt.Errorf("%s carries job id %q", msg.Subject(), ev.GetJobId()))
		}
		job, err := s.Apply(ctx, ev)
		if errors.Is(err, ErrExists) {
			// A request for an id another job holds: the gateway that
			// applied it first refused it and never published it, so
			// this one came from elsewhere and no retry can place it.
			return bus.Permanent(err)
		}
		if err != nil {
			return err
		}
		log.DebugContext(ctx, "status event applied", "job_id", jobID, "event", string(kind), "state", job.GetState().String())
		return nil
	}
}
