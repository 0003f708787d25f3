package jobstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
)

// The reducer is pure: these tests fold events into a job in memory, with
// no server, in the orders JetStream may deliver them.

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func at(s int) *timestamppb.Timestamp { return timestamppb.New(t0.Add(time.Duration(s) * time.Second)) }

func pending() *exportv1.Job {
	return &exportv1.Job{Id: "j", State: exportv1.JobState_JOB_STATE_PENDING, PartsTotal: 2, CreatedAt: at(0), UpdatedAt: at(0),
		Parts: []*exportv1.PartStatus{{Part: 0, State: exportv1.PartState_PART_STATE_PENDING}, {Part: 1, State: exportv1.PartState_PART_STATE_PENDING}}}
}

func fold(t *testing.T, job *exportv1.Job, events ...Event) *exportv1.Job {
	t.Helper()
	for _, ev := range events {
		_, err := reduce(job, ev, 24*time.Hour)
		require.NoError(t, err)
	}
	return job
}

func progress(part uint32, percent uint32, records uint64, s int) *exportv1.ExportProgress {
	return &exportv1.ExportProgress{JobId: "j", OccurredAt: at(s), Part: part, PartsTotal: 2,
		Progress: &exportv1.Progress{Percent: percent, Records: records}}
}

func TestReduceMovesOnlyForward(t *testing.T) {
	completed := &exportv1.ExportCompleted{JobId: "j", OccurredAt: at(10),
		Files: []*exportv1.File{{Name: "a.json", Records: 7, Size: 100}, {Name: "b.json", Records: 3, Size: 50}}}
	failed := &exportv1.ExportFailed{JobId: "j", OccurredAt: at(11), Reason: "late failure"}
	canceled := &exportv1.ExportCanceled{JobId: "j", OccurredAt: at(12), Reason: "Canceled by user"}
	queued := &exportv1.ExportQueued{JobId: "j", OccurredAt: at(1)}

	tests := []struct {
		name   string
		events []Event
		state  exportv1.JobState
		check  func(t *testing.T, j *exportv1.Job)
	}{
		{"queued then progress", []Event{queued, progress(0, 50, 5, 2)}, exportv1.JobState_JOB_STATE_PROCESSING, nil},
		{"a late queued does not move a running job back", []Event{progress(0, 50, 5, 2), queued}, exportv1.JobState_JOB_STATE_PROCESSING, nil},
		{"completed is final", []Event{completed, failed, canceled, progress(0, 10, 1, 13), queued}, exportv1.JobState_JOB_STATE_COMPLETED,
			func(t *testing.T, j *exportv1.Job) {
				assert.Equal(t, uint32(100), j.GetProgress().GetPercent())
				assert.Equal(t, uint64(10), j.GetProgress().GetRecords())
				assert.Equal(t, uint64(150), j.GetProgress().GetBytes())
				assert.Empty(t, j.GetError(), "a failure after completion is not shown")
				assert.Equal(t, t0.Add(10*time.Second+24*time.Hour), j.GetExpiresAt().AsTime(), "files expire a retention after completion")
				for _, p := range j.GetParts() {
					assert.Equal(t, exportv1.PartState_PART_STATE_COMPLETED, p.GetState())
				}
			}},
		{"canceled is final", []Event{canceled, completed}, exportv1.JobState_JOB_STATE_CANCELED,
			func(t *testing.T, j *exportv1.Job) {
				assert.Equal(t, "Canceled by user", j.GetError())
				assert.Equal(t, t0.Add(12*time.Second+24*time.Hour), j.GetExpiresAt().AsTime(),
					"what a canceled job kept expires a retention after the cancellation")
			}},
		{"a rejection says why", []Event{&exportv1.ExportFailed{JobId: "j", OccurredAt: at(3), Reason: "Too many lines in one export", Rejected: true}},
			exportv1.JobState_JOB_STATE_REJECTED,
			func(t *testing.T, j *exportv1.Job) {
				assert.Equal(t, "Too many lines in one export", j.GetError())
				assert.Equal(t, t0.Add(3*time.Second+24*time.Hour), j.GetExpiresAt().AsTime(), "a rejected job's files expire too")
			}},
		{"a failure keeps its expiry through later events", []Event{failed, completed, canceled,
			&exportv1.NotificationSent{JobId: "j", OccurredAt: at(20), Recipients: []string{"a@example.com"}}}, exportv1.JobState_JOB_STATE_FAILED,
			func(t *testing.T, j *exportv1.Job) {
				assert.Equal(t, t0.Add(11*time.Second+24*time.Hour), j.GetExpiresAt().AsTime(),
					"files expire a retention after the failure, not after the notification")
			}},
		{"notifications and expiry still apply to an ended job", []Event{completed,
			&exportv1.NotificationSent{JobId: "j", OccurredAt: at(20), Recipients: []string{"a@example.com"}},
			&exportv1.ExportExpired{JobId: "j", OccurredAt: at(30)}}, exportv1.JobState_JOB_STATE_COMPLETED,
			func(t *testing.T, j *exportv1.Job) {
				assert.True(t, j.GetNotified())
				assert.True(t, j.GetFilesExpired())
				assert.Equal(t, t0.Add(30*time.Second), j.GetUpdatedAt().AsTime())
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := fold(t, pending(), tc.events...)
			assert.Equal(t, tc.state, j.GetState())
			if tc.check != nil {
				tc.check(t, j)
			}
		})
	}
}

