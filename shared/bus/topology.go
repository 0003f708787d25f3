// Package bus declares every JetStream stream, key-value bucket, consumer and
// subject Dataport uses, and offers the two ways services touch the bus:
// publishing protobuf messages with dedup ids and trace context, and a
// consume loop that acks, naks and terminates according to the handler's
// verdict.
//
// Keeping the whole topology in this one file means a subject can only be
// spelled one way and a consumer's limits are reviewed in one place.
package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Streams.
const (
	// StreamExportTasks is a work queue of ExportTask messages; a message
	// leaves the stream when an exporter acks it.
	StreamExportTasks = "EXPORT_TASKS"
	// StreamExportEvents keeps every status event of every job for a while,
	// so projections can be rebuilt and late consumers catch up.
	StreamExportEvents = "EXPORT_EVENTS"
	// StreamChatMessages holds room histories, one subject per room.
	StreamChatMessages = "CHAT_MESSAGES"
	// StreamRecords holds business records, one subject per resource.
	StreamRecords = "RECORDS"
)

// Key-value buckets.
const (
	BucketJobs          = "export_jobs"
	BucketJobIndex      = "export_jobs_index"
	BucketRooms         = "rooms"
	BucketUsers         = "users"
	BucketUserIndex     = "users_index"
	BucketMemberships   = "memberships"
	BucketNotifications = "notifications"
	BucketSchedules     = "export_schedules"
	BucketIdempotency   = "idempotency_keys"
	BucketCounters      = "counters"
	BucketCheckpoints   = "export_checkpoints"
	BucketOrgMembers    = "org_members"
	BucketQuotas        = "quotas"
	BucketResources     = "record_resources"
)

// Durable consumers. Every replica of a service binds the same durable, so
// JetStream spreads the work over them.
const (
	// ConsumerRoomExporter takes the room kinds of export tasks (room,
	// user, mail); ConsumerRecordExporter takes record tasks. Their
	// filters do not overlap, as a work-queue stream requires, so each
	// task has exactly one consumer and each exporter scales on its own
	// queue.
	ConsumerRoomExporter      = "room-exporter"
	ConsumerRecordExporter    = "record-exporter"
	ConsumerArchiver          = "archiver"
	ConsumerNotifier          = "notifier"
	ConsumerGatewayProjection = "gateway-projection"
)

// Consumers lists every declared durable consumer.
func Consumers() []string {
	return []string{ConsumerRoomExporter, ConsumerRecordExporter, ConsumerArchiver, ConsumerNotifier, ConsumerGatewayProjection}
}

// Event names the kind of a status event; it is the third token of
// exports.status.<event>.<jobId>.
type Event string

// Status events, in the order a job usually meets them.
const (
	EventRequested  Event = "requested"
	EventQueued     Event = "queued"
	EventProgress   Event = "progress"
	EventPart       Event = "part"
	EventFinalizing Event = "finalizing"
	EventCompleted  Event = "completed"
	EventFailed     Event = "failed"
	EventCanceled   Event = "canceled"
	EventNotified   Event = "notified"
	EventExpired    Event = "expired"
)

// TaskKind is the last token of exports.tasks.<kind>.
type TaskKind string

// Task kinds.
const (
	TaskRoom     TaskKind = "room"
	TaskUserData TaskKind = "user"
	TaskRecords  TaskKind = "records"
	TaskMail     TaskKind = "mail"
)

const (
	subjectTasksAll  = "exports.tasks.>"
	subjectStatusAll = "exports.status.>"
	subjectChatAll   = "chat.messages.*"
	subjectRecordAll = "records.*.*"
)

// ErrBadToken is returned by subject builders for identifiers that would
// change a subject's shape.
var ErrBadToken = errors.New("bus: invalid subject token")

// Token checks that s can stand as one subject token: non-empty, no '.',
// '*', '>' and no whitespace or control characters.
func Token(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrBadToken)
	}
	for _, r := range s {
		if r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f {
			return fmt.Errorf("%w: %q", ErrBadToken, s)
		}
	}
	return nil
}

