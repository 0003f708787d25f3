package roomexport_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/logtest"
	"dataport.dev/shared/taskrun"
	"dataport.dev/shared/taskrun/taskruntest"
)

const bucket = "dataport-exports"

// harness is a room-exporter on real servers: embedded JetStream with the
// project's topology, real MinIO, and the exporter behind the real consume
// loop on the real durable consumer.
type harness struct {
	// exp is the room exporter as its main builds it: a runner with the
	// room kinds registered.
	exp   taskruntest.Exporter
	js    jetstream.JetStream
	store *blob.Store
	pub   *bus.Publisher
}

// config is what a test may change: the room kinds' options and the
// runner's. Bucket, Logger, Now and MeterProvider of the kinds are the
// runner's too unless the test sets the runner's own.
type config struct {
	roomexport.Options
	Runner taskrun.Options
}

func start(t testing.TB, configure func(*config)) *harness {
	t.Helper()
	ns := bustest.Start(t)
	ms := blobtest.Start(t, bucket)
	ctx := t.Context()
	h := &harness{js: ns.JS, store: ms.Store, pub: bus.NewPublisher(ns.JS, nil)}

	topo := bustest.Topology()
	o := config{
		Options: roomexport.Options{JS: ns.JS, Store: ms.Store, Bucket: bucket, Publisher: h.pub, Signer: bustest.TaskSigner(t)},
		Runner: taskrun.Options{JS: ns.JS, Store: ms.Store, Publisher: h.pub, MaxDeliver: topo.TaskMaxDeliver,
			Signer: bustest.TaskSigner(t), Name: "roomexport", NotAllowed: roomexport.ReasonNotAllowed},
	}
	if configure != nil {
		configure(&o)
	}
	// Warnings reach the test's log too: a test that fails or hangs shows
	// what the runner was retrying.
	if warn := logtest.Warnings(t); o.Logger == nil {
		o.Logger = slog.New(warn)
	} else {
		o.Logger = slog.New(slog.NewMultiHandler(o.Logger.Handler(), warn))
	}
	if o.Runner.Bucket == "" {
		o.Runner.Bucket = o.Bucket
	}
	if o.Runner.Logger == nil {
		o.Runner.Logger = o.Logger
	}
	if o.Runner.Now == nil {
		o.Runner.Now = o.Now
	}
	if o.Runner.DependencyWait == 0 {
		// Not the default 30 minutes: a dependency still failing after a
		// minute on loopback is a bug for the test to report, not an
		// outage to wait out until the test binary's timeout.
		o.Runner.DependencyWait = time.Minute
	}
	if o.Runner.MeterProvider == nil {
		o.Runner.MeterProvider = o.MeterProvider
	}
	runner, err := taskrun.New(ctx, o.Runner)
	require.NoError(t, err)
	rooms, err := roomexport.New(ctx, o.Options)
	require.NoError(t, err)
	rooms.Register(runner)
	exp := taskruntest.Exporter{Runner: runner}
	h.exp = exp
	// The owner of the tests' room exports may read any room.
	h.putKV(t, bus.BucketUsers, "u-owner", owner)
	taskruntest.Consume(t, ns.JS, topo, bus.ConsumerRoomExporter, runner, bus.ConsumeOptions{
		Concurrency: 2,
		// Under AckWait/2 (bustest: 5 s), or a long export (under
		// -race) would be redelivered while it still runs.
		Heartbeat: time.Second,
		NakDelay:  func(uint64) time.Duration { return 100 * time.Millisecond },
	})
	return h
}

func (h *harness) putRoom(t testing.TB, room *sourcev1.Room) {
	t.Helper()
	bustest.Put(t, h.js, bus.BucketRooms, room.GetId(), room)
}

func (h *harness) putJob(t testing.TB, id string, state exportv1.JobState) {
	t.Helper()
	require.NoError(t, h.setJobState(id, state))
}

