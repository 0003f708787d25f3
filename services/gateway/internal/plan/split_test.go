package plan_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
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