// TaskSubject is where tasks of one kind are published.
func TaskSubject(kind TaskKind) (string, error) {
	if err := Token(string(kind)); err != nil {
		return "", err
	}
	return "exports.tasks." + string(kind), nil
}

// StatusSubject is where a job's status event of the given kind goes.
func StatusSubject(ev Event, jobID string) (string, error) {
	if err := Token(string(ev)); err != nil {
		return "", err
	}
	if err := Token(jobID); err != nil {
		return "", err
	}
	return "exports.status." + string(ev) + "." + jobID, nil
}

// StatusFilter matches one kind of status event for every job.
func StatusFilter(ev Event) string { return "exports.status." + string(ev) + ".*" }

// ParseStatusSubject splits exports.status.<event>.<jobId>.
func ParseStatusSubject(subject string) (Event, string, error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != "exports" || parts[1] != "status" {
		return "", "", fmt.Errorf("bus: not a status subject: %q", subject)
	}
	return Event(parts[2]), parts[3], nil
}

// MaxDeliveriesAdvisory is the core-NATS subject on which JetStream
// announces that a durable consumer gave up on a message (MaxDeliver hit).
// In a work-queue stream the message stays behind, so whoever watches this
// must fail the job and delete the message.
func MaxDeliveriesAdvisory(stream, consumer string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + stream + "." + consumer
}

// ChatSubjectAll matches every room's history.
const ChatSubjectAll = subjectChatAll

// ChatSubject is the subject of one room's history.
func ChatSubject(roomID string) (string, error) {
	if err := Token(roomID); err != nil {
		return "", err
	}
	return "chat.messages." + roomID, nil
}

// RecordSubject is the subject of one organization's records of one
// resource. Records are partitioned by tenant in the subject, so an export
// replays only its own organization's records and never reads another's.
func RecordSubject(resource, organizationID string) (string, error) {
	if err := Token(resource); err != nil {
		return "", err
	}
	if err := Token(organizationID); err != nil {
		return "", err
	}
	return "records." + resource + "." + organizationID, nil
}

// Topology holds the settings that differ between environments: R1 in
// development, R3 in production, shorter limits in tests.
type Topology struct {
	// Replicas of every stream and bucket (1 or 3 in practice).
	Replicas int
	// EventsMaxAge bounds how long status events are kept.
	EventsMaxAge time.Duration
	// DuplicateWindow is how long Nats-Msg-Id dedup ids are remembered.
	DuplicateWindow time.Duration
	// TaskAckWait is how long an exporter may hold a task without an ack or
	// an in-progress heartbeat before JetStream hands it to someone else.
	TaskAckWait time.Duration
	// TaskMaxDeliver bounds how often a task is tried.
	TaskMaxDeliver int
	// EventAckWait and EventMaxDeliver do the same for event consumers.
	EventAckWait    time.Duration
	EventMaxDeliver int
	// MaxAckPending bounds in-flight messages per consumer over all replicas.
	MaxAckPending int
	// IdempotencyTTL is how long an Idempotency-Key is remembered.
	IdempotencyTTL time.Duration
}

// QuotaTTL is how long an untouched key of BucketQuotas lives.
const QuotaTTL = 24 * time.Hour

func withTTL(c jetstream.KeyValueConfig, ttl time.Duration) jetstream.KeyValueConfig {
	c.TTL = ttl
	return c
}

func withHistory(c jetstream.KeyValueConfig, n uint8) jetstream.KeyValueConfig {
	c.History = n
	return c
}

func withMarkerTTL(c jetstream.KeyValueConfig, ttl time.Duration) jetstream.KeyValueConfig {
	c.LimitMarkerTTL = ttl
	return c
}

// DefaultTopology is the single-node development topology.
func DefaultTopology() Topology {
	return Topology{
		Replicas:        1,
		EventsMaxAge:    7 * 24 * time.Hour,
		DuplicateWindow: 10 * time.Minute,
		TaskAckWait:     30 * time.Second,
		TaskMaxDeliver:  5,
		EventAckWait:    30 * time.Second,
		EventMaxDeliver: 10,
		MaxAckPending:   256,
		IdempotencyTTL:  24 * time.Hour,
	}
}

