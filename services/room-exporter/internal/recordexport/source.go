package recordexport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/recordquery"
)

// getter reads one field of a record; see recordquery.Filter.Match.
type getter func(field string) (any, bool)

// visit is called for every stored record in source order; undecodable
// records are skipped by the source (and counted).
type visit func(id string, get getter) error

// source is where a resource's records come from.
type source struct {
	// total is the number of stored records when the export started, for
	// progress percentages.
	total uint64
	each  func(ctx context.Context, f visit) error
	// stream is set for stream sources, whose position can be saved and
	// resumed: lastSeq is the last sequence the export covers and seq the
	// sequence of the record being visited.
	stream       bool
	seq, lastSeq uint64
}

// resumeAt continues a stream source: the replay starts at seq and ends
// at lastSeq, as the first attempt's did.
type resumeAt struct {
	seq, lastSeq, total uint64
}

// replayBatch bounds the ordered consumer's buffer (records are small).
const replayBatch = 256

// source returns the resource's records; from, when set, continues a
// stream source where a checkpoint left it (ignored by key-value sources,
// which callers do not resume).
func (e *Exporter) source(ctx context.Context, resource string, skipped *uint64, from *resumeAt) (*source, error) {
	switch resource {
	case recordquery.ResourceTransactions, recordquery.ResourceEvents:
		subject, err := bus.RecordSubject(resource)
		if err != nil {
			return nil, err
		}
		return e.streamSource(ctx, e.records, bus.StreamRecords, subject, from, func(data []byte, f visit) error {
			var r sourcev1.Record
			if err := proto.Unmarshal(data, &r); err != nil {
				*skipped++
				return nil
			}
			return f(r.GetId(), recordGetter(&r))
		})
	case recordquery.ResourceMessages:
		// Every room's subject, in stream (publication) order.
		return e.streamSource(ctx, e.chat, bus.StreamChatMessages, "", from, func(data []byte, f visit) error {
			var m sourcev1.ChatMessage
			if err := proto.Unmarshal(data, &m); err != nil {
				*skipped++
				return nil
			}
			return f(m.GetId(), messageGetter(&m))
		})
	case recordquery.ResourceRooms:
		return e.kvSource(ctx, e.rooms, func(data []byte, f visit) error {
			var r sourcev1.Room
			if err := proto.Unmarshal(data, &r); err != nil {
				*skipped++
				return nil
			}
			return f(r.GetId(), roomGetter(&r))
		})
	case recordquery.ResourceUsers:
		return e.kvSource(ctx, e.users, func(data []byte, f visit) error {
			var u sourcev1.User
			if err := proto.Unmarshal(data, &u); err != nil {
				*skipped++
				return nil
			}
			return f(u.GetId(), userGetter(&u))
		})
	}
	return nil, fmt.Errorf("no source for resource %q", resource)
}

