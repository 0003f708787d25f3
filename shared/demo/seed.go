package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/resources"
)

const (
	// publishBatch is how many messages are in flight before Seed waits for
	// their acks: well below the client's async limit (4000 by default), and
	// large enough that acks stream back while the next batch is sent.
	publishBatch = 1000
	// batchTimeout bounds the wait for one batch's acks when ctx has none.
	batchTimeout = 30 * time.Second
	// uploadWorkers uploads assets in parallel; each upload holds up to
	// two blob.PartSize part files on local disk, so keep it small.
	uploadWorkers = 4
)

// marshal is deterministic so the same data set always yields the same
// bytes (Struct fields are a map) and Seed can compare stored bytes.
var marshal = proto.MarshalOptions{Deterministic: true}

// Seed writes the data set to the bus and the asset bucket. It is
// idempotent: KV entries are put only when they differ, assets are uploaded
// only when missing (or of another size), and a subject whose message count
// and last message already match is left alone. A subject with anything
// else (a partial or older seed) is purged and published again, so running
// Seed twice never duplicates messages. Messages are published in order with
// Nats-Msg-Id set to the message or record id; a republish after a purge
// appends ".r<seq>" to it, because JetStream would drop ids still in its
// duplicate window.
func Seed(ctx context.Context, js jetstream.JetStream, store *blob.Store, assetBucket string, d *Dataset, log *slog.Logger) error {
	start := time.Now()
	if err := seedKV(ctx, js, d, log); err != nil {
		return err
	}
	if err := seedAssets(ctx, store, assetBucket, append(slices.Clip(d.Assets), d.Avatars...), log); err != nil {
		return err
	}
	if err := seedResources(ctx, js, d); err != nil {
		return err
	}
	for _, room := range d.Rooms {
		subject, err := bus.ChatSubject(room.GetId())
		if err != nil {
			return fmt.Errorf("room %q: %w", room.GetId(), err)
		}
		msgs := d.Messages[room.GetId()]
		items := make([]item, len(msgs))
		for i, m := range msgs {
			if items[i], err = encode(m.GetId(), m); err != nil {
				return err
			}
		}
		if err := seedSubject(ctx, js, bus.StreamChatMessages, subject, items, log); err != nil {
			return err
		}
	}
	for _, res := range slices.Sorted(maps.Keys(d.Records)) {
		for _, org := range Organizations {
			subject, err := bus.RecordSubject(res, org)
			if err != nil {
				return fmt.Errorf("resource %q of %q: %w", res, org, err)
			}
			var items []item
			for _, r := range d.Records[res] {
				if r.GetOrganizationId() != org {
					continue
				}
				it, err := encode(r.GetId(), r)
				if err != nil {
					return err
				}
				items = append(items, it)
			}
			if err := seedSubject(ctx, js, bus.StreamRecords, subject, items, log); err != nil {
				return err
			}
		}
	}
	log.InfoContext(ctx, "demo data seeded", "duration", time.Since(start).Round(time.Millisecond).String())
	return nil
}

// seedResources registers the built-in resources and the data set's own
// (d.Resources), so every resource with records is exportable.
func seedResources(ctx context.Context, js jetstream.JetStream, d *Dataset) error {
	reg, err := resources.Open(ctx, js)
	if err != nil {
		return err
	}
	if err := reg.EnsureBuiltins(ctx); err != nil {
		return err
	}
	for _, def := range d.Resources {
		if err := reg.Register(ctx, def); err != nil {
			return err
		}
	}
	return nil
}

// item is one message to publish: its dedup id and its encoded bytes.
type item struct {
	id   string
	data []byte
}

func encode(id string, m proto.Message) (item, error) {
	data, err := marshal.Marshal(m)
	if err != nil {
		return item{}, fmt.Errorf("marshal %T %s: %w", m, id, err)
	}
	return item{id: id, data: data}, nil
}

