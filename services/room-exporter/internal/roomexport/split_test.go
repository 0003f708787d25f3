package roomexport_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
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

var splitFormats = []exportv1.Format{exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_JSONL, exportv1.Format_FORMAT_CSV, exportv1.Format_FORMAT_HTML}

// roomRangeTasks splits task into n range parts, as the gateway's
// planner does: even slices of the sequences between the room subject's
// first and last message.
func (h *harness) roomRangeTasks(t *testing.T, task *exportv1.ExportTask, n int) []*exportv1.ExportTask {
	t.Helper()
	subject, err := bus.ChatSubject(task.GetRoom().GetRoomId())
	require.NoError(t, err)
	st, err := h.js.Stream(t.Context(), bus.StreamChatMessages)
	require.NoError(t, err)
	first, err := st.GetMsg(t.Context(), 1, jetstream.WithGetMsgSubject(subject))
	require.NoError(t, err)
	last, err := st.GetLastMsgForSubject(t.Context(), subject)
	require.NoError(t, err)
	span := last.Sequence - first.Sequence + 1
	out := make([]*exportv1.ExportTask, n)
	for i := range out {
		pt := proto.CloneOf(task)
		pt.Part, pt.PartsTotal = uint32(i), uint32(n)
		pt.RoomRange = &exportv1.RecordRange{
			FirstSeq: first.Sequence + span*uint64(i)/uint64(n),
			LastSeq:  first.Sequence + span*uint64(i+1)/uint64(n) - 1,
		}
		out[i] = pt
	}
	return out
}

// splitParts waits for the announcement of each of the job's n parts and
// returns the latest of each.
func (h *harness) splitParts(t *testing.T, jobID string, n int) []*exportv1.PartUploaded {
	t.Helper()
	subject, err := bus.StatusSubject(bus.EventPart, jobID)
	require.NoError(t, err)
	st, err := h.js.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	out := make([]*exportv1.PartUploaded, n)
	// One consumer for every poll: a new one per poll would pile up
	// until the server refuses more.
	cons, err := st.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for {
			msgs, err := cons.FetchNoWait(100)
			if !assert.NoError(c, err) {
				return
			}
			got := 0
			for msg := range msgs.Messages() {
				got++
				var p exportv1.PartUploaded
				if assert.NoError(c, proto.Unmarshal(msg.Data(), &p)) && int(p.GetPart()) < n {
					out[p.GetPart()] = &p
				}
			}
			if got == 0 {
				break
			}
		}
		for i, p := range out {
			assert.NotNil(c, p, "part %d announced", i)
		}
	}, 60*time.Second, 50*time.Millisecond)
	return out
}

// joinRoomPieces concatenates the pieces as the archiver's Joiner does
// for a room (ClosingLead): a piece after the first leaves out its lead
// when no earlier piece held a message and it holds one or is the last.
func (h *harness) joinRoomPieces(t *testing.T, parts []*exportv1.PartUploaded) []byte {
	t.Helper()
	var out []byte
	rows := false
	for i, p := range parts {
		require.NotNil(t, p.GetPiece(), "part %d is a piece", i)
		b := h.download(t, p.GetFile().GetObjectKey())
		if i > 0 && !rows && (p.GetFile().GetRecords() > 0 || i == len(parts)-1) {
			b = b[p.GetPiece().GetLead():]
		}
		rows = rows || p.GetFile().GetRecords() > 0
		out = append(out, b...)
	}
	return out
}

