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
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/recordquery"
	"dataport.dev/shared/roomtype"
	"dataport.dev/shared/taskrun"
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

// maxFilterSubjects bounds the subjects an ordered consumer filters on; a
// user reading more rooms than this replays the whole chat stream and
// drops other rooms' messages before decoding them into anything.
const maxFilterSubjects = 256

// source returns the records of the resource def defines that g may read;
// from, when set, continues a stream source where a checkpoint left it
// (ignored by key-value sources, which callers do not resume).
//
// What g reads: records of its organization only (transactions, events
// and every resource the host registers: the subject holds the
// organization, so no other tenant's record is even delivered); messages
// of the rooms it may read; rooms it may read (every room with
// view-room-administration); its own user profile (every user's with
// view-full-other-user-info).
func (e *Exporter) source(ctx context.Context, def recordquery.Resource, g *access.Grant, skipped *uint64, from *resumeAt) (*source, error) {
	resource := def.Name
	switch def.SourceOf() {
	case recordquery.SourceRecords:
		org := g.Organization
		if org == "" {
			return nil, taskrun.Reject("%s belong to an organization, and the export names none you are a member of", resource)
		}
		subject, err := bus.RecordSubject(resource, org)
		if err != nil {
			return nil, taskrun.Reject("invalid organization")
		}
		// One record, decoded into again for every message (decode.go).
		var r record
		get := r.get
		return e.streamSource(ctx, e.records, bus.StreamRecords, []string{subject}, from, func(_ string, data []byte, f visit) error {
			if err := r.decode(data); err != nil {
				*skipped++
				return nil
			}
			if r.org != org {
				// Published on the tenant's subject with another tenant's
				// id: the record is not provably this tenant's.
				*skipped++
				return nil
			}
			return f(r.id, get)
		})
	case recordquery.SourceChat:
		rooms, all, err := g.ReadableRooms(ctx)
		if err != nil {
			return nil, err
		}
		readable := map[string]bool{}
		var subjects []string
		for _, r := range rooms {
			subject, err := bus.ChatSubject(r.GetId())
			if err != nil {
				continue
			}
			readable[subject] = true
			subjects = append(subjects, subject)
		}
		if all {
			subjects = nil // every room's subject, in stream (publication) order
		} else if len(subjects) == 0 {
			return &source{each: func(context.Context, visit) error { return nil }}, nil
		} else if len(subjects) > maxFilterSubjects {
			subjects = []string{bus.ChatSubjectAll}
		}
		return e.streamSource(ctx, e.chat, bus.StreamChatMessages, subjects, from, func(subject string, data []byte, f visit) error {
			if !all && !readable[subject] {
				return nil
			}
			var m sourcev1.ChatMessage
			if err := proto.Unmarshal(data, &m); err != nil {
				*skipped++
				return nil
			}
			return f(m.GetId(), messageGetter(&m))
		})
	case recordquery.SourceRooms:
		var keep func(*sourcev1.Room) (bool, error)
		if !g.Has(access.PermViewRoomAdministration) {
			keep = func(r *sourcev1.Room) (bool, error) { return g.CanReadRoom(ctx, r) }
		}
		return e.kvSource(ctx, e.rooms, nil, func(data []byte, f visit) error {
			var r sourcev1.Room
			if err := proto.Unmarshal(data, &r); err != nil {
				*skipped++
				return nil
			}
			if keep != nil {
				if ok, err := keep(&r); err != nil || !ok {
					return err
				}
			}
			return f(r.GetId(), roomGetter(&r))
		})
	case recordquery.SourceUsers:
		var only []string
		if !g.Has(access.PermViewFullOtherUserInfo) {
			only = []string{g.User.GetId()}
		}
		return e.kvSource(ctx, e.users, only, func(data []byte, f visit) error {
			var u sourcev1.User
			if err := proto.Unmarshal(data, &u); err != nil {
				*skipped++
				return nil
			}
			return f(u.GetId(), userGetter(&u))
		})
	}
	return nil, taskrun.Reject("no source %q for resource %q", def.Source, resource)
}

// streamSource replays a stream (the given subjects, or all when there
// are none) up to the last sequence it held when the export started, so an
// export ends even while records keep arriving and two attempts see the
// same records. With from, the replay starts at from.seq and keeps the
// first attempt's end and total. decode gets each message's subject.
func (e *Exporter) streamSource(ctx context.Context, stream jetstream.Stream, streamName string, subjects []string,
	from *resumeAt, decode func(string, []byte, visit) error,
) (*source, error) {
	var total, lastSeq uint64
	switch {
	case from != nil:
		total, lastSeq = from.total, from.lastSeq
	case len(subjects) == 0:
		info, err := stream.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("stream info %s: %w", streamName, err)
		}
		total, lastSeq = info.State.Msgs, info.State.LastSeq
	default:
		for _, subject := range subjects {
			n, last, err := subjectState(ctx, stream, subject)
			if err != nil {
				return nil, err
			}
			total, lastSeq = total+n, max(lastSeq, last)
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
		if len(subjects) > 0 {
			cfg.FilterSubjects = subjects
		}
		cons, err := stream.OrderedConsumer(ctx, cfg)
		if err != nil {
			return fmt.Errorf("ordered consumer on %s: %w", streamName, err)
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(replayBatch))
		if err != nil {
			return fmt.Errorf("replay %s: %w", streamName, err)
		}
		if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
			// Nothing at or after the start matches (a range whose
			// messages are gone): waiting would never end.
			it.Stop()
			e.deleteConsumer(ctx, streamName, cons)
			return nil
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
			if err := decode(msg.Subject(), msg.Data(), f); err != nil {
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

// subjectState is how many messages subject (a wildcard counts every
// subject it matches) holds and the sequence of the last.
func subjectState(ctx context.Context, stream jetstream.Stream, subject string) (total, lastSeq uint64, err error) {
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, 0, fmt.Errorf("stream info %s: %w", subject, err)
	}
	for _, n := range info.State.Subjects {
		total += n
	}
	if total == 0 {
		return 0, 0, nil
	}
	last, err := stream.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, 0, nil
	case err != nil:
		return 0, 0, fmt.Errorf("last message of %s: %w", subject, err)
	}
	return total, last.Sequence, nil
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

// kvSource reads a bucket in key order, or only the keys in only when it
// is not nil. The key list is held in memory: rooms and users are
// directory data, orders of magnitude fewer than messages or records.
func (e *Exporter) kvSource(ctx context.Context, kv jetstream.KeyValue, only []string, decode func([]byte, visit) error) (*source, error) {
	var (
		keys   []string
		lister jetstream.KeyLister
		err    error
	)
	if only == nil {
		lister, err = kv.ListKeys(ctx)
	}
	switch {
	case only != nil:
		keys = slices.Clone(only)
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
			l := roomtype.Letter(r.GetType())
			return l, l != ""
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