func TestReduceProgress(t *testing.T) {
	t.Run("a part's count only grows and the total stays below 100 until completion", func(t *testing.T) {
		j := fold(t, pending(), progress(0, 100, 40, 1), progress(0, 60, 20, 2), progress(1, 100, 60, 3))
		assert.Equal(t, uint64(40), j.GetParts()[0].GetExported(), "an older, smaller report does not shrink it")
		assert.Equal(t, uint64(100), j.GetProgress().GetRecords())
		assert.LessOrEqual(t, j.GetProgress().GetPercent(), uint32(maxRunningPercent))
		assert.Equal(t, t0.Add(3*time.Second), j.GetUpdatedAt().AsTime())
	})
	t.Run("an uploaded part is final for its count", func(t *testing.T) {
		up := &exportv1.PartUploaded{JobId: "j", OccurredAt: at(2), Part: 0, PartsTotal: 2, File: &exportv1.File{Records: 42}}
		j := fold(t, pending(), up, progress(0, 10, 1, 3))
		assert.Equal(t, exportv1.PartState_PART_STATE_COMPLETED, j.GetParts()[0].GetState())
		assert.Equal(t, uint64(42), j.GetParts()[0].GetExported())
	})
	t.Run("a redelivered event changes nothing", func(t *testing.T) {
		j := fold(t, pending(), progress(0, 50, 5, 1))
		changed, err := reduce(j, progress(0, 50, 5, 1), 0)
		require.NoError(t, err)
		assert.False(t, changed)
	})
}

func TestReduceRefusesUnknownEvents(t *testing.T) {
	_, err := reduce(pending(), &exportv1.ExportTask{JobId: "j"}, 0)
	require.Error(t, err)
	assert.True(t, bus.IsPermanent(err), "no redelivery makes an unknown event known")
}

func TestStepCreatesOnlyFromARequest(t *testing.T) {
	job := pending()
	req := &exportv1.ExportRequested{JobId: "j", OccurredAt: at(0), Job: job}
	created, changed, err := step(nil, req, 0)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.True(t, proto.Equal(job, created))
	assert.NotSame(t, job, created, "the record is a copy, not the caller's job")

	_, _, err = step(nil, &exportv1.ExportQueued{JobId: "j", OccurredAt: at(1)}, 0)
	require.ErrorIs(t, err, ErrNotFound)
	assert.False(t, bus.IsPermanent(err), "the job may still appear")
}