// putJobRecord writes job as the gateway's projection would.
func (h *harness) putJobRecord(t testing.TB, job *exportv1.Job) {
	t.Helper()
	kv, err := h.js.KeyValue(t.Context(), bus.BucketJobs)
	require.NoError(t, err)
	data, err := proto.Marshal(job)
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), job.GetId(), data)
	require.NoError(t, err)
}

// setJobState writes the job record as the gateway's projection would.
func (h *harness) setJobState(id string, state exportv1.JobState) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := h.js.KeyValue(ctx, bus.BucketJobs)
	if err != nil {
		return err
	}
	data, err := proto.Marshal(&exportv1.Job{Id: id, State: state, Kind: exportv1.JobKind_JOB_KIND_ROOM})
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, id, data)
	return err
}

// publishMessages stores msgs on their rooms' subjects in order.
func (h *harness) publishMessages(t testing.TB, msgs ...*sourcev1.ChatMessage) {
	t.Helper()
	for i, m := range msgs {
		subject, err := bus.ChatSubject(m.GetRoomId())
		require.NoError(t, err)
		data, err := proto.Marshal(m)
		require.NoError(t, err)
		_, err = h.js.PublishAsync(subject, data)
		require.NoError(t, err)
		if i%2000 == 1999 {
			waitPublished(t, h.js)
		}
	}
	waitPublished(t, h.js)
}

func waitPublished(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("async publishes not acknowledged")
	}
}

func (h *harness) publishTask(t testing.TB, msgID string, task *exportv1.ExportTask) {
	t.Helper()
	subject, err := bus.TaskSubject(bus.TaskRoom)
	require.NoError(t, err)
	require.NoError(t, h.pub.PublishTask(t.Context(), bustest.TaskSigner(t), subject, msgID, task))
}

// event waits for the last event of kind ev for job and decodes it into m.
func (h *harness) event(t testing.TB, ev bus.Event, jobID string, m proto.Message) {
	t.Helper()
	taskruntest.WaitEvent(t, h.js, ev, jobID, m)
}

// eventCount is how many events of kind ev the job has.
func (h *harness) eventCount(t testing.TB, ev bus.Event, jobID string) uint64 {
	t.Helper()
	subject, err := bus.StatusSubject(ev, jobID)
	require.NoError(t, err)
	events, err := h.js.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	info, err := events.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	return info.State.Subjects[subject]
}

// waitTasksSettled waits until the exporter has taken delivered tasks and
// acked or terminated every one of them.
func (h *harness) waitTasksSettled(t testing.TB, delivered uint64) {
	t.Helper()
	cons, err := h.js.Consumer(t.Context(), bus.StreamExportTasks, bus.ConsumerRoomExporter)
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		info, err := cons.Info(t.Context())
		if !assert.NoError(c, err) {
			return
		}
		assert.GreaterOrEqual(c, info.Delivered.Consumer, delivered)
		assert.Zero(c, info.NumPending)
		assert.Zero(c, info.NumAckPending)
	}, 30*time.Second, 20*time.Millisecond)
}

func (h *harness) download(t testing.TB, key string) []byte {
	t.Helper()
	r, _, err := h.store.Open(t.Context(), bucket, key)
	require.NoError(t, err)
	defer r.Close()
	data, err := io.ReadAll(r)
	require.NoError(t, err)
	return data
}

func (h *harness) objects(t testing.TB, jobID string) []string {
	t.Helper()
	return blobtest.Keys(t, h.store, bucket, "jobs/"+jobID+"/")
}

// document is the exported JSON, decoded generically so the tests check
// the field names a Rocket.Chat client reads.
type document struct {
	Room     map[string]any   `json:"room"`
	Messages []map[string]any `json:"messages"`
}

func decodeDocument(t testing.TB, data []byte) document {
	t.Helper()
	require.True(t, json.Valid(data), "export is not valid JSON: %.200s", data)
	var doc document
	require.NoError(t, json.Unmarshal(data, &doc))
	require.NotNil(t, doc.Messages, "messages must be an array")
	return doc
}

