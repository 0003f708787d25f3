package roomexport_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
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
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/logtest"
)

// resumeFixture publishes a room big enough for several 5 MiB parts in
// either format (about 22 MB of JSON): messages of some 330 bytes, a
// thread every 40 messages (roots the HTML renderer remembers) and an
// edit of every 500th message published 9000 messages later, so that
// republished messages straddle every part boundary.
func resumeFixture(t testing.TB, h *harness, roomID string, n int) {
	t.Helper()
	h.putRoom(t, &sourcev1.Room{Id: roomID, Name: "resume", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	pad := strings.Repeat("lorem ipsum dolor sit amet ", 8)
	msgs := make([]*sourcev1.ChatMessage, 0, n+n/500)
	var edits []*sourcev1.ChatMessage
	for i := range n {
		m := fixtureMessage(roomID, i)
		m.Text += " " + pad
		switch i % 40 {
		case 10:
			m.ThreadCount, m.ThreadLastMessage = 1, timestamppb.New(msgTime(i+1))
		case 11:
			m.ThreadId = fmt.Sprintf("%s-m%06d", roomID, i-1)
		}
		msgs = append(msgs, m)
		if i%500 == 0 {
			e := proto.Clone(m).(*sourcev1.ChatMessage)
			e.Text = fmt.Sprintf("edited %d", i)
			e.EditedAt = timestamppb.New(msgTime(i).Add(time.Second))
			edits = append(edits, e)
		}
		if i >= 9000 && (i-9000)%500 == 0 && len(edits) > 0 {
			msgs = append(msgs, edits[0])
			edits = edits[1:]
		}
	}
	h.publishMessages(t, append(msgs, edits...)...)
}

// TestExportResumesFromCheckpoint kills an export attempt right after the
// checkpoint of its second part (as a crash or a transient failure
// would), lets the consumer redeliver the task, and checks that the
// redelivered attempt continued from the checkpoint rather than starting
// over, and that the result is the same file as a clean run's.
func TestExportResumesFromCheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 60k messages")
	}
	testExportResumesFromCheckpoint(t, 0,
		exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_HTML, exportv1.Format_FORMAT_JSONL)
}

// TestUnfilteredExportResumesFromCheckpoint is the same for a room
// exported as one too big for the spool's Bloom filters is: the resumed
// attempt's spool sorts every id record beside the ids its checkpoint
// placed.
func TestUnfilteredExportResumesFromCheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 60k messages")
	}
	testExportResumesFromCheckpoint(t, 1, exportv1.Format_FORMAT_JSON)
}