// streamSource replays a stream (one subject, or all when subject is "")
// up to the last sequence it held when the export started, so an export
// ends even while records keep arriving and two attempts see the same
// records. With from, the replay starts at from.seq and keeps the first
// attempt's end and total.
func (e *Exporter) streamSource(ctx context.Context, stream jetstream.Stream, streamName, subject string,
	from *resumeAt, decode func([]byte, visit) error,
) (*source, error) {
	var total, lastSeq uint64
	switch {
	case from != nil:
		total, lastSeq = from.total, from.lastSeq
	case subject == "":
		info, err := stream.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("stream info %s: %w", streamName, err)
		}
		total, lastSeq = info.State.Msgs, info.State.LastSeq
	default:
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return nil, fmt.Errorf("stream info %s: %w", subject, err)
		}
		total = info.State.Subjects[subject]
		if total > 0 {
			last, err := stream.GetLastMsgForSubject(ctx, subject)
			switch {
			case errors.Is(err, jetstream.ErrMsgNotFound):
				total = 0
			case err != nil:
				return nil, fmt.Errorf("last message of %s: %w", subject, err)
			default:
				lastSeq = last.Sequence
			}
		}
	}
	src := &source{total: total, stream: true, lastSeq: lastSeq}
	src.each = func(ctx context.Context, f visit) error {
		if total == 0 || lastSeq == 0 {
			return nil
		}
		cfg := jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverAllPolicy,
			// A crashed exporter's consumer goes away by itself soon.
			InactiveThreshold: time.Minute,
		}
		if from != nil {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from.seq
		}
		if subject != "" {
			cfg.FilterSubjects = []string{subject}
		}
		cons, err := stream.OrderedConsumer(ctx, cfg)
		if err != nil {
			return fmt.Errorf("ordered consumer on %s: %w", streamName, err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(replayBatch))
		if err != nil {
			return fmt.Errorf("replay %s: %w", streamName, err)
		}
		stopOnCancel := context.AfterFunc(ctx, it.Stop)
		defer func() {
			stopOnCancel()
			it.Stop()
			e.deleteConsumer(ctx, streamName, cons)
		}()
		for {
			msg, err := it.Next()
			if err != nil {
				if ctx.Err() != nil {
					err = ctx.Err()
				}
				return fmt.Errorf("replay %s: %w", streamName, err)
			}
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("replay %s: metadata: %w", streamName, err)
			}
			seq := md.Sequence.Stream
			if seq > lastSeq {
				return nil
			}
			if e.opts.onRead != nil {
				e.opts.onRead(seq)
			}
			src.seq = seq
			if err := decode(msg.Data(), f); err != nil {
				return err
			}
			// NumPending guards against a last message deleted meanwhile
			// with nothing newer behind it: the replay would wait forever.
			if seq == lastSeq || md.NumPending == 0 {
				return nil
			}
		}
	}
	return src, nil
}

func (e *Exporter) deleteConsumer(ctx context.Context, stream string, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := e.js.DeleteConsumer(ctx, stream, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		e.log.DebugContext(ctx, "delete replay consumer", "consumer", info.Name, "error", err)
	}
}

// kvSource reads a bucket in key order. The key list is held in memory:
// rooms and users are directory data, orders of magnitude fewer than
// messages or records.
func (e *Exporter) kvSource(ctx context.Context, kv jetstream.KeyValue, decode func([]byte, visit) error) (*source, error) {
	var keys []string
	lister, err := kv.ListKeys(ctx)
	switch {
	case errors.Is(err, jetstream.ErrNoKeysFound):
	case err != nil:
		return nil, fmt.Errorf("list keys of %s: %w", kv.Bucket(), err)
	default:
		// The channel closes when the listing is complete (or ctx ends).
		for k := range lister.Keys() {
			keys = append(keys, k)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("list keys of %s: %w", kv.Bucket(), ctx.Err())
		}
	}
	slices.Sort(keys)
	return &source{total: uint64(len(keys)), each: func(ctx context.Context, f visit) error {
		for _, k := range keys {
			entry, err := kv.Get(ctx, k)
			if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
				continue // deleted since the listing
			}
			if err != nil {
				return fmt.Errorf("get %s/%s: %w", kv.Bucket(), k, err)
			}
			if err := decode(entry.Value(), f); err != nil {
				return err
			}
		}
		return nil
	}}, nil
}

func tsValue(t interface{ AsTime() time.Time }, present bool) (any, bool) {
	if !present {
		return nil, false
	}
	return t.AsTime(), true
}

// recordGetter exposes a Record: id, createdTime and updatedTime from the
// envelope (falling back to fields of the same name), anything else from
// fields.
func recordGetter(r *sourcev1.Record) getter {
	return func(f string) (any, bool) {
		switch f {
		case "id":
			if r.GetId() != "" {
				return r.GetId(), true
			}
		case "createdTime":
			if r.GetCreatedTime() != nil {
				return r.GetCreatedTime().AsTime(), true
			}
		case "updatedTime":
			if r.GetUpdatedTime() != nil {
				return r.GetUpdatedTime().AsTime(), true
			}
		}
		v, ok := r.GetFields().GetFields()[f]
		if !ok {
			return nil, false
		}
		return structValue(v), true
	}
}