func ids(doc document) []string {
	out := make([]string, 0, len(doc.Messages))
	for _, m := range doc.Messages {
		id, _ := m["_id"].(string)
		out = append(out, id)
	}
	return out
}

var base = time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)

// msgTime is the ts of the i-th fixture message: one a minute, with
// milliseconds so that their formatting shows.
func msgTime(i int) time.Time {
	return base.Add(time.Duration(i)*time.Minute + time.Duration(i%1000)*time.Millisecond)
}

// roomMessages makes n messages of roomID; a few of the first ones carry
// the optional Rocket.Chat fields.
func roomMessages(roomID string, n int) []*sourcev1.ChatMessage {
	msgs := make([]*sourcev1.ChatMessage, n)
	for i := range n {
		msgs[i] = fixtureMessage(roomID, i)
	}
	return msgs
}

func fixtureMessage(roomID string, i int) *sourcev1.ChatMessage {
	m := &sourcev1.ChatMessage{
		Id:     fmt.Sprintf("%s-m%06d", roomID, i),
		RoomId: roomID,
		Text:   fmt.Sprintf("message %d in %s: the quick brown fox jumps over the lazy dog", i, roomID),
		Ts:     timestamppb.New(msgTime(i)),
		User:   &sourcev1.UserRef{Id: fmt.Sprintf("u%d", i%3), Username: []string{"alice", "bob", "carol"}[i%3], Name: "User Name"},
	}
	switch i {
	case 1:
		m.EditedAt = timestamppb.New(msgTime(1).Add(30 * time.Second))
		m.EditedBy = &sourcev1.UserRef{Id: "u1", Username: "bob"}
	case 2:
		m.ThreadCount = 1
		m.ThreadLastMessage = timestamppb.New(msgTime(3))
	case 3:
		m.ThreadId = fmt.Sprintf("%s-m%06d", roomID, 2)
	case 4:
		m.SystemType = "uj"
		m.Text = "carol"
	case 5:
		m.Attachments = []*sourcev1.Attachment{{
			FileId: "F5", Name: "report.pdf", ContentType: "application/pdf", Size: 1234,
			ObjectKey: "assets/F5/report.pdf", Description: "quarterly numbers",
		}}
	}
	return m
}

// owner is the user of the tests' room exports: an admin (mail-messages)
// who may also read rooms they are not in (export-any-room).
var owner = &sourcev1.User{Id: "u-owner", Username: "owner", Roles: []string{"admin", "compliance-officer"}}

func roomTask(jobID, roomID string, from, to *time.Time) *exportv1.ExportTask {
	scope := &exportv1.RoomScope{RoomId: roomID}
	if from != nil {
		scope.From = timestamppb.New(*from)
	}
	if to != nil {
		scope.To = timestamppb.New(*to)
	}
	return &exportv1.ExportTask{
		JobId: jobID, OccurredAt: timestamppb.Now(),
		Kind: exportv1.JobKind_JOB_KIND_ROOM, Format: exportv1.Format_FORMAT_JSON,
		OwnerId: "u-owner", Part: 0, PartsTotal: 1, Room: scope,
		Scope: access.ScopeFor(owner, ""),
	}
}

func at(i int) *time.Time {
	t := msgTime(i)
	return &t
}

