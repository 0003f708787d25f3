package roomexport_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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

var speculationFormats = []exportv1.Format{
	exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_HTML, exportv1.Format_FORMAT_JSONL, exportv1.Format_FORMAT_CSV,
}

// speculationRig is two exporters on the same servers' data: one as
// shipped (speculative render), one that always renders from the spool
// after the read (the planned render, the reference).
type speculationRig struct {
	spec, planned *harness
	logs          *logtest.Buffer
}

// newSpeculationRig starts the rig; seams, when not nil, sets the
// speculative exporter's test seams (SetSpeculation, SetSpeculationWindow).
func newSpeculationRig(t *testing.T, seams func(o *roomexport.Options), publish func(h *harness)) *speculationRig {
	t.Helper()
	generated := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	rig := &speculationRig{logs: new(logtest.Buffer)}
	rig.spec = start(t, func(o *config) {
		o.PartSize = blob.MinPartSize
		o.Now = func() time.Time { return generated }
		o.Logger = slog.New(slog.NewJSONHandler(rig.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if seams != nil {
			seams(&o.Options)
		}
	})
	rig.planned = start(t, func(o *config) {
		o.PartSize = blob.MinPartSize
		o.Now = func() time.Time { return generated }
		roomexport.SetSpeculation(&o.Options, true, 0)
	})
	publish(rig.spec)
	publish(rig.planned)
	return rig
}

// export runs task on h and returns the announced file after checking
// that the stored object is that file and that nothing else of the job is
// left in MinIO: no other object, no multipart upload.
func exportChecked(t *testing.T, h *harness, task *exportv1.ExportTask) *exportv1.File {
	t.Helper()
	require.NoError(t, h.exp.Export(t.Context(), task))
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, task.GetJobId(), &part)
	f := part.GetFile()
	sum := sha256.Sum256(h.download(t, f.GetObjectKey()))
	assert.Equal(t, f.GetSha256(), hex.EncodeToString(sum[:]), "the stored object is the one announced")
	assert.Equal(t, []string{f.GetObjectKey()}, h.objects(t, task.GetJobId()), "only the document is stored")
	ups, err := h.store.ListIncompleteUploads(t.Context(), bucket, "jobs/")
	require.NoError(t, err)
	assert.Empty(t, ups, "no multipart upload is left")
	return f
}

// compare exports the task in every format with both exporters and
// checks the same bytes, and which path the speculative one took; it
// returns the speculative documents by format.
func (rig *speculationRig) compare(t *testing.T, jobID string, task func(jobID string) *exportv1.ExportTask, speculative bool) map[exportv1.Format][]byte {
	t.Helper()
	docs := make(map[exportv1.Format][]byte)
	for _, format := range speculationFormats {
		word := strings.ToLower(strings.TrimPrefix(format.String(), "FORMAT_"))
		t.Run(word, func(t *testing.T) {
			id := jobID + "-" + word
			tk := task(id)
			tk.Format = format
			got := exportChecked(t, rig.spec, tk)
			tk = task(id)
			tk.Format = format
			want := exportChecked(t, rig.planned, tk)
			assert.Equal(t, want.GetSha256(), got.GetSha256(), "the same bytes as the planned render")
			assert.Equal(t, want.GetSize(), got.GetSize())
			assert.Equal(t, want.GetRecords(), got.GetRecords())
			docs[format] = rig.spec.download(t, got.GetObjectKey())

			spooled := rig.logs.Records(t, "history spooled", id)
			require.Len(t, spooled, 1)
			assert.Equal(t, speculative, spooled[0]["speculative"], "which path rendered the part")
		})
	}
	return docs
}

// TestSpeculativeRenderIsThePlannedRender exports a room in which no id
// was published twice: the part is rendered while the history is read,
// and its bytes are the planned render's in every format, with and
// without a range, over several parts.
func TestSpeculativeRenderIsThePlannedRender(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 30k messages twice")
	}
	n := raceMessages(30_000)
	rig := newSpeculationRig(t, nil, func(h *harness) {
		h.putRoom(t, &sourcev1.Room{Id: "SPEC", Name: "spec", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		msgs := append(hostileMessages("SPEC"), bigMessages("SPEC", n)...)
		h.publishMessages(t, msgs...)
	})
	rig.compare(t, "whole", func(id string) *exportv1.ExportTask { return roomTask(id, "SPEC", nil, nil) }, true)
	rig.compare(t, "range", func(id string) *exportv1.ExportTask { return roomTask(id, "SPEC", at(100), at(20_000)) }, true)
}

// TestAbandonedSpeculationLeavesNothing exports rooms with ids
// republished after their first version left the window (of 20 versions
// here). Found during the read (an edit a little later) or only at its
// end (the table of recent ids is too small to see it: the edit comes
// after several parts were uploaded), the speculative render is
// abandoned, its upload aborted, and the part is the planned render, with
// nothing else left in MinIO.
func TestAbandonedSpeculationLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 30k messages four times")
	}
	n := raceMessages(30_000)
	publish := func(h *harness) {
		h.putRoom(t, &sourcev1.Room{Id: "EDITS", Name: "edits", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		msgs := bigMessages("EDITS", n)
		// One edit 50 messages later, and one of the first message at the
		// very end, after every part of the speculative upload.
		near := proto.CloneOf(msgs[10])
		near.Text, near.EditedAt = "edited soon", timestamppb.New(msgTime(10).Add(time.Second))
		late := proto.CloneOf(msgs[0])
		late.Text, late.EditedAt = "edited at last", timestamppb.New(msgTime(0).Add(time.Hour))
		out := append([]*sourcev1.ChatMessage{}, msgs[:60]...)
		out = append(out, near)
		out = append(out, msgs[60:]...)
		h.publishMessages(t, append(out, late)...)
	}
	for _, tc := range []struct {
		name   string
		recent int
	}{{"found during the read", 0}, {"found at the end", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newSpeculationRig(t, func(o *roomexport.Options) {
				roomexport.SetSpeculation(o, false, tc.recent)
				roomexport.SetSpeculationWindow(o, 20, 0)
			}, publish)
			rig.compare(t, "edits", func(id string) *exportv1.ExportTask { return roomTask(id, "EDITS", nil, nil) }, false)
		})
	}
}

// republication is a later version of msgs[of], published right after
// msgs[after] (and after the republications listed before it there).
type republication struct {
	of, after int
	change    func(m *sourcev1.ChatMessage)
}

// edit republishes msgs[of] after msgs[after] with a new text, as an edit.
func edit(of, after int) republication {
	return republication{of, after, func(m *sourcev1.ChatMessage) {
		m.Text = fmt.Sprintf("message %d, edited after %d", of, after)
		m.EditedAt = timestamppb.New(msgTime(after))
		m.EditedBy = &sourcev1.UserRef{Id: "u-editor", Username: "editor"}
	}}
}

// republished is msgs in order with the later versions rs inserted; each
// later version starts from the one published before it.
func republished(msgs []*sourcev1.ChatMessage, rs ...republication) []*sourcev1.ChatMessage {
	last := make(map[int]*sourcev1.ChatMessage)
	after := make(map[int][]republication)
	for _, r := range rs {
		after[r.after] = append(after[r.after], r)
	}
	out := make([]*sourcev1.ChatMessage, 0, len(msgs)+len(rs))
	for i, m := range msgs {
		out = append(out, m)
		last[i] = m
		for _, r := range after[i] {
			v := proto.CloneOf(last[r.of])
			r.change(v)
			last[r.of] = v
			out = append(out, v)
		}
	}
	return out
}

// TestSpeculativeRenderAppliesEditsInItsWindow exports a room in which
// many ids are republished soon after their first version: every fifth
// message edited 40 messages later, one message three times, thread roots
// whose reply count and text change after their first reply, the last
// messages edited at the very end of the history. Every later version
// finds its first in the window, so the part stays speculative (one
// pass), and its bytes are the planned render's in every format, whole
// and over a range; in HTML a reply names its root's last version.
func TestSpeculativeRenderAppliesEditsInItsWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 36k messages twice")
	}
	n := raceMessages(30_000)
	var rs []republication
	for i := 100; i+40 < n; i += 5 {
		rs = append(rs, edit(i, i+40))
	}
	rs = append(rs, edit(7, 10), edit(7, 20), edit(7, 30))
	roots := []int{51, 1002, n - 8}
	for _, r := range roots {
		// The reply two messages after its root; the root's new count and
		// text one message after the reply.
		rs = append(rs, republication{r, r + 3, func(m *sourcev1.ChatMessage) {
			m.Text = fmt.Sprintf("root %d, *last* version", r)
			m.ThreadCount, m.ThreadLastMessage = 1, timestamppb.New(msgTime(r+2))
		}})
	}
	rs = append(rs, edit(n-3, n-1), edit(n-2, n-1))
	publish := func(h *harness) {
		h.putRoom(t, &sourcev1.Room{Id: "WIN", Name: "win", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		msgs := bigMessages("WIN", n)
		for _, r := range roots {
			msgs[r+2].ThreadId = msgs[r].GetId()
		}
		h.publishMessages(t, append(hostileMessages("WIN"), republished(msgs, rs...)...)...)
	}
	rig := newSpeculationRig(t, nil, publish)
	docs := rig.compare(t, "edits", func(id string) *exportv1.ExportTask { return roomTask(id, "WIN", nil, nil) }, true)
	html := string(docs[exportv1.Format_FORMAT_HTML])
	for _, r := range roots {
		ref := fmt.Sprintf(`in thread of <a href="#m-WIN-m%06d">root %d, <strong>last</strong> version</a>`, r, r)
		assert.True(t, strings.Contains(html, ref), "the reply names its root's last version: %s", ref)
	}
	assert.True(t, strings.Contains(html, "message 7, edited after 30"), "message 7's last version")
	assert.False(t, strings.Contains(html, "message 7, edited after 20"), "message 7's earlier version")
	rig.compare(t, "range", func(id string) *exportv1.ExportTask { return roomTask(id, "WIN", at(100), at(20_000)) }, true)
}

// TestSpeculationPastItsWindowIsAbandoned exports rooms in which an id is
// republished after its first version left the window, bounded in
// versions or in bytes: the speculative render is abandoned (during the
// read, or at its end when the table of recent ids cannot confirm the
// id), and the part is the planned render, byte for byte, with nothing
// else left in MinIO. An id republished in two bursts, each within the
// window, is one such id: the window sees two messages where the plan
// has one.
func TestSpeculationPastItsWindowIsAbandoned(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 20k messages ten times")
	}
	n := raceMessages(20_000)
	inWindow := []republication{edit(30, 33), edit(40, 41), edit(40, 42)}
	for _, tc := range []struct {
		name           string
		recent         int
		versions, size int
		rs             []republication
	}{
		{"an edit past the window", 0, 64, 0, []republication{edit(10, 200)}},
		{"a third republication past the window", 0, 64, 0, []republication{edit(10, 12), edit(10, 14), edit(10, 300)}},
		{"a third republication past the window, found at the end", 1, 64, 0,
			[]republication{edit(10, 12), edit(10, 14), edit(10, 300)}},
		{"an id republished in two bursts", 1, 64, 0, []republication{edit(10, 12), edit(10, 300), edit(10, 302)}},
		{"an edit past a window full of bytes", 0, 0, 16 << 10, []republication{edit(10, 100)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newSpeculationRig(t, func(o *roomexport.Options) {
				roomexport.SetSpeculation(o, false, tc.recent)
				roomexport.SetSpeculationWindow(o, tc.versions, tc.size)
			}, func(h *harness) {
				h.putRoom(t, &sourcev1.Room{Id: "PAST", Name: "past", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
				h.publishMessages(t, republished(bigMessages("PAST", n), append(tc.rs, inWindow...)...)...)
			})
			rig.compare(t, "past", func(id string) *exportv1.ExportTask { return roomTask(id, "PAST", nil, nil) }, false)
		})
	}
}

// raceMessages is n, or a tenth of it under the race detector, which
// slows the encoders tenfold: the goroutines of the speculative render are
// the same whatever the room's size, only the part count differs (one).
func raceMessages(n int) int {
	if roomexport.RaceEnabled {
		return n / 10
	}
	return n
}

// bigMessages are n messages of some 400 bytes of text that compresses
// poorly, so that even the csv.gz document spans several 5 MiB parts.
func bigMessages(roomID string, n int) []*sourcev1.ChatMessage {
	msgs := make([]*sourcev1.ChatMessage, n)
	var state uint64 = 88172645463325252
	for i := range n {
		m := fixtureMessage(roomID, i)
		var b strings.Builder
		for range 50 {
			state ^= state << 13
			state ^= state >> 7
			state ^= state << 17
			fmt.Fprintf(&b, "%x ", state&0xffffffff)
		}
		m.Text = b.String()
		msgs[i] = m
	}
	return msgs
}

// TestSpeculativeRenderResumes kills a speculative render after the
// checkpoint of its first part and lets the task be redelivered. With no
// republished id the resumed attempt continues the same upload and makes
// the clean run's bytes; with an id republished at the very end (found
// only when the read ends: the table of recent ids holds one) it aborts
// the checkpointed upload and renders the part as planned, again the
// clean run's bytes. Either way nothing else is left in MinIO and the
// checkpoint is gone.
func TestSpeculativeRenderResumes(t *testing.T) {
	if testing.Short() || roomexport.RaceEnabled {
		// Under the race detector this is over a minute; the speculative
		// render's goroutines run under it in the other speculation
		// tests, and make test-unit runs this one without -race
		// (NORACE_TESTS).
		t.Skip("publishes 30k messages twice")
	}
	// 18 MB of JSON, four 5 MiB parts: part 1's checkpoint is saved when
	// part 2 is cut, and the read is never more than four batches ahead
	// of the render, so the kill comes while the first attempt reads.
	const n = 30_000
	for _, tc := range []struct {
		name      string
		republish bool
		edits     bool
	}{{"no republished id", false, false}, {"an id republished at the end", true, false}, {"edits in the window", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				crashArmed  atomic.Bool
				crashed     atomic.Bool
				logs        logtest.Buffer
				checkpoints atomic.Value // jetstream.KeyValue
				killed      atomic.Pointer[[]byte]
			)
			h := start(t, func(o *config) {
				o.PartSize = blob.MinPartSize
				o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
				roomexport.SetSpeculation(&o.Options, false, 1)
				// A window of 1,000 versions keeps the read behind the
				// render by less than a part, so the kill comes while
				// the first attempt reads.
				roomexport.SetSpeculationWindow(&o.Options, 1000, 0)
				roomexport.SetTestHooks(&o.Options, nil, func(part int) error {
					if part == 1 && crashArmed.CompareAndSwap(true, false) {
						crashed.Store(true)
						if e, err := checkpoints.Load().(jetstream.KeyValue).Get(t.Context(), "specres-resumed.0"); err == nil {
							v := e.Value()
							killed.Store(&v)
						}
						return errors.New("injected crash after the checkpoint of part 1")
					}
					return nil
				})
			})
			h.putRoom(t, &sourcev1.Room{Id: "SPECRES", Name: "specres"})
			msgs := bigMessages("SPECRES", n)
			if tc.edits {
				// Every third message edited 50 messages later: whatever
				// message a part ends with, some before it have versions
				// after it.
				var rs []republication
				for i := 0; i+50 < n; i += 3 {
					rs = append(rs, edit(i, i+50))
				}
				msgs = republished(msgs, rs...)
			}
			if tc.republish {
				late := proto.CloneOf(msgs[3])
				late.Text = "edited at last"
				msgs = append(msgs, late)
			}
			h.publishMessages(t, msgs...)
			kv, err := h.js.KeyValue(t.Context(), bus.BucketCheckpoints)
			require.NoError(t, err)
			checkpoints.Store(kv)
			run := func(jobID string) *exportv1.File {
				h.publishTask(t, jobID+".task.0", roomTask(jobID, "SPECRES", nil, nil))
				var part exportv1.PartUploaded
				h.event(t, bus.EventPart, jobID, &part)
				return part.GetFile()
			}
			clean := run("specres-clean")
			require.Greater(t, clean.GetSize(), uint64(blob.MinPartSize), "at least two parts")
			crashArmed.Store(true)
			resumed := run("specres-resumed")
			require.True(t, crashed.Load(), "the first attempt was killed after part 1")
			require.NotNil(t, killed.Load(), "the checkpoint of part 1 was read")
			var cp struct {
				V    int               `json:"v"`
				Seq  uint64            `json:"seq"`
				Dups []json.RawMessage `json:"dups"`
			}
			require.NoError(t, json.Unmarshal(*killed.Load(), &cp))
			assert.Equal(t, 5, cp.V, "a speculative checkpoint (one naming its attachment segments)")
			if tc.edits {
				assert.NotEmpty(t, cp.Dups, "the checkpoint names placed ids whose later versions follow it")
			}

			require.Len(t, logs.Records(t, "resuming from message", "specres-resumed"), 1)
			spooled := logs.Records(t, "history spooled", "specres-resumed")
			require.Len(t, spooled, 1, "the killed attempt never finished its read")
			assert.Equal(t, float64(0), spooled[0]["from_seq"], "the resumed attempt read the whole history again")
			assert.Equal(t, !tc.republish, spooled[0]["speculative"], "whether the resumed attempt kept the speculative document")
			assert.Equal(t, clean.GetSha256(), resumed.GetSha256(), "the clean run's bytes")
			assert.Equal(t, clean.GetSize(), resumed.GetSize())
			assert.Equal(t, clean.GetRecords(), resumed.GetRecords())
			sum := sha256.Sum256(h.download(t, resumed.GetObjectKey()))
			assert.Equal(t, clean.GetSha256(), hex.EncodeToString(sum[:]))
			assert.Equal(t, []string{resumed.GetObjectKey()}, h.objects(t, "specres-resumed"))
			ups, err := h.store.ListIncompleteUploads(t.Context(), bucket, "jobs/")
			require.NoError(t, err)
			assert.Empty(t, ups, "no multipart upload is left")
			_, err = kv.Get(t.Context(), "specres-resumed.0")
			assert.ErrorIs(t, err, jetstream.ErrKeyNotFound)
		})
	}
}