func seedKV(ctx context.Context, js jetstream.JetStream, d *Dataset, log *slog.Logger) error {
	type entry struct {
		key string
		msg proto.Message
	}
	buckets := []struct {
		name    string
		entries []entry
	}{
		{name: bus.BucketUsers},
		{name: bus.BucketRooms},
		{name: bus.BucketMemberships},
		{name: bus.BucketOrgMembers},
	}
	for _, u := range d.Users {
		buckets[0].entries = append(buckets[0].entries, entry{u.User.GetId(), u.User})
	}
	for _, r := range d.Rooms {
		buckets[1].entries = append(buckets[1].entries, entry{r.GetId(), r})
	}
	for _, m := range d.Memberships {
		buckets[2].entries = append(buckets[2].entries, entry{m.GetUserId() + "." + m.GetRoomId(), m})
	}
	for _, m := range d.OrgMemberships {
		buckets[3].entries = append(buckets[3].entries, entry{m.GetUserId() + "." + m.GetOrganizationId(), m})
	}
	for _, b := range buckets {
		kv, err := js.KeyValue(ctx, b.name)
		if err != nil {
			return fmt.Errorf("bucket %s: %w", b.name, err)
		}
		written := 0
		for _, e := range b.entries {
			data, err := marshal.Marshal(e.msg)
			if err != nil {
				return fmt.Errorf("marshal %s/%s: %w", b.name, e.key, err)
			}
			// Skipping equal values keeps revisions stable across runs, so
			// watchers do not see a burst of no-op updates.
			cur, err := kv.Get(ctx, e.key)
			switch {
			case err == nil && bytes.Equal(cur.Value(), data):
				continue
			case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
				return fmt.Errorf("get %s/%s: %w", b.name, e.key, err)
			}
			if _, err := kv.Put(ctx, e.key, data); err != nil {
				return fmt.Errorf("put %s/%s: %w", b.name, e.key, err)
			}
			written++
		}
		log.InfoContext(ctx, "seeded bucket", "bucket", b.name, "entries", len(b.entries), "written", written)
	}
	// Users are found by their API key's hash through the credentials
	// index, written with them.
	creds, err := js.KeyValue(ctx, bus.BucketUserIndex)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bus.BucketUserIndex, err)
	}
	written := 0
	for _, u := range d.Users {
		did, err := access.IndexUser(ctx, creds, u.User)
		if err != nil {
			return err
		}
		if did {
			written++
		}
	}
	log.InfoContext(ctx, "seeded bucket", "bucket", bus.BucketUserIndex, "written", written)
	return nil
}

