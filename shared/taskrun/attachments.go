package taskrun

import (
	"context"
	"errors"
	"fmt"
	"io"

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
// the File that names it. The files are encoded as the upload reads them,
// so the list is never held twice.
func (r *Runner) attachmentList(ctx context.Context, t *Task, files []*exportv1.File) (*exportv1.File, error) {
	pr, pw := io.Pipe()
	go func() {
		for _, f := range files {
			if _, err := protodelim.MarshalTo(pw, f); err != nil {
				pw.CloseWithError(fmt.Errorf("encode attachment list: %w", err))
				return
			}
		}
		pw.Close()
	}()
	list, err := t.UploadAttachmentList(ctx, pr, len(files))
	// Ends the encoder if the upload stopped before reading it all.
	pr.CloseWithError(errors.New("upload ended"))
	return list, err
}

// UploadAttachmentList uploads list, count File messages each written
// with protodelim (what the archiver reads), as the part's attachment
// list object, and returns the File to announce in
// Result.AttachmentList. list is streamed: a kind that keeps a long list
// on local disk hands it over without reading it into memory. The key
// does not depend on the attempt, so a retried part overwrites it.
func (t *Task) UploadAttachmentList(ctx context.Context, list io.Reader, count int) (*exportv1.File, error) {
	key := objects.AttachmentListKey(t.Task.GetJobId(), t.Task.GetPart())
	info, err := t.r.opts.Store.Upload(ctx, t.r.opts.Bucket, key, list, "application/x-protobuf")
	if err != nil {
		return nil, fmt.Errorf("upload attachment list: %w", err)
	}
	return &exportv1.File{
		ObjectKey: key, Name: "attachments.list.pb", ContentType: "application/x-protobuf",
		Size: uint64(info.Size), Sha256: info.SHA256, Records: uint64(count),
	}, nil
}