// testExportResumesFromCheckpoint runs the resume in each format, with
// roomexport.SetBloomMaxIDs(bloomMaxIDs) unless it is 0.
func testExportResumesFromCheckpoint(t *testing.T, bloomMaxIDs int, formats ...exportv1.Format) {
	const (
		roomID = "RESUME"
		n      = 60_000
	)
	var (
		crashArmed atomic.Bool
		crashed    atomic.Bool
		readsAfter atomic.Int64  // messages read by the attempt after the crash
		minAfter   atomic.Uint64 // lowest stream sequence it read
		logs       logtest.Buffer
	)
	minAfter.Store(^uint64(0))
	generated := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	h := start(t, func(o *config) {
		o.PartSize = blob.MinPartSize
		o.Now = func() time.Time { return generated } // HTML prints it
		o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		// The edits come 9,000 messages later, past a speculative window
		// of 1,000 versions: the part is the planned render, whose resume
		// reads only what follows its checkpoint (a speculative render's
		// resume reads the history again: TestSpeculativeRenderResumes).
		roomexport.SetSpeculationWindow(&o.Options, 1000, 0)
		roomexport.SetBloomMaxIDs(&o.Options, bloomMaxIDs)
		roomexport.SetTestHooks(&o.Options, func(seq uint64) {
			if crashed.Load() {
				readsAfter.Add(1)
				for cur := minAfter.Load(); seq < cur && !minAfter.CompareAndSwap(cur, seq); cur = minAfter.Load() {
				}
			}
		}, func(part int) error {
			if part == 2 && crashArmed.CompareAndSwap(true, false) {
				crashed.Store(true)
				return errors.New("injected crash after the checkpoint of part 2")
			}
			return nil
		})
	})
	resumeFixture(t, h, roomID, n)
	checkpoints, err := h.js.KeyValue(t.Context(), bus.BucketCheckpoints)
	require.NoError(t, err)

	for _, format := range formats {
		word := strings.ToLower(strings.TrimPrefix(format.String(), "FORMAT_"))
		t.Run(word, func(t *testing.T) {
			run := func(jobID string) *exportv1.File {
				task := roomTask(jobID, roomID, nil, nil)
				task.Format = format
				h.publishTask(t, jobID+".task.0", task)
				var part exportv1.PartUploaded
				h.event(t, bus.EventPart, jobID, &part)
				return part.GetFile()
			}
			start := time.Now()
			clean := run("clean-" + word)
			cleanTook := time.Since(start)
			require.Greater(t, clean.GetSize(), uint64(3*blob.MinPartSize), "at least four parts")
			assert.Empty(t, logs.Records(t, "resuming from message", "clean-"+word), "a clean run resumes nothing")

			readsAfter.Store(0)
			minAfter.Store(^uint64(0))
			crashed.Store(false)
			crashArmed.Store(true)
			jobID := "resumed-" + word
			start = time.Now()
			resumed := run(jobID)
			t.Logf("%s: %d messages, %.1f MB; clean run %v, crashed and resumed run %v",
				word, n, float64(clean.GetSize())/1e6, cleanTook.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			require.True(t, crashed.Load(), "the first attempt was killed after part 2")

			resumes := logs.Records(t, "resuming from message", jobID)
			require.Len(t, resumes, 1)
			assert.Equal(t, jobID, resumes[0]["job_id"])
			from := uint64(resumes[0]["stream_seq"].(float64))
			assert.Equal(t, fmt.Sprintf("resuming from message %d", from), resumes[0]["msg"])
			assert.Equal(t, float64(2), resumes[0]["parts_done"])
			assert.Greater(t, resumes[0]["records_done"].(float64), float64(n/10), "two parts' worth of messages were kept")
			spooled := logs.Records(t, "history spooled", jobID)
			require.NotEmpty(t, spooled)
			for _, r := range spooled {
				assert.Equal(t, bloomMaxIDs == 0, r["filtered"], "whether the spool kept its Bloom filters")
			}

			// What a user checks: the same file, byte for byte.
			assert.Equal(t, clean.GetSha256(), resumed.GetSha256())
			assert.Equal(t, clean.GetSize(), resumed.GetSize())
			assert.Equal(t, clean.GetRecords(), resumed.GetRecords())
			sum := sha256.Sum256(h.download(t, resumed.GetObjectKey()))
			assert.Equal(t, clean.GetSha256(), hex.EncodeToString(sum[:]), "the stored object is the one announced")

			// The saved work: the redelivered attempt did not read the
			// messages the checkpoint covers.
			assert.Equal(t, from, minAfter.Load(), "the resumed replay starts after the checkpoint")
			assert.Less(t, readsAfter.Load(), int64(n), "fewer messages read than the room holds")
			t.Logf("%s: resumed at stream sequence %d; the redelivered attempt read %d of %d messages",
				word, from, readsAfter.Load(), n+n/500)

			_, err := checkpoints.Get(t.Context(), jobID+".0")
			assert.ErrorIs(t, err, jetstream.ErrKeyNotFound, "the checkpoint is deleted once the part is announced")
			ups, err := h.store.ListIncompleteUploads(t.Context(), bucket, "jobs/")
			require.NoError(t, err)
			assert.Empty(t, ups, "no unfinished multipart upload is left")
			assert.Equal(t, []string{resumed.GetObjectKey()}, h.objects(t, jobID))
		})
	}
}

// TestExportStaleCheckpointStartsOver checks the fallback: when the upload
// a checkpoint names is gone (a sweeper aborted it), the next attempt
// starts the part over and still produces the clean run's bytes.
func TestExportStaleCheckpointStartsOver(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 40k messages")
	}
	var crash atomic.Bool
	var logs logtest.Buffer
	h := start(t, func(o *config) {
		o.PartSize = blob.MinPartSize
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		roomexport.SetTestHooks(&o.Options, nil, func(part int) error {
			if crash.Load() {
				return errors.New("injected crash")
			}
			return nil
		})
	})
	resumeFixture(t, h, "STALE", 40_000)
	ctx := t.Context()

	require.NoError(t, h.exp.Export(ctx, roomTask("stale-clean", "STALE", nil, nil)))
	var clean exportv1.PartUploaded
	h.event(t, bus.EventPart, "stale-clean", &clean)

	crash.Store(true)
	task := roomTask("stale", "STALE", nil, nil)
	require.Error(t, h.exp.Export(ctx, task))
	ups, err := h.store.ListIncompleteUploads(ctx, bucket, "jobs/stale/")
	require.NoError(t, err)
	require.Len(t, ups, 1, "the crashed attempt's upload waits for its resume")
	// A sweeper (or an operator) aborts it.
	_, err = h.store.AbortIncompleteUploads(ctx, bucket, ups[0].Key)
	require.NoError(t, err)

	crash.Store(false)
	require.NoError(t, h.exp.Export(ctx, task))
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, "stale", &part)
	assert.Equal(t, clean.GetFile().GetSha256(), part.GetFile().GetSha256())
	assert.Empty(t, logs.Records(t, "resuming from message", ""))
	stale := logs.Records(t, "checkpoint not usable", "")
	require.Len(t, stale, 1)
	assert.Equal(t, "upload gone", stale[0]["reason"])
	ups, err = h.store.ListIncompleteUploads(ctx, bucket, "jobs/")
	require.NoError(t, err)
	assert.Empty(t, ups)
}