func TestExportRoom(t *testing.T) {
	h := start(t, nil)
	room := &sourcev1.Room{
		Id: "GENERAL", Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL,
		Topic: "Company-wide", CreatedAt: timestamppb.New(base.Add(-time.Hour)),
	}
	h.putRoom(t, room)
	// Another room's messages are interleaved; they must never leak in.
	general, random := roomMessages("GENERAL", 10), roomMessages("RANDOM", 10)
	for i := range general {
		h.publishMessages(t, general[i], random[i])
	}

	tests := []struct {
		name     string
		from, to *time.Time
		want     []int // indexes of the expected messages
	}{
		{name: "whole history", want: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{name: "inclusive bounds", from: at(3), to: at(6), want: []int{3, 4, 5, 6}},
		{name: "from only", from: at(8), want: []int{8, 9}},
		{name: "to only", to: at(0), want: []int{0}},
		{name: "bounds between messages", from: ptr(msgTime(2).Add(time.Millisecond)), to: ptr(msgTime(4).Add(-time.Millisecond)), want: []int{3}},
		{name: "range after the last message", from: at(20), want: []int{}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobID := fmt.Sprintf("job-range-%d", i)
			h.publishTask(t, jobID+".task.0", roomTask(jobID, "GENERAL", tt.from, tt.to))

			var part exportv1.PartUploaded
			h.event(t, bus.EventPart, jobID, &part)
			key := "jobs/" + jobID + "/parts/0/general.json"
			assert.Equal(t, jobID, part.GetJobId())
			assert.Equal(t, uint32(0), part.GetPart())
			assert.Equal(t, uint32(1), part.GetPartsTotal())
			assert.Equal(t, exportv1.JobKind_JOB_KIND_ROOM, part.GetKind())
			assert.Equal(t, "u-owner", part.GetOwnerId())
			assert.Equal(t, "general.json", part.GetFile().GetName())
			assert.Equal(t, key, part.GetFile().GetObjectKey())
			assert.Equal(t, "application/json", part.GetFile().GetContentType())

			data := h.download(t, key)
			sum := sha256.Sum256(data)
			assert.Equal(t, hex.EncodeToString(sum[:]), part.GetFile().GetSha256())
			assert.Equal(t, uint64(len(data)), part.GetFile().GetSize())
			assert.Equal(t, uint64(len(tt.want)), part.GetFile().GetRecords())

			doc := decodeDocument(t, data)
			assert.Equal(t, map[string]any{
				"_id": "GENERAL", "name": "general", "t": "c", "topic": "Company-wide", "ts": "2026-05-01T08:00:00.000Z",
			}, doc.Room)
			want := make([]string, 0, len(tt.want))
			for _, i := range tt.want {
				want = append(want, general[i].GetId())
			}
			assert.Equal(t, want, ids(doc), "messages in range, in sending order")

			if len(tt.want) > 0 {
				// With no records the final event shares its dedup id
				// (<part>.<records>) with the first one and is dropped.
				var progress exportv1.ExportProgress
				h.event(t, bus.EventProgress, jobID, &progress)
				assert.Equal(t, uint32(100), progress.GetProgress().GetPercent())
				assert.Equal(t, uint64(len(tt.want)), progress.GetProgress().GetRecords())
			}
		})
	}

	t.Run("fields", func(t *testing.T) {
		jobID := "job-fields"
		h.publishTask(t, jobID+".task.0", roomTask(jobID, "GENERAL", nil, nil))
		var part exportv1.PartUploaded
		h.event(t, bus.EventPart, jobID, &part)
		doc := decodeDocument(t, h.download(t, part.GetFile().GetObjectKey()))
		require.Len(t, doc.Messages, 10)

		m0 := doc.Messages[0]
		assert.Equal(t, map[string]any{
			"_id": "GENERAL-m000000", "rid": "GENERAL", "msg": general[0].GetText(), "ts": "2026-05-01T09:00:00.000Z",
			"u": map[string]any{"_id": "u0", "username": "alice", "name": "User Name"},
		}, m0, "a plain message has no optional fields")

		edited := doc.Messages[1]
		assert.Equal(t, "2026-05-01T09:01:00.001Z", edited["ts"])
		assert.Equal(t, "2026-05-01T09:01:30.001Z", edited["editedAt"])
		assert.Equal(t, map[string]any{"_id": "u1", "username": "bob"}, edited["editedBy"])

		root, reply := doc.Messages[2], doc.Messages[3]
		assert.Equal(t, float64(1), root["tcount"])
		assert.Equal(t, "2026-05-01T09:03:00.003Z", root["tlm"])
		assert.Equal(t, "GENERAL-m000002", reply["tmid"])
		assert.NotContains(t, reply, "tcount")

		assert.Equal(t, "uj", doc.Messages[4]["t"])
		assert.Equal(t, "carol", doc.Messages[4]["msg"])

		withFile := doc.Messages[5]
		assert.Equal(t, map[string]any{"_id": "F5", "name": "report.pdf", "type": "application/pdf"}, withFile["file"])
		assert.Equal(t, []any{map[string]any{
			"type": "file", "title": "report.pdf", "title_link": "assets/F5-report.pdf", "description": "quarterly numbers",
		}}, withFile["attachments"])
	})
}