// plainDocument is the document's bytes as a reader sees them: a csv.gz
// file inflated (its pieces are whole gzip members, cut elsewhere than
// the unsplit file's members), any other as it is.
func plainDocument(t *testing.T, format exportv1.Format, data []byte) []byte {
	t.Helper()
	if format != exportv1.Format_FORMAT_CSV {
		return data
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	require.NoError(t, err)
	plain, err := io.ReadAll(zr)
	require.NoError(t, err)
	return plain
}

// splitRig is a room exporter whose log the tests read.
type splitRig struct {
	*harness
	logs *logtest.Buffer
	// crash, when set, is called once crashAfter more messages were read.
	crash      atomic.Pointer[context.CancelFunc]
	crashAfter atomic.Int64
}

// newSplitRig starts the rig; configure, when given, changes the
// exporter's options further.
func newSplitRig(t *testing.T, configure ...func(*roomexport.Options)) *splitRig {
	t.Helper()
	generated := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	rig := &splitRig{logs: new(logtest.Buffer)}
	rig.harness = start(t, func(o *config) {
		o.PartSize = blob.MinPartSize
		o.Now = func() time.Time { return generated }
		o.Logger = slog.New(slog.NewJSONHandler(rig.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		roomexport.SetTestHooks(&o.Options, func(uint64) {
			if rig.crashAfter.Add(-1) == 0 {
				if c := rig.crash.Load(); c != nil {
					(*c)()
				}
			}
		}, nil)
		for _, c := range configure {
			c(&o.Options)
		}
	})
	return rig
}

// unsplit exports task as one part and returns the document.
func (rig *splitRig) unsplit(t *testing.T, task *exportv1.ExportTask) ([]byte, *exportv1.File) {
	t.Helper()
	require.NoError(t, rig.exp.Export(t.Context(), task))
	var part exportv1.PartUploaded
	rig.event(t, bus.EventPart, task.GetJobId(), &part)
	return rig.download(t, part.GetFile().GetObjectKey()), part.GetFile()
}

// split runs the index stage of task's n ranges, last range first, and
// returns the joined pieces the render stage announced.
func (rig *splitRig) split(t *testing.T, task *exportv1.ExportTask, n int) ([]byte, []*exportv1.PartUploaded) {
	t.Helper()
	tasks := rig.roomRangeTasks(t, task, n)
	for i := n - 1; i >= 0; i-- {
		require.NoError(t, rig.exp.Export(t.Context(), tasks[i]))
	}
	parts := rig.splitParts(t, task.GetJobId(), n)
	return rig.joinRoomPieces(t, parts), parts
}

// rendered reports, per part of job, whether its render stage rendered
// the range again (true) or announced the index stage's piece.
func (rig *splitRig) rendered(t *testing.T, jobID string, n int) []bool {
	t.Helper()
	out := make([]bool, n)
	for _, r := range rig.logs.Records(t, "part uploaded", jobID) {
		if p, ok := r["part"].(float64); ok && int(p) < n {
			out[int(p)], _ = r["rendered"].(bool)
		}
	}
	return out
}

// compareSplit checks that the split export of task in every splittable
// format is the unsplit one, and returns which ranges rendered again.
func (rig *splitRig) compareSplit(t *testing.T, name string, task func(jobID string) *exportv1.ExportTask, n int) map[exportv1.Format][]bool {
	t.Helper()
	out := map[exportv1.Format][]bool{}
	for _, format := range splitFormats {
		word := strings.ToLower(strings.TrimPrefix(format.String(), "FORMAT_"))
		t.Run(name+" "+word, func(t *testing.T) {
			id := strings.ReplaceAll(name, " ", "-") + "-" + word
			whole := task(id + "-whole")
			whole.Format = format
			want, wf := rig.unsplit(t, whole)
			parted := task(id + "-split")
			parted.Format = format
			got, parts := rig.split(t, parted, n)
			assert.Equal(t, string(plainDocument(t, format, want)), string(plainDocument(t, format, got)),
				"the joined pieces are the unsplit document")
			if format != exportv1.Format_FORMAT_CSV {
				assert.True(t, bytes.Equal(want, got), "byte for byte")
			}
			var records uint64
			for _, p := range parts {
				records += p.GetFile().GetRecords()
				assert.Equal(t, wf.GetName(), p.GetFile().GetName())
			}
			assert.Equal(t, wf.GetRecords(), records, "the pieces' messages add up")
			out[format] = rig.rendered(t, parted.GetJobId(), n)
		})
	}
	return out
}

// edited is version v of m: a later publication of its id.
func edited(m *sourcev1.ChatMessage, v int) *sourcev1.ChatMessage {
	e := proto.CloneOf(m)
	e.Text = fmt.Sprintf("%s (edit %d)", m.GetText(), v)
	e.EditedAt = timestamppb.New(m.GetTs().AsTime().Add(time.Duration(v) * time.Hour))
	e.EditedBy = m.GetUser()
	return e
}

// TestSplitRoomExportIsTheUnsplitDocument: the pieces of a room export
// split into ranges of the chat stream join into the document one
// exporter writes over the whole room, in JSON, JSON lines, csv.gz and
// HTML:
// with no republished id (then no range is read twice), with edits
// crossing every range boundary, with an id republished in three ranges,
// with a range holding none of the room's messages, within a date range.
func TestSplitRoomExportIsTheUnsplitDocument(t *testing.T) {
	rig := newSplitRig(t)
	other := func(n int) []*sourcev1.ChatMessage { return roomMessages("OTHER", n) }

	t.Run("no republished id", func(t *testing.T) {
		rig.putRoom(t, &sourcev1.Room{Id: "PLAIN", Name: "plain", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		msgs := append(hostileMessages("PLAIN"), roomMessages("PLAIN", 300)...)
		for i, m := range msgs {
			rig.publishMessages(t, m)
			if i%7 == 0 {
				rig.publishMessages(t, other(1)...) // another room's messages between
			}
		}
		got := rig.compareSplit(t, "plain", func(id string) *exportv1.ExportTask { return roomTask(id, "PLAIN", nil, nil) }, 3)
		for format, rendered := range got {
			assert.Equal(t, []bool{false, false, false}, rendered, "%s: no range is read again", format)
		}
	})

	t.Run("edits crossing every boundary", func(t *testing.T) {
		rig.putRoom(t, &sourcev1.Room{Id: "EDITS", Name: "edits", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		msgs := roomMessages("EDITS", 400)
		var stream []*sourcev1.ChatMessage
		for i, m := range msgs {
			stream = append(stream, m)
			// Message i-150 is edited after message i: every third
			// message's edit lands some 150 messages later, across the
			// boundaries of 4 ranges; some are edited inside their range
			// too.
			if i >= 150 && i%3 == 0 {
				stream = append(stream, edited(msgs[i-150], 1))
			}
			if i%50 == 7 {
				stream = append(stream, edited(m, 2))
			}
		}
		rig.publishMessages(t, stream...)
		got := rig.compareSplit(t, "edits", func(id string) *exportv1.ExportTask { return roomTask(id, "EDITS", nil, nil) }, 4)
		for format, rendered := range got {
			assert.Contains(t, rendered, true, "%s: ranges with crossing edits are rendered again", format)
		}
		rig.compareSplit(t, "edits in a date range", func(id string) *exportv1.ExportTask {
			return roomTask(id, "EDITS", at(120), at(330))
		}, 4)
	})

	t.Run("an id republished in three ranges", func(t *testing.T) {
		rig.putRoom(t, &sourcev1.Room{Id: "THREE", Name: "three", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		msgs := roomMessages("THREE", 90)
		var stream []*sourcev1.ChatMessage
		for i, m := range msgs {
			stream = append(stream, m)
			switch i {
			case 40, 70, 89:
				stream = append(stream, edited(msgs[0], i)) // versions in ranges 1 and 2 (and 2 again)
			case 50:
				stream = append(stream, edited(msgs[45], i)) // inside range 1
			}
		}
		rig.publishMessages(t, stream...)
		got := rig.compareSplit(t, "three", func(id string) *exportv1.ExportTask { return roomTask(id, "THREE", nil, nil) }, 3)
		for format, rendered := range got {
			assert.Equal(t, []bool{true, true, true}, rendered, "%s", format)
		}
	})

	t.Run("a range without a message of the room", func(t *testing.T) {
		rig.putRoom(t, &sourcev1.Room{Id: "GAPS", Name: "gaps", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		msgs := roomMessages("GAPS", 20)
		rig.publishMessages(t, msgs[:10]...)
		rig.publishMessages(t, other(600)...)
		rig.publishMessages(t, msgs[10:]...)
		rig.publishMessages(t, edited(msgs[2], 1))
		rig.compareSplit(t, "gaps", func(id string) *exportv1.ExportTask { return roomTask(id, "GAPS", nil, nil) }, 3)
		// Nothing in range at all: the header of the first piece, the
		// closing bytes of the last.
		rig.compareSplit(t, "gaps empty", func(id string) *exportv1.ExportTask {
			from := msgTime(100_000)
			return roomTask(id, "GAPS", &from, nil)
		}, 3)
		// Only the last range's messages: the first pieces are empty, the
		// last leaves out its lead.
		rig.compareSplit(t, "gaps last only", func(id string) *exportv1.ExportTask { return roomTask(id, "GAPS", at(15), nil) }, 3)
	})

	t.Run("a range retried after a crash", func(t *testing.T) {
		rig.putRoom(t, &sourcev1.Room{Id: "CRASH", Name: "crash", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		msgs := threadedMessages("CRASH", 300)
		stream := append([]*sourcev1.ChatMessage{}, msgs...)
		stream = append(stream, edited(msgs[10], 1), edited(msgs[150], 1))
		rig.publishMessages(t, stream...)
		for _, format := range []exportv1.Format{exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_HTML} {
			word := strings.ToLower(strings.TrimPrefix(format.String(), "FORMAT_"))
			t.Run(word, func(t *testing.T) {
				task := func(id string) *exportv1.ExportTask {
					rt := roomTask(id, "CRASH", nil, nil)
					rt.Format = format
					return rt
				}
				jobID := "crash-split-" + word
				want, _ := rig.unsplit(t, task("crash-whole-"+word))
				tasks := rig.roomRangeTasks(t, task(jobID), 3)
				require.NoError(t, rig.exp.Export(t.Context(), tasks[0]))
				require.NoError(t, rig.exp.Export(t.Context(), tasks[2]))
				ctx, cancel := context.WithCancel(t.Context())
				rig.crash.Store(&cancel)
				rig.crashAfter.Store(30)
				require.Error(t, rig.exp.Export(ctx, tasks[1]), "the first attempt crashes")
				rig.crash.Store(nil)
				assert.Zero(t, rig.eventCount(t, bus.EventPart, jobID), "nothing announced before every range is indexed")
				require.NoError(t, rig.exp.Export(t.Context(), tasks[1]))
				parts := rig.splitParts(t, jobID, 3)
				assert.Equal(t, string(want), string(rig.joinRoomPieces(t, parts)), "joined after the retry")
			})
		}
	})
}

// TestCanceledSplitRoomExportLeavesNothing: a split room export canceled
// between its ranges' index stages leaves no piece, table, report or
// (HTML) root list, and announces no part.
func TestCanceledSplitRoomExportLeavesNothing(t *testing.T) {
	rig := newSplitRig(t)
	rig.putRoom(t, &sourcev1.Room{Id: "CANCEL", Name: "cancel", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	msgs := threadedMessages("CANCEL", 200)
	rig.publishMessages(t, append(msgs, edited(msgs[1], 1))...)
	for _, format := range []exportv1.Format{exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_HTML} {
		word := strings.ToLower(strings.TrimPrefix(format.String(), "FORMAT_"))
		t.Run(word, func(t *testing.T) {
			jobID := "cancel-split-" + word
			task := roomTask(jobID, "CANCEL", nil, nil)
			task.Format = format
			tasks := rig.roomRangeTasks(t, task, 3)
			rig.putJob(t, jobID, exportv1.JobState_JOB_STATE_PROCESSING)
			require.NoError(t, rig.exp.Export(t.Context(), tasks[0]))
			require.NoError(t, rig.exp.Export(t.Context(), tasks[2]))
			require.NotEmpty(t, rig.objects(t, jobID), "two ranges indexed")
			rig.putJob(t, jobID, exportv1.JobState_JOB_STATE_CANCELED)
			require.NoError(t, rig.exp.Export(t.Context(), tasks[1]))
			require.Eventually(t, func() bool { return len(rig.objects(t, jobID)) == 0 }, 10*time.Second, 20*time.Millisecond,
				"every object of the job deleted")
			ups, err := rig.store.ListIncompleteUploads(t.Context(), bucket, "jobs/"+jobID+"/")
			require.NoError(t, err)
			assert.Empty(t, ups, "no multipart upload is left")
			assert.Zero(t, rig.eventCount(t, bus.EventPart, jobID), "no part announced")
		})
	}
}

// TestRoomRangeTasksThatCannotBeSplitAreRejected: the exporter refuses a
// hand-made range task it could not join correctly.
func TestRoomRangeTasksThatCannotBeSplitAreRejected(t *testing.T) {
	rig := newSplitRig(t)
	rig.putRoom(t, &sourcev1.Room{Id: "REJ", Name: "rej", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	for name, edit := range map[string]func(*exportv1.ExportTask){
		"pdf":         func(t *exportv1.ExportTask) { t.Format = exportv1.Format_FORMAT_PDF },
		"one part":    func(t *exportv1.ExportTask) { t.PartsTotal = 1 },
		"empty range": func(t *exportv1.ExportTask) { t.RoomRange.LastSeq = 0 },
		"render only": func(t *exportv1.ExportTask) { t.RoomRange, t.RoomRender = nil, true },
	} {
		t.Run(name, func(t *testing.T) {
			task := roomTask("rej-"+strings.ReplaceAll(name, " ", "-"), "REJ", nil, nil)
			task.PartsTotal, task.RoomRange = 2, &exportv1.RecordRange{FirstSeq: 1, LastSeq: 10}
			edit(task)
			err := rig.exp.Export(t.Context(), task)
			require.Error(t, err)
			assert.True(t, bus.IsPermanent(err), "rejected for good: %v", err)
		})
	}
}

// threadedMessages is roomMessages with threads: every tenth message
// from the tenth on is a thread root, and two in ten reply to a root up
// to some 80 messages back, so replies land in other ranges than their
// roots.
func threadedMessages(roomID string, n int) []*sourcev1.ChatMessage {
	msgs := roomMessages(roomID, n)
	for i := 10; i < n; i++ {
		switch i % 10 {
		case 5:
			msgs[i].ThreadCount = 2
			msgs[i].ThreadLastMessage = timestamppb.New(msgTime(i + 40))
		case 3, 8:
			root := i - i%10 + 5 - 10*(i/10%8)
			if root < 10 {
				root += 10 * (i / 10 % 8)
			}
			if root < i {
				msgs[i].ThreadId = msgs[root].GetId()
			}
		}
	}
	return msgs
}

// splitHTML exports task unsplit and split into n ranges as HTML, checks
// that the joined pieces are the unsplit page byte for byte, and returns
// the page and which ranges rendered again.
func (rig *splitRig) splitHTML(t *testing.T, id string, task func(jobID string) *exportv1.ExportTask, n int) (string, []bool) {
	t.Helper()
	whole := task(id + "-whole")
	whole.Format = exportv1.Format_FORMAT_HTML
	want, _ := rig.unsplit(t, whole)
	parted := task(id + "-split")
	parted.Format = exportv1.Format_FORMAT_HTML
	got, _ := rig.split(t, parted, n)
	require.Equal(t, string(want), string(got), "the joined pieces are the unsplit page")
	return string(got), rig.rendered(t, parted.GetJobId(), n)
}

// TestSplitHTMLRoomExportIsTheUnsplitPage: a split HTML room export is
// the page one exporter writes, byte for byte, where the page carries
// context from one range into the next: a reply names its thread root by
// an excerpt when the root is in an earlier range (in the root's last
// version, which may be in a later range), up to the number of roots the
// page keeps; the footer counts every range's messages.
func TestSplitHTMLRoomExportIsTheUnsplitPage(t *testing.T) {
	rig := newSplitRig(t)
	roomTask := func(roomID string, from, to *time.Time) func(string) *exportv1.ExportTask {
		return func(id string) *exportv1.ExportTask { return roomTask(id, roomID, from, to) }
	}

	t.Run("threads across ranges", func(t *testing.T) {
		rig.putRoom(t, &sourcev1.Room{Id: "THREADS", Name: "threads", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		rig.publishMessages(t, threadedMessages("THREADS", 400)...)
		page, rendered := rig.splitHTML(t, "threads", roomTask("THREADS", nil, nil), 4)
		// Message 308 (range 3) replies to 245 (range 2).
		assert.Contains(t, page, `<a href="#m-THREADS-m000245">message 245 in THREADS`, "a reply names a root of another range")
		assert.NotContains(t, page, "the thread's first message", "every root is kept")
		assert.Contains(t, page, "<footer>400 messages.", "the footer counts every range")
		assert.Equal(t, []bool{false, false, false, false}, rendered, "no range is read again: excerpts are filled into the pieces")

		page, _ = rig.splitHTML(t, "threads-dates", roomTask("THREADS", at(120), at(330)), 4)
		assert.Contains(t, page, "<footer>211 messages.")
	})

	t.Run("threads without replies across ranges", func(t *testing.T) {
		rig.putRoom(t, &sourcev1.Room{Id: "LOCAL", Name: "local", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		msgs := roomMessages("LOCAL", 300)
		for i := 10; i < len(msgs); i += 10 {
			msgs[i].ThreadCount = 1
			msgs[i+1].ThreadId = msgs[i].GetId()
		}
		// A reply to a root that is in no range.
		msgs[200].ThreadId = "LOCAL-gone"
		rig.publishMessages(t, msgs...)
		page, rendered := rig.splitHTML(t, "local", roomTask("LOCAL", nil, nil), 3)
		assert.Contains(t, page, "<footer>300 messages.")
		assert.Equal(t, []bool{false, false, false}, rendered, "no range is read again; the last one gets the footer")
	})

	t.Run("roots edited in later ranges", func(t *testing.T) {
		rig.putRoom(t, &sourcev1.Room{Id: "REROOT", Name: "reroot", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		msgs := threadedMessages("REROOT", 300)
		var stream []*sourcev1.ChatMessage
		for i, m := range msgs {
			stream = append(stream, m)
			switch {
			case i >= 100 && i%10 == 0:
				// Root i-85 gets a new text, mostly in a later range.
				stream = append(stream, edited(msgs[i-85], 1))
			case i == 251:
				// Message 12 becomes a root only in a later range, and
				// message 252 replies to it.
				e := edited(msgs[12], 2)
				e.ThreadCount = 1
				stream = append(stream, e)
				msgs[252].ThreadId = msgs[12].GetId()
			}
		}
		rig.publishMessages(t, stream...)
		page, rendered := rig.splitHTML(t, "reroot", roomTask("REROOT", nil, nil), 3)
		assert.Contains(t, page, `<a href="#m-REROOT-m000165">message 165 in REROOT: the quick brown fox jumps over the lazy dog (edit 1)`,
			"a reply names its root in the root's last version")
		assert.Contains(t, page, `<a href="#m-REROOT-m000012">message 12 in REROOT`, "a root made by a later version is named")
		assert.Contains(t, page, "<footer>300 messages.")
		assert.Equal(t, []bool{true, true, true}, rendered)
	})

	t.Run("ranges rendered from the spool", func(t *testing.T) {
		// A window of 8 versions gives up the speculative render of every
		// range whose edits come later than that: the index stage renders
		// again from the spool, and records its roots again.
		rig := newSplitRig(t, func(o *roomexport.Options) { roomexport.SetSpeculationWindow(o, 8, 0) })
		rig.putRoom(t, &sourcev1.Room{Id: "SPOOL", Name: "spool", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		msgs := threadedMessages("SPOOL", 300)
		var stream []*sourcev1.ChatMessage
		for i, m := range msgs {
			stream = append(stream, m)
			if i%100 == 60 {
				stream = append(stream, edited(msgs[i-40], 1)) // inside the range, past the window
			}
		}
		rig.publishMessages(t, stream...)
		page, _ := rig.splitHTML(t, "spool", roomTask("SPOOL", nil, nil), 3)
		assert.Contains(t, page, "<footer>300 messages.")
	})

	t.Run("more roots than the page keeps", func(t *testing.T) {
		rig.putRoom(t, &sourcev1.Room{Id: "MANY", Name: "many", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		// Every message a root; from message 3000 on, every sixth replies
		// to the root about MaxThreadRoots roots back, either side of the
		// last one the page still keeps. The second range starts before
		// message 3000, so its replies' roots are the first range's.
		var msgs []*sourcev1.ChatMessage
		roots := 0
		for i := 0; len(msgs) < 5000; i++ {
			m := fixtureMessage("MANY", i)
			m.SystemType = ""
			if roots >= 3000 && i%6 == 0 {
				m.ThreadId = fmt.Sprintf("MANY-m%06d", rootIndex(msgs, roots-roottarget(i)))
			} else {
				m.ThreadCount = 1
				roots++
			}
			msgs = append(msgs, m)
		}
		rig.publishMessages(t, msgs...)
		page, rendered := rig.splitHTML(t, "many", roomTask("MANY", nil, nil), 2)
		assert.Contains(t, page, "the thread's first message", "some roots are too far back")
		assert.Contains(t, page, "<footer>5000 messages.")
		assert.Equal(t, []bool{false, false}, rendered)
	})
}

// roottarget is how many roots back the reply at message i points:
// around roomexport.MaxThreadRoots, either side of the window's edge.
func roottarget(i int) int { return roomexport.MaxThreadRoots - 4 + i/6%9 }

// rootIndex is the message index of the k-th root (0-based) of msgs.
func rootIndex(msgs []*sourcev1.ChatMessage, k int) int {
	for i, m := range msgs {
		if m.GetThreadCount() > 0 {
			if k == 0 {
				return i
			}
			k--
		}
	}
	return 0
}
