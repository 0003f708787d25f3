package plan_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

// TestSplitPlansRanges: on a real records stream, a single-file export of
// a subject at or over the threshold is planned as consecutive ranges
// that cover the subject's first to last message exactly; what cannot be
// split, or is below the threshold, keeps one task.
func TestSplitPlansRanges(t *testing.T) {
	srv := bustest.Start(t)
	ctx := t.Context()
	// Another tenant's records around acme's: the span is acme's own.
	publish := func(org string, n int) {
		subject, err := bus.RecordSubject("transactions", org)
		require.NoError(t, err)
		for i := range n {
			_, err := srv.JS.Publish(ctx, subject, fmt.Appendf(nil, "%s-%d", org, i))
			require.NoError(t, err)
		}
	}
	publish("other", 5)
	publish("acme", 103)
	publish("other", 7)
	stream, err := srv.JS.Stream(ctx, bus.StreamRecords)
	require.NoError(t, err)
	subjects := plan.StreamSubjects{Stream: stream}

	count, first, last, err := subjects.Span(ctx, "records.transactions.acme")
	require.NoError(t, err)
	assert.EqualValues(t, 103, count)
	assert.EqualValues(t, 6, first)
	assert.EqualValues(t, 108, last)
	count, _, _, err = subjects.Span(ctx, "records.transactions.nobody")
	require.NoError(t, err)
	assert.Zero(t, count)

	job := func(format exportv1.Format, sc *exportv1.RecordsScope) *exportv1.Job {
		return &exportv1.Job{Id: "j1", OwnerId: "u1", Format: format, Kind: exportv1.JobKind_JOB_KIND_RECORDS,
			Scope: &exportv1.Scope{UserId: "u1", OrganizationId: "acme"}, Records: sc}
	}
	split := plan.Split{Subjects: subjects, MinRecords: 100, Parts: 4}

	tasks, err := split.RecordsTasks(ctx, job(exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions", MaxRows: 9}))
	require.NoError(t, err)
	require.Len(t, tasks, 4)
	next := uint64(6)
	for i, task := range tasks {
		rr := task.GetRecordRange()
		require.NotNil(t, rr, "task %d", i)
		assert.Equal(t, next, rr.GetFirstSeq(), "task %d starts where the one before ended", i)
		assert.GreaterOrEqual(t, rr.GetLastSeq(), rr.GetFirstSeq())
		assert.InDelta(t, 103.0/4, float64(rr.GetLastSeq()-rr.GetFirstSeq()+1), 1, "even ranges")
		assert.Equal(t, exportv1.PartKind_PART_KIND_RECORDS, task.GetPartKind())
		assert.EqualValues(t, 9, task.GetRecords().GetMaxRows())
		next = rr.GetLastSeq() + 1
	}
	assert.EqualValues(t, 109, next, "the last range ends at the subject's last message")

	for name, c := range map[string]struct {
		split  plan.Split
		format exportv1.Format
		sc     *exportv1.RecordsScope
	}{
		"below the threshold": {plan.Split{Subjects: subjects, MinRecords: 104, Parts: 4}, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions"}},
		"one part":            {plan.Split{Subjects: subjects, MinRecords: 1, Parts: 1}, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions"}},
		"no stream":           {plan.Split{}, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions"}},
		"pdf":                 {split, exportv1.Format_FORMAT_PDF, &exportv1.RecordsScope{Resource: "transactions"}},
		"sorted":              {split, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions", Sort: "-amount"}},
		"chunked":             {split, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions", MaxRowsPerChunk: 10}},
		"gzip":                {split, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions", GzipChunks: true}},
		"chat messages":       {split, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "messages"}},
		"empty subject":       {split, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "events"}},
	} {
		t.Run(name, func(t *testing.T) {
			tasks, err := c.split.RecordsTasks(ctx, job(c.format, c.sc))
			require.NoError(t, err)
			require.Len(t, tasks, 1)
			assert.Nil(t, tasks[0].GetRecordRange())
		})
	}
}

// TestSplitPlansRoomRanges: on a real chat stream, a room export of a
// room at or over the threshold, in JSON, JSON lines, csv.gz or HTML,
// is planned as consecutive ranges covering the room subject's first to
// last message, one part each; a smaller room or no stream keep the one
// task, untouched.
func TestSplitPlansRoomRanges(t *testing.T) {
	srv := bustest.Start(t)
	ctx := t.Context()
	publish := func(room string, n int) {
		subject, err := bus.ChatSubject(room)
		require.NoError(t, err)
		for i := range n {
			_, err := srv.JS.Publish(ctx, subject, fmt.Appendf(nil, "%s-%d", room, i))
			require.NoError(t, err)
		}
	}
	publish("OTHER", 4)
	publish("BIG", 50)
	publish("OTHER", 3)
	publish("BIG", 53)
	publish("OTHER", 2)
	stream, err := srv.JS.Stream(ctx, bus.StreamChatMessages)
	require.NoError(t, err)
	rooms := plan.StreamSubjects{Stream: stream}
	room := &sourcev1.Room{Id: "BIG", Name: "big", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL}
	planned := func(s plan.Split, format exportv1.Format) (*exportv1.Job, []*exportv1.ExportTask) {
		job := &exportv1.Job{Id: "j1", OwnerId: "u1", Format: format, Kind: exportv1.JobKind_JOB_KIND_ROOM}
		one := plan.RoomExport(job, room, nil, nil, ".json")
		tasks, err := s.RoomTasks(ctx, job, room, one[0])
		require.NoError(t, err)
		return job, tasks
	}
	split := plan.Split{Rooms: rooms, MinRecords: 100, Parts: 4}

	for _, format := range []exportv1.Format{exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_JSONL, exportv1.Format_FORMAT_CSV,
		exportv1.Format_FORMAT_HTML} {
		t.Run(format.String(), func(t *testing.T) {
			job, tasks := planned(split, format)
			require.Len(t, tasks, 4)
			require.Len(t, job.GetParts(), 4, "one part per range")
			next := uint64(5)
			for i, task := range tasks {
				rr := task.GetRoomRange()
				require.NotNil(t, rr, "task %d", i)
				assert.Equal(t, next, rr.GetFirstSeq(), "task %d starts where the one before ended", i)
				assert.InDelta(t, 106.0/4, float64(rr.GetLastSeq()-rr.GetFirstSeq()+1), 1, "even ranges")
				assert.False(t, task.GetRoomRender(), "the gateway plans the index stage")
				assert.Nil(t, task.GetRecordRange())
				assert.Equal(t, exportv1.PartKind_PART_KIND_ROOM, task.GetPartKind())
				assert.Equal(t, "big.json", task.GetTargetFile())
				assert.Equal(t, "BIG", task.GetRoom().GetRoomId())
				assert.Equal(t, "big", job.GetParts()[i].GetRoomName())
				next = rr.GetLastSeq() + 1
			}
			assert.EqualValues(t, 111, next, "the last range ends at the room's last message")
		})
	}

	for name, c := range map[string]struct {
		split  plan.Split
		format exportv1.Format
	}{
		"below the threshold":      {plan.Split{Rooms: rooms, MinRecords: 104, Parts: 4}, exportv1.Format_FORMAT_JSON},
		"one part":                 {plan.Split{Rooms: rooms, MinRecords: 1, Parts: 1}, exportv1.Format_FORMAT_JSON},
		"no chat stream":           {plan.Split{Subjects: rooms, MinRecords: 1, Parts: 4}, exportv1.Format_FORMAT_JSON},
		"html below the threshold": {plan.Split{Rooms: rooms, MinRecords: 104, Parts: 4}, exportv1.Format_FORMAT_HTML},
	} {
		t.Run(name, func(t *testing.T) {
			job, tasks := planned(c.split, c.format)
			require.Len(t, tasks, 1)
			assert.Nil(t, tasks[0].GetRoomRange())
			assert.Len(t, job.GetParts(), 1)
		})
	}
}