func ptr[T any](v T) *T { return &v }

func TestExportRedeliveryIsIdempotent(t *testing.T) {
	h := start(t, nil)
	h.putRoom(t, &sourcev1.Room{Id: "R1", Name: "Team chat!", Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE})
	h.publishMessages(t, roomMessages("R1", 50)...)

	const jobID = "job-redeliver"
	task := roomTask(jobID, "R1", nil, nil)
	h.publishTask(t, jobID+".task.0", task)
	var first exportv1.PartUploaded
	h.event(t, bus.EventPart, jobID, &first)
	key := "jobs/" + jobID + "/parts/0/Team_chat_.json"
	require.Equal(t, key, first.GetFile().GetObjectKey())
	before := h.download(t, key)

	// The same task again, as after a lost ack (a new Nats-Msg-Id, since
	// the task stream would drop an identical one).
	h.publishTask(t, jobID+".task.0.again", task)
	h.waitTasksSettled(t, 2)

	after := h.download(t, key)
	assert.Equal(t, before, after, "a redelivered task writes the same bytes")
	assert.Equal(t, []string{key}, h.objects(t, jobID), "and no second object")
	assert.Equal(t, uint64(1), h.eventCount(t, bus.EventPart, jobID), "PartUploaded is deduplicated")
	var second exportv1.PartUploaded
	h.event(t, bus.EventPart, jobID, &second)
	assert.True(t, proto.Equal(first.GetFile(), second.GetFile()))
}

func TestExportRepublishedMessageShowsLastVersionOnce(t *testing.T) {
	h := start(t, nil)
	h.putRoom(t, &sourcev1.Room{Id: "R2", Name: "edits"})
	msgs := roomMessages("R2", 4)
	edit := proto.Clone(msgs[0]).(*sourcev1.ChatMessage)
	edit.Text = "hello, corrected"
	edit.EditedAt = timestamppb.New(msgTime(5))
	edit.EditedBy = &sourcev1.UserRef{Id: "u0", Username: "alice"}
	rootUpdate := proto.Clone(msgs[2]).(*sourcev1.ChatMessage)
	rootUpdate.ThreadCount = 2
	// Sending order: m0 m1 m2 m0' m3 m2'.
	h.publishMessages(t, msgs[0], msgs[1], msgs[2], edit, msgs[3], rootUpdate)

	const jobID = "job-edits"
	h.publishTask(t, jobID+".task.0", roomTask(jobID, "R2", nil, nil))
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, jobID, &part)
	doc := decodeDocument(t, h.download(t, part.GetFile().GetObjectKey()))

	assert.Equal(t, []string{msgs[0].GetId(), msgs[1].GetId(), msgs[2].GetId(), msgs[3].GetId()}, ids(doc),
		"each message once, at its first position")
	assert.Equal(t, "hello, corrected", doc.Messages[0]["msg"])
	assert.Equal(t, "2026-05-01T09:05:00.005Z", doc.Messages[0]["editedAt"])
	assert.Equal(t, float64(2), doc.Messages[2]["tcount"])
	assert.Equal(t, uint64(4), part.GetFile().GetRecords())
}

