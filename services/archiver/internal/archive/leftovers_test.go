package archive_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/archiver/internal/archive"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
)

// splitJob is a split export as its ranges leave it in the bucket: the
// pieces they announce and, for a room, the split state of the two-stage
// export (roomexport's split.go and splithtml.go name these objects).
type splitJob struct {
	id    string
	parts []*exportv1.PartUploaded
	// state names the split state each range keeps under its part prefix
	// besides its piece.
	state []string
	// attachmentList is the key of the attachment list a part wrote, or "".
	attachmentList string
}

// roomSplitState are the objects a split room range keeps under its part
// prefix besides its announced piece.
var roomSplitState = []string{"split/ids", "split/report.json", "split/cross", "split/roots", "split/misses", "split/pieces/general.html"}

// leaveSplitRoom uploads a 3-range HTML room export: ranges 0 and 2
// announce their index stage's piece, range 1 rendered again and
// announces its piece under the part's own key; range 1 lists its
// attachments in an attachment list, as a part with too many for its event
// does.
func (e *env) leaveSplitRoom(t *testing.T, jobID string) splitJob {
	t.Helper()
	e.putJob(t, jobID, exportv1.JobKind_JOB_KIND_ROOM)
	png := bytes.Repeat([]byte{0x89, 'P', 'N', 'G'}, 64)
	a1 := e.put(t, assetBucket, "assets/f1/a.png", "assets/f1-a.png", "image/png", png, 1)
	a2 := e.put(t, assetBucket, "assets/f2/b.png", "assets/f2-b.png", "image/png", png[:16], 1)
	pieces := []string{"<html><main>\n<p>a</p>\n", "<p>b</p>\n", "<p>c</p>\n</main><footer>3 messages.</footer></html>\n"}
	job := splitJob{id: jobID, state: roomSplitState}
	for i, content := range pieces {
		prefix := fmt.Sprintf("jobs/%s/parts/%d/", jobID, i)
		for _, name := range roomSplitState {
			e.put(t, bucket, prefix+name, name, "application/octet-stream", []byte("state of "+name), 0)
		}
		key := prefix + "split/pieces/general.html"
		if i == 1 {
			key = prefix + "general.html"
		}
		doc := e.put(t, bucket, key, "general.html", "text/html", []byte(content), 1)
		p := &exportv1.PartUploaded{JobId: jobID, OccurredAt: timestamppb.Now(), Part: uint32(i), PartsTotal: uint32(len(pieces)),
			Kind: exportv1.JobKind_JOB_KIND_ROOM, OwnerId: owner, PartKind: exportv1.PartKind_PART_KIND_ROOM,
			File: doc, Piece: &exportv1.FilePiece{}}
		switch i {
		case 0:
			p.Files = []*exportv1.File{a1}
		case 1:
			var list bytes.Buffer
			for _, f := range []*exportv1.File{a1, a2} {
				_, err := protodelim.MarshalTo(&list, f)
				require.NoError(t, err)
			}
			job.attachmentList = objects.AttachmentListKey(jobID, 1)
			p.AttachmentList = e.put(t, bucket, job.attachmentList, "attachments.list.pb", "application/octet-stream", list.Bytes(), 2)
		}
		job.parts = append(job.parts, p)
	}
	return job
}

// leaveSplitRecords uploads a 3-range record export's pieces.
func (e *env) leaveSplitRecords(t *testing.T, jobID string) splitJob {
	t.Helper()
	e.putJob(t, jobID, exportv1.JobKind_JOB_KIND_RECORDS)
	return splitJob{id: jobID, parts: e.pieces(t, jobID, "transactions.json",
		[]pieceSpec{{"[\n{\"id\":1}", 1, 0}, {",\n{\"id\":2}", 1, 1}, {",\n{\"id\":3}\n]\n", 1, 1}}, nil)}
}

// publish announces the job's parts and returns the stream sequence of
// the last announcement, the one whose handler joins.
func (e *env) publish(t *testing.T, job splitJob, disc string) uint64 {
	t.Helper()
	for i, p := range job.parts {
		require.NoError(t, e.pub.PublishStatus(t.Context(), bus.EventPart, job.id, fmt.Sprintf("%d%s", i, disc), p))
	}
	subject, err := bus.StatusSubject(bus.EventPart, job.id)
	require.NoError(t, err)
	raw, err := e.events.GetLastMsgForSubject(t.Context(), subject)
	require.NoError(t, err)
	return raw.Sequence
}