func seedAssets(ctx context.Context, store *blob.Store, bucket string, assets []Asset, log *slog.Logger) error {
	if err := store.EnsureBucket(ctx, bucket); err != nil {
		return err
	}
	var uploaded atomic.Int64
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(uploadWorkers)
	for _, a := range assets {
		eg.Go(func() error {
			did, err := ensureAsset(ectx, store, bucket, a)
			if did {
				uploaded.Add(1)
			}
			return err
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	log.InfoContext(ctx, "seeded assets", "bucket", bucket, "assets", len(assets), "uploaded", uploaded.Load())
	return nil
}

// ensureAsset uploads a unless an object of its size is already there.
func ensureAsset(ctx context.Context, store *blob.Store, bucket string, a Asset) (bool, error) {
	info, err := store.Stat(ctx, bucket, a.ObjectKey)
	switch {
	case err == nil && info.Size == int64(len(a.Data)):
		return false, nil
	case err != nil && !errors.Is(err, blob.ErrNotFound):
		return false, err
	}
	if _, err := store.Upload(ctx, bucket, a.ObjectKey, bytes.NewReader(a.Data), a.ContentType); err != nil {
		return false, err
	}
	return true, nil
}

// seedSubject makes subject hold exactly items, in order.
func seedSubject(ctx context.Context, js jetstream.JetStream, streamName, subject string, items []item, log *slog.Logger) error {
	stream, err := js.Stream(ctx, streamName)
	if err != nil {
		return fmt.Errorf("stream %s: %w", streamName, err)
	}
	count, err := subjectCount(ctx, stream, subject)
	if err != nil {
		return err
	}
	if count == uint64(len(items)) && count > 0 {
		last, err := stream.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return fmt.Errorf("last message of %s: %w", subject, err)
		}
		if bytes.Equal(last.Data, items[len(items)-1].data) {
			log.InfoContext(ctx, "seeded subject", "subject", subject, "messages", count, "action", "unchanged")
			return nil
		}
	}

	start := time.Now()
	action := "published"
	suffix := ""
	if count > 0 {
		action = "republished"
		if suffix, err = purge(ctx, stream, subject); err != nil {
			return err
		}
	}
	if err := publishAll(ctx, js, subject, items, suffix); err != nil {
		return err
	}
	got, err := subjectCount(ctx, stream, subject)
	if err != nil {
		return err
	}
	if got != uint64(len(items)) && suffix == "" {
		// The subject was empty but some ids were still in the stream's
		// duplicate window (someone purged it minutes ago), so JetStream
		// dropped them. Start over with fresh ids.
		action = "republished"
		if suffix, err = purge(ctx, stream, subject); err != nil {
			return err
		}
		if err := publishAll(ctx, js, subject, items, suffix); err != nil {
			return err
		}
		if got, err = subjectCount(ctx, stream, subject); err != nil {
			return err
		}
	}
	if got != uint64(len(items)) {
		return fmt.Errorf("seed %s: stream holds %d messages, want %d", subject, got, len(items))
	}
	log.InfoContext(ctx, "seeded subject", "subject", subject, "messages", len(items), "action", action,
		"previous", count, "duration", time.Since(start).Round(time.Millisecond).String())
	return nil
}

func subjectCount(ctx context.Context, stream jetstream.Stream, subject string) (uint64, error) {
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("stream info for %s: %w", subject, err)
	}
	return info.State.Subjects[subject], nil
}

// purge empties subject and returns a dedup-id suffix for the messages
// published next. A purge does not clear JetStream's duplicate window, so
// publishing the same Nats-Msg-Id again within it would be dropped as a
// duplicate and leave the subject short. The stream's last sequence at the
// purge is unique for this stream, so "<id>.r<seq>" never repeats a
// previous attempt's id while the plain id still leads.
func purge(ctx context.Context, stream jetstream.Stream, subject string) (string, error) {
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return "", fmt.Errorf("purge %s: %w", subject, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("stream info: %w", err)
	}
	return ".r" + strconv.FormatUint(info.State.LastSeq, 10), nil
}

// publishAll publishes items to subject in order, asynchronously in
// batches, and fails if any publish was not stored.
func publishAll(ctx context.Context, js jetstream.JetStream, subject string, items []item, idSuffix string) error {
	for start := 0; start < len(items); start += publishBatch {
		batch := items[start:min(start+publishBatch, len(items))]
		futures := make([]jetstream.PubAckFuture, 0, len(batch))
		for _, it := range batch {
			f, err := js.PublishAsync(subject, it.data, jetstream.WithMsgID(it.id+idSuffix))
			if err != nil {
				return fmt.Errorf("publish %s (%s): %w", subject, it.id, err)
			}
			futures = append(futures, f)
		}
		wait, cancel := context.WithTimeout(ctx, batchTimeout)
		select {
		case <-js.PublishAsyncComplete():
		case <-wait.Done():
		}
		for i, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				cancel()
				return fmt.Errorf("publish %s (%s): %w", subject, batch[i].id, err)
			case <-wait.Done():
				cancel()
				return fmt.Errorf("publish %s: waiting for acks: %w", subject, wait.Err())
			}
		}
		cancel()
	}
	return nil
}