// structValue converts a protobuf Struct value to the types recordquery and
// the renderers know; nested objects become their JSON text.
func structValue(v *structpb.Value) any {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue
	case *structpb.Value_NumberValue:
		return k.NumberValue
	case *structpb.Value_BoolValue:
		return k.BoolValue
	case *structpb.Value_ListValue:
		out := make([]any, len(k.ListValue.GetValues()))
		for i, e := range k.ListValue.GetValues() {
			out[i] = structValue(e)
		}
		return out
	case *structpb.Value_StructValue:
		b, err := json.Marshal(k.StructValue.AsMap())
		if err != nil {
			return nil
		}
		return string(b)
	}
	return nil
}

var roomTypes = map[sourcev1.RoomType]string{
	sourcev1.RoomType_ROOM_TYPE_CHANNEL: "c",
	sourcev1.RoomType_ROOM_TYPE_PRIVATE: "p",
	sourcev1.RoomType_ROOM_TYPE_DIRECT:  "d",
}

// messageGetter exposes a ChatMessage under Rocket.Chat's field names.
func messageGetter(m *sourcev1.ChatMessage) getter {
	return func(f string) (any, bool) {
		switch recordquery.Canonical(recordquery.ResourceMessages, f) {
		case "_id":
			return m.GetId(), true
		case "rid":
			return m.GetRoomId(), true
		case "ts":
			return tsValue(m.GetTs(), m.GetTs() != nil)
		case "u._id":
			return m.GetUser().GetId(), m.GetUser() != nil
		case "u.username":
			return m.GetUser().GetUsername(), m.GetUser() != nil
		case "u.name":
			return m.GetUser().GetName(), m.GetUser() != nil
		case "msg":
			return m.GetText(), true
		case "t":
			return m.GetSystemType(), m.GetSystemType() != ""
		case "tmid":
			return m.GetThreadId(), m.GetThreadId() != ""
		case "tcount":
			return float64(m.GetThreadCount()), m.GetThreadCount() > 0
		case "editedAt":
			return tsValue(m.GetEditedAt(), m.GetEditedAt() != nil)
		case "editedBy.username":
			return m.GetEditedBy().GetUsername(), m.GetEditedBy() != nil
		case "attachments":
			if len(m.GetAttachments()) == 0 {
				return nil, false
			}
			names := make([]string, len(m.GetAttachments()))
			for i, a := range m.GetAttachments() {
				names[i] = a.GetName()
			}
			return names, true
		}
		return nil, false
	}
}

func roomGetter(r *sourcev1.Room) getter {
	return func(f string) (any, bool) {
		switch f {
		case "id":
			return r.GetId(), true
		case "name":
			return r.GetName(), true
		case "type":
			return roomTypes[r.GetType()], r.GetType() != sourcev1.RoomType_ROOM_TYPE_UNSPECIFIED
		case "topic":
			return r.GetTopic(), r.GetTopic() != ""
		case "usernames":
			return r.GetUsernames(), len(r.GetUsernames()) > 0
		case "createdTime":
			return tsValue(r.GetCreatedAt(), r.GetCreatedAt() != nil)
		}
		return nil, false
	}
}

// userGetter never exposes the credential hashes.
func userGetter(u *sourcev1.User) getter {
	return func(f string) (any, bool) {
		switch f {
		case "id":
			return u.GetId(), true
		case "username":
			return u.GetUsername(), true
		case "name":
			return u.GetName(), true
		case "email":
			return u.GetEmail(), u.GetEmail() != ""
		case "roles":
			return u.GetRoles(), len(u.GetRoles()) > 0
		case "createdTime":
			return tsValue(u.GetCreatedAt(), u.GetCreatedAt() != nil)
		}
		return nil, false
	}
}
