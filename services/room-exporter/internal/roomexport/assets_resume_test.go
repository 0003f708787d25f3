package roomexport_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protodelim"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/logtest"
	"dataport.dev/shared/objects"
)

// attachedMessages makes n messages of roomID with per new files each
// (F<message>-<k>) and, from the 1,000th on, one more link to a file of
// the message 1,000 before, so the same file comes back on both sides of
// a checkpoint. want is the list a user expects: every file once, in the
// order of the messages that first link to it.
func attachedMessages(roomID string, n, per int) (msgs []*sourcev1.ChatMessage, want []string) {
	att := func(id string) *sourcev1.Attachment {
		return &sourcev1.Attachment{FileId: id, Name: "f.txt", ObjectKey: "a/" + id, ContentType: "text/plain"}
	}
	for i := range n {
		m := fixtureMessage(roomID, i)
		for _, a := range m.GetAttachments() {
			want = append(want, "assets/"+a.GetFileId()+"-"+a.GetName())
		}
		for k := range per {
			id := fmt.Sprintf("F%d-%d", i, k)
			want = append(want, "assets/"+id+"-f.txt")
			m.Attachments = append(m.Attachments, att(id))
		}
		if i >= 1000 {
			m.Attachments = append(m.Attachments, att(fmt.Sprintf("F%d-%d", i-1000, per-1)))
		}
		msgs = append(msgs, m)
	}
	return msgs, want
}

// TestExportResumesALongAttachmentList crashes a room part with more
// attachments before its first checkpoint than a checkpoint could carry
// when it carried the list itself (about 20,000 of these at
// taskrun.MaxCheckpointBytes), and checks that the redelivered attempt
// resumed from that checkpoint and that the part lists every attachment
// once, in order, with no segment of the list left behind. The same from
// a checkpoint in the form exporters wrote before segments (version 3,
// the list inline), made from the crashed attempt's: it still resumes.
func TestExportResumesALongAttachmentList(t *testing.T) {
	if testing.Short() || roomexport.RaceEnabled {
		// Under the race detector this is a minute and a half of one
		// goroutine's encoding; the resumed path's goroutines are
		// TestExportResumesFromCheckpoint's, and make test-unit runs
		// this one without -race (NORACE_TESTS).
		t.Skip("publishes 27,000 messages with 70,000 attachments")
	}
	var (
		crashArmed atomic.Bool
		logs       logtest.Buffer
	)
	h := start(t, func(o *config) {
		o.PartSize = blob.MinPartSize
		o.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
		roomexport.SetTestHooks(&o.Options, nil, func(part int) error {
			if part == 1 && crashArmed.CompareAndSwap(true, false) {
				return errors.New("injected crash after the checkpoint of part 1")
			}
			return nil
		})
	})
	kv, err := h.js.KeyValue(t.Context(), bus.BucketCheckpoints)
	require.NoError(t, err)

	for _, tc := range []struct {
		name   string
		n, per int
		inline bool // rewrite the checkpoint as one with the list inline
	}{
		{name: "segments", n: 7000, per: 6},
		{name: "inline list", n: 20_000, per: 1, inline: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			roomID := "LIST" + strings.ToUpper(strings.ReplaceAll(tc.name, " ", ""))
			jobID := "list-" + strings.ReplaceAll(tc.name, " ", "-")
			h.putRoom(t, &sourcev1.Room{Id: roomID, Name: "attached"})
			msgs, want := attachedMessages(roomID, tc.n, tc.per)
			h.publishMessages(t, msgs...)
			task := roomTask(jobID, roomID, nil, nil)

			crashArmed.Store(true)
			require.Error(t, h.exp.Export(ctx, task), "the first attempt crashes after its first checkpoint")
			entry, err := kv.Get(ctx, jobID+".0")
			require.NoError(t, err, "the crashed attempt left its checkpoint")
			var cp map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(entry.Value(), &cp))
			var state struct {
				Inner    json.RawMessage `json:"inner"`
				Segments int             `json:"segments"`
				Listed   int             `json:"listed"`
			}
			require.NoError(t, json.Unmarshal(cp["renderer"], &state))
			require.Equal(t, 1, state.Segments)
			if !tc.inline {
				assert.Greater(t, state.Listed, 20_000, "more attachments before the checkpoint than an inline list held")
				assert.Less(t, len(entry.Value()), 16<<10, "the checkpoint names the list, it does not carry it")
			}

			if tc.inline {
				// What an exporter before segments saved: the list in the
				// checkpoint, its version 3 (speculative) or 1 (planned).
				var assets [][4]string
				r, _, err := h.store.Open(ctx, bucket, objects.AttachmentSegmentKey(jobID, 0, 0))
				require.NoError(t, err)
				br := bufio.NewReader(r)
				for {
					var a sourcev1.Attachment
					if err := protodelim.UnmarshalFrom(br, &a); errors.Is(err, io.EOF) {
						break
					} else {
						require.NoError(t, err)
					}
					assets = append(assets, [4]string{a.GetFileId(), a.GetName(), a.GetObjectKey(), a.GetContentType()})
				}
				r.Close()
				require.Len(t, assets, state.Listed)
				require.NoError(t, h.store.Delete(ctx, bucket, objects.AttachmentSegmentKey(jobID, 0, 0)))
				var version int
				require.NoError(t, json.Unmarshal(cp["v"], &version))
				old := map[int]int{5: 3, 4: 1}[version]
				require.NotZero(t, old, "checkpoint version %d", version)
				cp["v"], _ = json.Marshal(old)
				cp["renderer"], err = json.Marshal(map[string]any{"inner": state.Inner, "assets": assets})
				require.NoError(t, err)
				data, err := json.Marshal(cp)
				require.NoError(t, err)
				_, err = kv.Put(ctx, jobID+".0", data)
				require.NoError(t, err)
			}

			require.NoError(t, h.exp.Export(ctx, task), "the redelivered attempt")
			require.Len(t, logs.Records(t, "resuming from message", jobID), 1, "it resumed from the checkpoint")
			var part exportv1.PartUploaded
			h.event(t, bus.EventPart, jobID, &part)
			assert.Equal(t, uint64(tc.n), part.GetFile().GetRecords())
			list := part.GetAttachmentList()
			require.NotNil(t, list, "%d attachments are listed in an object", len(want))
			assert.Empty(t, part.GetFiles())
			assert.Equal(t, uint64(len(want)), list.GetRecords())

			data := h.download(t, list.GetObjectKey())
			assert.Equal(t, uint64(len(data)), list.GetSize())
			br := bufio.NewReader(bytes.NewReader(data))
			var got []string
			for {
				var f exportv1.File
				if err := protodelim.UnmarshalFrom(br, &f); errors.Is(err, io.EOF) {
					break
				} else {
					require.NoError(t, err)
				}
				assert.True(t, f.GetDescribedOnDelivery(), "%s is left to the archive to describe", f.GetName())
				assert.Zero(t, f.GetSize(), f.GetName())
				got = append(got, f.GetName())
			}
			require.Equal(t, len(want), len(got), "every attachment once")
			for i := range want {
				if want[i] != got[i] {
					require.Equal(t, want[i], got[i], "attachment %d", i)
				}
			}
			assert.ElementsMatch(t, []string{part.GetFile().GetObjectKey(), list.GetObjectKey()}, h.objects(t, jobID),
				"the document and its list, no segment of the list")
		})
	}
}