// TestRequestRecognisesItsJobAfterEveryEvent: the request that created a
// job, applied again (its copy from the stream, a redelivery), changes
// nothing whatever the job went through; every event kind the projection
// knows is tried, so a reducer field that request does not clear fails
// here.
func TestRequestRecognisesItsJobAfterEveryEvent(t *testing.T) {
	samples := map[bus.Event][]Event{
		bus.EventRequested: {&exportv1.ExportRequested{JobId: "j", OccurredAt: at(1), Job: pending()}},
		bus.EventQueued:    {&exportv1.ExportQueued{JobId: "j", OccurredAt: at(1)}},
		bus.EventProgress:  {progress(0, 40, 4, 2), progress(1, 10, 1, 3)},
		bus.EventPart: {&exportv1.PartUploaded{JobId: "j", OccurredAt: at(4), Part: 0, PartsTotal: 2, File: &exportv1.File{Name: "a.json", Records: 5},
			HiddenUsernames: []string{"bob"}, HiddenUsernamesTruncated: true}},
		bus.EventFinalizing: {&exportv1.ExportFinalizing{JobId: "j", OccurredAt: at(5)}},
		bus.EventCompleted:  {&exportv1.ExportCompleted{JobId: "j", OccurredAt: at(6), Files: []*exportv1.File{{Name: "a.json", Records: 5, Size: 10}}}},
		bus.EventFailed:     {&exportv1.ExportFailed{JobId: "j", OccurredAt: at(6), Reason: "boom"}},
		bus.EventCanceled:   {&exportv1.ExportCanceled{JobId: "j", OccurredAt: at(6), Reason: "Canceled by user"}},
		bus.EventNotified: {
			&exportv1.NotificationSent{JobId: "j", OccurredAt: at(7), Recipients: []string{"a@example.com"}, Error: "smtp down"},
			&exportv1.NotificationSent{JobId: "j", OccurredAt: at(8), Recipients: []string{"https://hooks.example.com/x"}, Channel: "webhook.0123456789abcdef"},
		},
		bus.EventExpired: {&exportv1.ExportExpired{JobId: "j", OccurredAt: at(9)}},
	}
	req := &exportv1.ExportRequested{JobId: "j", OccurredAt: at(0), Job: pending()}
	for _, e := range events {
		t.Run(string(e.kind), func(t *testing.T) {
			evs, ok := samples[e.kind]
			require.True(t, ok, "no sample of %s: add one", e.kind)
			job := fold(t, pending(), evs...)
			next, changed, err := step(job, req, 24*time.Hour)
			require.NoError(t, err)
			assert.False(t, changed)
			assert.Same(t, job, next)
		})
	}
	t.Run("all of them", func(t *testing.T) {
		job := pending()
		for _, e := range events {
			fold(t, job, samples[e.kind]...)
		}
		_, changed, err := step(job, req, 24*time.Hour)
		require.NoError(t, err)
		assert.False(t, changed)
	})
}

func TestRequestForAnotherJobIsErrExists(t *testing.T) {
	for name, change := range map[string]func(*exportv1.Job){
		"another owner":           func(j *exportv1.Job) { j.OwnerId = "mallory" },
		"created at another time": func(j *exportv1.Job) { j.CreatedAt = at(1) },
		"another scope":           func(j *exportv1.Job) { j.Room = &exportv1.RoomScope{RoomId: "secret"} },
		"another part plan":       func(j *exportv1.Job) { j.Parts[1].RoomId = "secret" },
	} {
		t.Run(name, func(t *testing.T) {
			job := fold(t, pending(), progress(0, 40, 4, 2))
			before := proto.CloneOf(job)
			other := pending()
			change(other)
			_, changed, err := step(job, &exportv1.ExportRequested{JobId: "j", OccurredAt: at(3), Job: other}, 0)
			require.ErrorIs(t, err, ErrExists)
			assert.False(t, changed)
			assert.True(t, proto.Equal(before, job), "the job that holds the id is left alone")
		})
	}
}

func TestCheckRefusesMalformedEvents(t *testing.T) {
	for name, ev := range map[string]Event{
		"requested without job":     &exportv1.ExportRequested{JobId: "j"},
		"requested with another id": &exportv1.ExportRequested{JobId: "j", Job: &exportv1.Job{Id: "k"}},
		"bad job id":                &exportv1.ExportQueued{JobId: "a.b"},
		"empty job id":              &exportv1.ExportQueued{},
	} {
		t.Run(name, func(t *testing.T) {
			err := check(ev)
			require.Error(t, err)
			assert.True(t, bus.IsPermanent(err))
		})
	}
	require.NoError(t, check(&exportv1.ExportRequested{JobId: "j", Job: pending()}))
}