// StreamConfigs lists every stream.
func (t Topology) StreamConfigs() []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        StreamExportTasks,
			Description: "Export tasks waiting for an exporter (work queue).",
			Subjects:    []string{subjectTasksAll},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			Duplicates:  t.DuplicateWindow,
		},
		{
			Name:        StreamExportEvents,
			Description: "Status events of export jobs.",
			Subjects:    []string{subjectStatusAll},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			MaxAge:      t.EventsMaxAge,
			Duplicates:  t.DuplicateWindow,
		},
		{
			Name:        StreamChatMessages,
			Description: "Chat history, one subject per room, in sending order.",
			Subjects:    []string{subjectChatAll},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			Duplicates:  t.DuplicateWindow,
		},
		{
			Name:        StreamRecords,
			Description: "Business records, one subject per resource and organization.",
			Subjects:    []string{subjectRecordAll},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    t.Replicas,
			Duplicates:  t.DuplicateWindow,
		},
	}
}

// KeyValueConfigs lists every bucket.
func (t Topology) KeyValueConfigs() []jetstream.KeyValueConfig {
	kv := func(name, desc string) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: name, Description: desc, Storage: jetstream.FileStorage, Replicas: t.Replicas, History: 1}
	}
	return []jetstream.KeyValueConfig{
		kv(BucketJobs, "Export job projection, written only by the gateway."),
		// Entries of ended jobs are purged with a marker that expires, so
		// listings of running jobs never wade through tombstones.
		withMarkerTTL(kv(BucketJobIndex, "Index of the job projection, kept with it by the gateway: own.<owner>.<day>.<minute>... -> revision and summary, day and minute markers, cnt.<owner> counters, blk.<owner>.<shard> -> summaries of the owner's jobs, org.<org>.<dialect>... -> summary, par.<parent>..., act.<owner>..., run.<kind>..., meta.built.v3."), time.Minute),
		kv(BucketRooms, "Rooms by id."),
		kv(BucketUsers, "Users by id, credentials hashed."),
		kv(BucketUserIndex, "Index of the users bucket, written with the users: apikey.<sha256 hex> and username.<hash> -> user id."),
		kv(BucketMemberships, "Room memberships under <userId>.<roomId>."),
		kv(BucketOrgMembers, "Organization memberships under <userId>.<organizationId>."),
		kv(BucketNotifications, "Notifications sent, under <jobId>.<channel>, kept by the notifier."),
		kv(BucketSchedules, "Recurring export schedules and their claimed occurrences, kept by the gateway."),
		withTTL(kv(BucketIdempotency, "Idempotency-Key of create requests -> job id and request hash."), t.IdempotencyTTL),
		kv(BucketCounters, "Revision-checked counters, e.g. sequential raw-export ids."),
		// A checkpoint outlives only the tasks that might resume it; one left
		// by a task that never finished expires instead of lingering.
		withTTL(kv(BucketCheckpoints, "Exporter checkpoints under <jobId>.<part>: how far a long export got, so a redelivered task resumes."), 7*24*time.Hour),
		// History 5: a registration replaced by mistake can be read back.
		withHistory(kv(BucketResources, "Exportable record resources by name, published by the host (shared/resources): fields, default fields, date field, owner organization."), 5),
		// Rate windows are dead a minute after they close and an idle
		// caller's slot set is empty or stale, so a day bounds the bucket
		// without ever cutting a live window short.
		withTTL(kv(BucketQuotas, "Per-principal create quotas, kept by the gateway: rate.<principal>.<minute> counters and active.<principal> slot sets."), QuotaTTL),
	}
}

// ConsumerSpec is a durable consumer and the stream it reads.
type ConsumerSpec struct {
	Stream string
	Config jetstream.ConsumerConfig
}