// TestCSVGzipExportResumesFromCheckpoint kills a csv.gz export after the
// checkpoint of its first part and checks that the redelivered attempt
// continues it into the same bytes as a clean run: each part ends its
// gzip member, so the state at a cut fits in a checkpoint, and the
// stored file reads back as one CSV.
func TestCSVGzipExportResumesFromCheckpoint(t *testing.T) {
	if testing.Short() || roomexport.RaceEnabled {
		// Under the race detector gzip makes this minutes; the resumed
		// path's goroutines are TestExportResumesFromCheckpoint's, and
		// make test-unit runs this one without -race (NORACE_TESTS).
		t.Skip("publishes and compresses 45k messages of 500 bytes")
	}
	const n = 45_000
	var (
		crashArmed atomic.Bool
		crashed    atomic.Bool
		logs       logtest.Buffer
	)
	h := start(t, func(o *config) {
		o.PartSize = blob.MinPartSize
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		roomexport.SetTestHooks(&o.Options, nil, func(part int) error {
			if part == 1 && crashArmed.CompareAndSwap(true, false) {
				crashed.Store(true)
				return errors.New("injected crash after the checkpoint of part 1")
			}
			return nil
		})
	})
	h.putRoom(t, &sourcev1.Room{Id: "GZ", Name: "gz"})
	msgs := bigMessages("GZ", n)
	edit := proto.CloneOf(msgs[5])
	edit.Text = "edited, \"again\""
	h.publishMessages(t, append(msgs, edit)...) // planned, hence checkpointed
	run := func(jobID string) *exportv1.File {
		task := roomTask(jobID, "GZ", nil, nil)
		task.Format = exportv1.Format_FORMAT_CSV
		h.publishTask(t, jobID+".task.0", task)
		var part exportv1.PartUploaded
		h.event(t, bus.EventPart, jobID, &part)
		return part.GetFile()
	}
	clean := run("gz-clean")
	require.Greater(t, clean.GetSize(), uint64(2*blob.MinPartSize), "at least three parts")
	crashArmed.Store(true)
	resumed := run("gz-resumed")
	require.True(t, crashed.Load())
	require.Len(t, logs.Records(t, "resuming from message", "gz-resumed"), 1)
	assert.Equal(t, clean.GetSha256(), resumed.GetSha256(), "the same bytes as a clean run")
	assert.Equal(t, clean.GetSize(), resumed.GetSize())

	rows := readCSVGzip(t, h.download(t, resumed.GetObjectKey()))
	require.Len(t, rows, n+1)
	assert.Equal(t, roomexport.CSVColumns, rows[0])
	assert.Equal(t, "edited, \"again\"", rows[6][5], "the last version at its first position")
	assert.Equal(t, msgs[n-1].GetId(), rows[n][0])
}
