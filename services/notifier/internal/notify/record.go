package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// Send record states.
const (
	// stateSending claims the send: one delivery is talking to the mail
	// server. Other deliveries of the job's events wait for the outcome.
	stateSending = "sending"
	// stateSent and stateFailed are final.
	stateSent   = "sent"
	stateFailed = "failed"
)

// sendRecord is what the notifications bucket holds under
// "<jobId>.email". It is JSON so that `nats kv get` shows it readably.
type sendRecord struct {
	State      string    `json:"state"`
	Recipients []string  `json:"recipients,omitempty"`
	Error      string    `json:"error,omitempty"`
	At         time.Time `json:"at"`
	// StreamSeq is, while sending, the EXPORT_EVENTS sequence of the event
	// being handled: a redelivery of that same event may take the claim
	// over at once, since JetStream redelivers only after the earlier
	// attempt nak'ed or stopped heartbeating.
	StreamSeq uint64 `json:"stream_seq,omitempty"`
}

func (r *sendRecord) final() bool { return r.State == stateSent || r.State == stateFailed }

// event is the NotificationSent that reports a final record.
func (r *sendRecord) event(jobID string) *exportv1.NotificationSent {
	return &exportv1.NotificationSent{
		JobId:      jobID,
		OccurredAt: timestamppb.New(r.At),
		Recipients: r.Recipients,
		Error:      r.Error,
	}
}

// errConflict means another delivery changed the record first.
var errConflict = errors.New("send record changed concurrently")

// load returns the record under key and its revision, or nil and 0.
func (n *Notifier) load(ctx context.Context, key string) (*sendRecord, uint64, error) {
	entry, err := n.sent.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("read send record %s: %w", key, err)
	}
	var rec sendRecord
	if err := json.Unmarshal(entry.Value(), &rec); err != nil {
		// A record we cannot read is one we would overwrite blindly;
		// treat it as absent but keep its revision so the write is still
		// revision-checked.
		n.log.WarnContext(ctx, "unreadable send record; replacing it", "key", key, "error", err)
		return &sendRecord{State: stateSending}, entry.Revision(), nil
	}
	return &rec, entry.Revision(), nil
}

// store writes rec under key if the key is still at revision rev (0: the
// key must not exist) and returns the new revision, or errConflict. The
// write gets a few tries and outlives a cancelled ctx by a few seconds:
// after a send, losing the record means a second email.
func (n *Notifier) store(ctx context.Context, key string, rev uint64, rec *sendRecord) (uint64, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("marshal send record: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	delay := 100 * time.Millisecond
	for {
		var next uint64
		if rev == 0 {
			next, err = n.sent.Create(ctx, key, data)
		} else {
			next, err = n.sent.Update(ctx, key, data, rev)
		}
		switch {
		case err == nil:
			return next, nil
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			return 0, fmt.Errorf("write send record %s: %w", key, errConflict)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("write send record %s: %w", key, err)
		case <-time.After(delay):
		}
		delay *= 2
	}
}