func TestExportTerminatedTaskFailsJob(t *testing.T) {
	h := start(t, nil)
	h.putRoom(t, &sourcev1.Room{Id: "R3", Name: "exists"})
	h.publishMessages(t, roomMessages("R3", 3)...)

	tests := []struct {
		name   string
		task   func(jobID string) *exportv1.ExportTask
		reason string
	}{
		{
			name:   "missing room",
			task:   func(jobID string) *exportv1.ExportTask { return roomTask(jobID, "NOPE", nil, nil) },
			reason: "room NOPE not found",
		},
		{
			name: "xml is not a room format",
			task: func(jobID string) *exportv1.ExportTask {
				task := roomTask(jobID, "R3", nil, nil)
				task.Format = exportv1.Format_FORMAT_XML
				return task
			},
			reason: "format xml not supported yet",
		},
		{
			name: "records kind",
			task: func(jobID string) *exportv1.ExportTask {
				task := roomTask(jobID, "R3", nil, nil)
				task.Kind = exportv1.JobKind_JOB_KIND_RECORDS
				return task
			},
			reason: "export kind records not supported yet",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobID := fmt.Sprintf("job-terminated-%d", i)
			h.publishTask(t, jobID+".task.0", tt.task(jobID))

			var failed exportv1.ExportFailed
			h.event(t, bus.EventFailed, jobID, &failed)
			assert.Equal(t, jobID, failed.GetJobId())
			assert.Equal(t, tt.reason, failed.GetReason())
			assert.True(t, failed.GetRejected(), "the request can never succeed as asked")
			assert.Equal(t, "u-owner", failed.GetOwnerId())

			h.waitTasksSettled(t, uint64(i+1))
			assert.Empty(t, h.objects(t, jobID))
			assert.Zero(t, h.eventCount(t, bus.EventPart, jobID))
		})
	}
}

func TestExportCanceledJobLeavesNoObject(t *testing.T) {
	t.Run("canceled before the task runs", func(t *testing.T) {
		h := start(t, nil)
		h.putRoom(t, &sourcev1.Room{Id: "R4", Name: "canceled"})
		h.publishMessages(t, roomMessages("R4", 20)...)
		const jobID = "job-canceled-early"
		h.putJob(t, jobID, exportv1.JobState_JOB_STATE_CANCELED)

		h.publishTask(t, jobID+".task.0", roomTask(jobID, "R4", nil, nil))
		h.waitTasksSettled(t, 1)

		assert.Empty(t, h.objects(t, jobID))
		assert.Zero(t, h.eventCount(t, bus.EventPart, jobID))
		assert.Zero(t, h.eventCount(t, bus.EventFailed, jobID), "a canceled job is not failed")
	})

	t.Run("canceled while streaming", func(t *testing.T) {
		const (
			jobID = "job-canceled-midway"
			n     = 3000
		)
		// The user cancels about halfway through the export pass: it
		// reads the clock once per message (taskrun.Task.Tick), the index
		// pass not at all, so call n/2 falls in the middle of the export.
		var h *harness
		clock := &steppingClock{now: base, step: 100 * time.Millisecond, hookAt: n / 2, hook: func() {
			// Runs on the exporter's goroutine: report, don't FailNow.
			if err := h.setJobState(jobID, exportv1.JobState_JOB_STATE_CANCELED); err != nil {
				t.Errorf("cancel job: %v", err)
			}
		}}
		h = start(t, func(o *config) { o.Now = clock.Now })
		h.putRoom(t, &sourcev1.Room{Id: "R5", Name: "big"})
		h.publishMessages(t, roomMessages("R5", n)...)
		h.putJob(t, jobID, exportv1.JobState_JOB_STATE_PROCESSING)

		h.publishTask(t, jobID+".task.0", roomTask(jobID, "R5", nil, nil))
		h.waitTasksSettled(t, 1)

		require.True(t, clock.fired(), "the job was canceled during the export")
		var progress exportv1.ExportProgress
		h.event(t, bus.EventProgress, jobID, &progress)
		assert.Less(t, progress.GetProgress().GetPercent(), uint32(100), "progress stopped short")
		assert.Greater(t, progress.GetProgress().GetRecords(), uint64(0), "the export had started")
		assert.Empty(t, h.objects(t, jobID), "the upload was aborted")
		aborted, err := h.store.AbortIncompleteUploads(t.Context(), bucket, "jobs/"+jobID+"/parts/0/big.json")
		require.NoError(t, err)
		assert.Zero(t, aborted, "no multipart upload left behind")
		assert.Zero(t, h.eventCount(t, bus.EventPart, jobID))
	})
}