// delivered is what the job's completion says it delivers, with the
// attachment list a part wrote: all a completed split export may keep.
func (e *env) delivered(t *testing.T, job splitJob) []string {
	t.Helper()
	require.Zero(t, e.count(t, bus.EventFailed, job.id), "failed events")
	require.EqualValues(t, 1, e.count(t, bus.EventCompleted, job.id), "completed events")
	var done exportv1.ExportCompleted
	e.last(t, bus.EventCompleted, job.id, &done)
	var keys []string
	for _, f := range done.GetFiles() {
		keys = append(keys, f.GetObjectKey())
	}
	keys = append(keys, done.GetManifest().GetObjectKey())
	if done.GetArchive() != nil {
		keys = append(keys, done.GetArchive().GetObjectKey())
	}
	if job.attachmentList != "" {
		keys = append(keys, job.attachmentList)
	}
	return keys
}

// TestCompletedSplitExportLeavesOnlyItsFiles: once a split export is
// joined and completed, its job's prefix holds the joined file, the
// manifest, the archive (a room with attachments) and the attachment list
// a part wrote, and none of the pieces or the room ranges' split state. A
// redelivery of the join afterwards, and a range that ran twice and
// reports again with its objects written anew, still end well: the job
// stays completed once and what the late range wrote goes too.
func TestCompletedSplitExportLeavesOnlyItsFiles(t *testing.T) {
	e := prepare(t)
	a := e.archiver(t, nil)
	e.run(t, a)
	for _, tc := range []struct {
		name  string
		leave func(t *testing.T, jobID string) splitJob
	}{
		{"room with attachments", e.leaveSplitRoom},
		{"records", e.leaveSplitRecords},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := tc.leave(t, fmt.Sprintf("leftovers-%d", time.Now().UnixNano()))
			seq := e.publish(t, job, "")
			e.waitOutcome(t, job.id)
			want := e.delivered(t, job)
			assert.ElementsMatch(t, want, blobtest.Keys(t, e.store, bucket, objects.JobPrefix(job.id)), "objects left under the job's prefix")

			require.NoError(t, a.HandlePart(t.Context(), seq, job.parts[len(job.parts)-1]), "the join delivered again")
			assert.ElementsMatch(t, want, e.delivered(t, job))

			// A range that ran twice writes its piece (and a room range its
			// state) again after the cleanup, and reports it once more.
			late := job.parts[1].GetFile()
			e.put(t, bucket, late.GetObjectKey(), late.GetName(), late.GetContentType(), []byte("a repeated range's piece"), 1)
			for _, name := range job.state {
				e.put(t, bucket, objects.PartPrefix(job.id, 1)+name, name, "application/octet-stream", []byte("again"), 0)
			}
			e.publish(t, job, ".again")
			e.waitOutcome(t, job.id)
			assert.ElementsMatch(t, want, e.delivered(t, job))
			assert.ElementsMatch(t, want, blobtest.Keys(t, e.store, bucket, objects.JobPrefix(job.id)), "objects left after the late report")
		})
	}
}

// withoutClean is a packager whose archiver crashes after the job's
// completion is stored and before anything is deleted.
type withoutClean struct{ p archive.Packager }

func (w withoutClean) Package(ctx context.Context, job archive.Job, parts []*exportv1.PartUploaded) ([]*exportv1.File, error) {
	return w.p.Package(ctx, job, parts)
}

func (w withoutClean) Deliver(ctx context.Context, job archive.Job, parts []*exportv1.PartUploaded) (archive.Delivery, error) {
	return w.p.(archive.Deliverer).Deliver(ctx, job, parts)
}

// TestSplitLeftoversSurviveACrashBeforeTheirCleanup: an archiver that
// stops between storing the completion and deleting the leftovers loses
// nothing delivered; the pieces stay (for retention), and the next
// handling of the job's join, the redelivery the crash brings, deletes
// them.
func TestSplitLeftoversSurviveACrashBeforeTheirCleanup(t *testing.T) {
	e := prepare(t)
	stop := e.run(t, e.archiver(t, withoutClean{archive.NewDefaultPackager(e.store, bucket)}))
	job := e.leaveSplitRoom(t, fmt.Sprintf("crashclean-%d", time.Now().UnixNano()))
	seq := e.publish(t, job, "")
	e.waitOutcome(t, job.id)
	stop()
	want := e.delivered(t, job)
	left := blobtest.Keys(t, e.store, bucket, objects.JobPrefix(job.id))
	assert.Subset(t, left, want, "everything delivered is stored")
	assert.Len(t, left, len(want)+3*len(roomSplitState)+1, "the pieces and split state stay")

	require.NoError(t, e.archiver(t, nil).HandlePart(t.Context(), seq, job.parts[len(job.parts)-1]), "the join delivered again")
	assert.ElementsMatch(t, want, e.delivered(t, job))
	assert.ElementsMatch(t, want, blobtest.Keys(t, e.store, bucket, objects.JobPrefix(job.id)))
}
