package jobstore

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
)

// newEvent returns an empty message of the type published for ev, or nil
// for an event this gateway does not know.
func newEvent(ev bus.Event) Event {
	switch ev {
	case bus.EventRequested:
		return &exportv1.ExportRequested{}
	case bus.EventQueued:
		return &exportv1.ExportQueued{}
	case bus.EventProgress:
		return &exportv1.ExportProgress{}
	case bus.EventPart:
		return &exportv1.PartUploaded{}
	case bus.EventFinalizing:
		return &exportv1.ExportFinalizing{}
	case bus.EventCompleted:
		return &exportv1.ExportCompleted{}
	case bus.EventFailed:
		return &exportv1.ExportFailed{}
	case bus.EventCanceled:
		return &exportv1.ExportCanceled{}
	case bus.EventNotified:
		return &exportv1.NotificationSent{}
	case bus.EventExpired:
		return &exportv1.ExportExpired{}
	}
	return nil
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
		if err != nil {
			return err
		}
		log.DebugContext(ctx, "status event applied", "job_id", jobID, "event", string(kind), "state", job.GetState().String())
		return nil
	}
}
