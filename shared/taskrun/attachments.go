package taskrun

import (
	"bytes"
	"context"
	"fmt"

	"google.golang.org/protobuf/encoding/protodelim"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/objects"
)

// MaxInlineAttachments is the most attachments a PartUploaded carries in
// files. A File is about 200 bytes in an event, so a room with 20,000
// attachments (2% of a million messages) would make a 4 MB event, over
// NATS's max_payload (1 MiB by default); past this many the part lists
// them in an object instead (PartUploaded.attachment_list).
const MaxInlineAttachments = 1000

// attachmentList uploads files as the part's attachment list and returns
// the File that names it.
func (r *Runner) attachmentList(ctx context.Context, t *Task, files []*exportv1.File) (*exportv1.File, error) {
	var buf bytes.Buffer
	for _, f := range files {
		if _, err := protodelim.MarshalTo(&buf, f); err != nil {
			return nil, fmt.Errorf("encode attachment list: %w", err)
		}
	}
	key := objects.AttachmentListKey(t.Task.GetJobId(), t.Task.GetPart())
	info, err := r.opts.Store.Upload(ctx, r.opts.Bucket, key, &buf, "application/x-protobuf")
	if err != nil {
		return nil, fmt.Errorf("upload attachment list: %w", err)
	}
	return &exportv1.File{
		ObjectKey: key, Name: "attachments.list.pb", ContentType: "application/x-protobuf",
		Size: uint64(info.Size), Sha256: info.SHA256, Records: uint64(len(files)),
	}, nil
}