// steppingClock advances by step on every reading and runs hook once, on
// reading number hookAt: a user acting at a known point of an export.
type steppingClock struct {
	mu     sync.Mutex
	now    time.Time
	step   time.Duration
	calls  int
	hookAt int
	hook   func()
	done   bool
}

func (c *steppingClock) Now() time.Time {
	c.mu.Lock()
	c.calls++
	c.now = c.now.Add(c.step)
	now, run := c.now, c.calls == c.hookAt
	if run {
		c.done = true
	}
	c.mu.Unlock()
	if run {
		c.hook()
	}
	return now
}

func (c *steppingClock) fired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// allEvents returns the bodies of every event of kind ev for job, in order.
func (h *harness) allEvents(t testing.TB, ev bus.Event, jobID string) [][]byte {
	t.Helper()
	subject, err := bus.StatusSubject(ev, jobID)
	require.NoError(t, err)
	if h.eventCount(t, ev, jobID) == 0 {
		return nil
	}
	cons, err := h.js.OrderedConsumer(t.Context(), bus.StreamExportEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(t, err)
	var out [][]byte
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		require.NoError(t, err)
		out = append(out, msg.Data())
		md, err := msg.Metadata()
		require.NoError(t, err)
		if md.NumPending == 0 {
			return out
		}
	}
}

func TestExportReportsProgress(t *testing.T) {
	// The clock stands still, so the events follow the message count
	// alone, however long reading the history takes on a loaded machine
	// (the time-based events are the runner's, tested in shared/taskrun).
	frozen := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	h := start(t, func(o *config) { o.Now = func() time.Time { return frozen } })
	h.putRoom(t, &sourcev1.Room{Id: "R6", Name: "progress"})
	const n = 2500
	h.publishMessages(t, roomMessages("R6", n)...)

	const jobID = "job-progress"
	h.publishTask(t, jobID+".task.0", roomTask(jobID, "R6", nil, nil))
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, jobID, &part)

	var records []uint64
	var last exportv1.ExportProgress
	for _, data := range h.allEvents(t, bus.EventProgress, jobID) {
		require.NoError(t, proto.Unmarshal(data, &last))
		records = append(records, last.GetProgress().GetRecords())
	}
	require.NotEmpty(t, records)
	assert.Equal(t, uint64(0), records[0], "the first event says the part started")
	assert.IsNonDecreasing(t, records)
	// Every 1000 messages.
	assert.Equal(t, []uint64{0, 1000, 2000, n}, records)
	assert.Equal(t, uint32(100), last.GetProgress().GetPercent(), "the last event is the final one")
	assert.Equal(t, uint64(n), last.GetProgress().GetRecords())
	assert.Equal(t, part.GetFile().GetSize(), last.GetProgress().GetBytes())
	assert.Equal(t, uint32(1), last.GetPartsTotal())
}

func TestExportGivesUpAfterMaxDeliver(t *testing.T) {
	// No such bucket: every attempt fails the way an unreachable MinIO
	// does, so the task is retried, and the last attempt fails the job.
	h := start(t, func(o *config) { o.Bucket = "no-such-bucket" })
	h.putRoom(t, &sourcev1.Room{Id: "R7", Name: "unlucky"})
	h.publishMessages(t, roomMessages("R7", 5)...)

	const jobID = "job-gives-up"
	h.publishTask(t, jobID+".task.0", roomTask(jobID, "R7", nil, nil))
	var failed exportv1.ExportFailed
	h.event(t, bus.EventFailed, jobID, &failed)
	assert.Contains(t, failed.GetReason(), fmt.Sprintf("giving up after %d attempts", bustest.Topology().TaskMaxDeliver))
	assert.False(t, failed.GetRejected(), "an internal failure, not the request's fault")

	h.waitTasksSettled(t, uint64(bustest.Topology().TaskMaxDeliver))
	assert.Zero(t, h.eventCount(t, bus.EventPart, jobID))
}