// TestStagesRecordWhenEachStageBegan: the reducer stamps each stage with
// the occurred_at of the event that entered it, once; later events of the
// same stage (more progress, a late failure, a second email) keep the
// first stamp.
func TestStagesRecordWhenEachStageBegan(t *testing.T) {
	job := fold(t, pending(),
		&exportv1.ExportQueued{JobId: "j", OccurredAt: at(1)},
		progress(0, 10, 1, 2),
		progress(0, 50, 5, 3),
		&exportv1.ExportFinalizing{JobId: "j", OccurredAt: at(4)},
		&exportv1.ExportCompleted{JobId: "j", OccurredAt: at(5), Files: []*exportv1.File{{Name: "a.json"}}},
		&exportv1.ExportFailed{JobId: "j", OccurredAt: at(6), Reason: "late"},
		&exportv1.NotificationSent{JobId: "j", OccurredAt: at(7), Recipients: []string{"a@example.com"}, Error: "smtp down"},
		&exportv1.NotificationSent{JobId: "j", OccurredAt: at(8), Recipients: []string{"a@example.com"}},
		&exportv1.NotificationSent{JobId: "j", OccurredAt: at(9), Recipients: []string{"a@example.com"}},
	)
	st := job.GetStages()
	assert.Equal(t, at(1).AsTime(), st.GetQueuedAt().AsTime())
	assert.Equal(t, at(2).AsTime(), st.GetProcessingAt().AsTime())
	assert.Equal(t, at(4).AsTime(), st.GetFinalizingAt().AsTime())
	assert.Equal(t, at(5).AsTime(), st.GetEndedAt().AsTime())
	assert.Equal(t, at(8).AsTime(), st.GetNotifiedAt().AsTime(), "the first successful email")

	canceled := fold(t, pending(), &exportv1.ExportCanceled{JobId: "j", OccurredAt: at(3), Reason: "Canceled by user"})
	assert.Equal(t, at(3).AsTime(), canceled.GetStages().GetEndedAt().AsTime())
	assert.Nil(t, canceled.GetStages().GetProcessingAt(), "a skipped stage has no stamp")
}

// TestHiddenUsernamesAreTheUnionOfTheParts: each room part says whom its
// file hid; the job holds the union, sorted, the same in any order and
// however often the events come, capped at MaxHiddenUsernames.
func TestHiddenUsernamesAreTheUnionOfTheParts(t *testing.T) {
	part := func(n uint32, s int, names ...string) *exportv1.PartUploaded {
		return &exportv1.PartUploaded{JobId: "j", OccurredAt: at(s), Part: n, PartsTotal: 2,
			File: &exportv1.File{Name: "room.json"}, HiddenUsernames: names}
	}
	a, b := part(0, 2, "carol", "dave"), part(1, 3, "bob", "carol")
	completed := &exportv1.ExportCompleted{JobId: "j", OccurredAt: at(4), Files: []*exportv1.File{{Name: "a.zip"}}}
	want := []string{"bob", "carol", "dave"}
	for name, events := range map[string][]Event{
		"in order":                     {a, b, completed},
		"reversed":                     {b, a, completed},
		"redelivered":                  {a, b, a, b, completed},
		"a part applied after the end": {a, completed, b},
	} {
		t.Run(name, func(t *testing.T) {
			job := fold(t, pending(), events...)
			assert.Equal(t, want, job.GetHiddenUsernames())
			assert.False(t, job.GetHiddenUsernamesTruncated())
		})
	}

	t.Run("applying a part again changes nothing", func(t *testing.T) {
		job := fold(t, pending(), a, b)
		changed, err := reduce(job, a, 0)
		require.NoError(t, err)
		assert.False(t, changed)
	})

	t.Run("capped, keeping the first names in sort order", func(t *testing.T) {
		many := make([]string, MaxHiddenUsernames)
		for i := range many {
			many[i] = fmt.Sprintf("u%05d", i+1)
		}
		job := fold(t, pending(), part(0, 2, many...), part(1, 3, "u00000", "zed"))
		require.Len(t, job.GetHiddenUsernames(), MaxHiddenUsernames)
		assert.Equal(t, "u00000", job.GetHiddenUsernames()[0])
		assert.Equal(t, fmt.Sprintf("u%05d", MaxHiddenUsernames-1), job.GetHiddenUsernames()[MaxHiddenUsernames-1])
		assert.NotContains(t, job.GetHiddenUsernames(), "zed")
		assert.True(t, job.GetHiddenUsernamesTruncated(), "the job says it dropped names")
	})

	t.Run("a part that dropped names says so on the job", func(t *testing.T) {
		p := part(0, 2, "bob")
		p.HiddenUsernamesTruncated = true
		job := fold(t, pending(), p)
		assert.Equal(t, []string{"bob"}, job.GetHiddenUsernames())
		assert.True(t, job.GetHiddenUsernamesTruncated())
	})
}