// Consumer returns the declaration of a durable consumer by name.
func (t Topology) Consumer(name string) (ConsumerSpec, error) {
	event := func(filters ...string) jetstream.ConsumerConfig {
		return jetstream.ConsumerConfig{
			Durable:        name,
			FilterSubjects: filters,
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        t.EventAckWait,
			MaxDeliver:     t.EventMaxDeliver,
			MaxAckPending:  t.MaxAckPending,
			DeliverPolicy:  jetstream.DeliverAllPolicy,
		}
	}
	task := func(kinds ...TaskKind) jetstream.ConsumerConfig {
		filters := make([]string, len(kinds))
		for i, k := range kinds {
			filters[i] = "exports.tasks." + string(k)
		}
		return jetstream.ConsumerConfig{
			Durable:        name,
			FilterSubjects: filters,
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        t.TaskAckWait,
			MaxDeliver:     t.TaskMaxDeliver,
			MaxAckPending:  t.MaxAckPending,
		}
	}
	switch name {
	case ConsumerRoomExporter:
		return ConsumerSpec{Stream: StreamExportTasks, Config: task(TaskRoom, TaskUserData, TaskMail)}, nil
	case ConsumerRecordExporter:
		return ConsumerSpec{Stream: StreamExportTasks, Config: task(TaskRecords)}, nil
	case ConsumerArchiver:
		return ConsumerSpec{Stream: StreamExportEvents, Config: event(StatusFilter(EventPart))}, nil
	case ConsumerNotifier:
		return ConsumerSpec{Stream: StreamExportEvents, Config: event(StatusFilter(EventCompleted), StatusFilter(EventFailed), StatusFilter(EventCanceled))}, nil
	case ConsumerGatewayProjection:
		return ConsumerSpec{Stream: StreamExportEvents, Config: event(subjectStatusAll)}, nil
	}
	return ConsumerSpec{}, fmt.Errorf("bus: unknown consumer %q", name)
}

// EnsureTopology creates or updates every stream and bucket. Every service
// calls it at start, so any one of them can bring up an empty server.
func EnsureTopology(ctx context.Context, js jetstream.JetStream, t Topology) error {
	for _, cfg := range t.StreamConfigs() {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range t.KeyValueConfigs() {
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return fmt.Errorf("ensure bucket %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}

// EnsureConsumer creates or updates a declared durable consumer.
//
// On a work-queue stream the filters of its consumers must not overlap,
// and the server refuses a consumer whose filter overlaps an existing one.
// So before it creates name, EnsureConsumer brings every other declared
// consumer of the same stream that already exists to its declaration
// (update only, never create): when a filter is narrowed here to make room
// for a new consumer, as room-exporter's was for record-exporter, the new
// consumer can start first in a rollout without waiting for the owner of
// the old filter. Updates are idempotent, so replicas may race on them.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, t Topology, name string) (jetstream.Consumer, error) {
	spec, err := t.Consumer(name)
	if err != nil {
		return nil, err
	}
	if err := updateSiblings(ctx, js, t, spec.Stream, name); err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", name, err)
	}
	c, err := js.CreateOrUpdateConsumer(ctx, spec.Stream, spec.Config)
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", name, err)
	}
	return c, nil
}

// updateSiblings updates the existing declared consumers of a work-queue
// stream other than name to their declarations.
func updateSiblings(ctx context.Context, js jetstream.JetStream, t Topology, stream, name string) error {
	var workQueue bool
	for _, cfg := range t.StreamConfigs() {
		workQueue = workQueue || (cfg.Name == stream && cfg.Retention == jetstream.WorkQueuePolicy)
	}
	if !workQueue {
		return nil
	}
	for _, other := range Consumers() {
		spec, err := t.Consumer(other)
		if err != nil {
			return err
		}
		if other == name || spec.Stream != stream {
			continue
		}
		if _, err := js.UpdateConsumer(ctx, stream, spec.Config); err != nil && !errors.Is(err, jetstream.ErrConsumerDoesNotExist) {
			return fmt.Errorf("update consumer %s: %w", other, err)
		}
	}
	return nil
}

// CheckTopology reports whether every stream and bucket exists; services use
// it for readiness.
func CheckTopology(ctx context.Context, js jetstream.JetStream, t Topology) error {
	for _, cfg := range t.StreamConfigs() {
		if _, err := js.Stream(ctx, cfg.Name); err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range t.KeyValueConfigs() {
		if _, err := js.KeyValue(ctx, cfg.Bucket); err != nil {
			return fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}
