package archive

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
)

// withAttachments returns parts with every attachment list
// (PartUploaded.attachment_list, what a part with more attachments than
// fit an event announces) read back into the part's files, so packaging
// and the manifest see one shape. parts itself is not changed.
func withAttachments(ctx context.Context, objs Objects, bucket string, parts []*exportv1.PartUploaded) ([]*exportv1.PartUploaded, error) {
	var out []*exportv1.PartUploaded
	for i, p := range parts {
		list := p.GetAttachmentList()
		if list == nil {
			continue
		}
		if out == nil {
			out = append([]*exportv1.PartUploaded(nil), parts...)
		}
		files, err := readAttachmentList(ctx, objs, cmp.Or(list.GetBucket(), bucket), list)
		if err != nil {
			return nil, err
		}
		c := proto.CloneOf(p)
		c.Files, c.AttachmentList = files, nil
		out[i] = c
	}
	if out == nil {
		return parts, nil
	}
	return out, nil
}

// readAttachmentList reads the File messages list names, checked against
// the size, SHA-256 and count the part announced.
func readAttachmentList(ctx context.Context, objs Objects, bucket string, list *exportv1.File) ([]*exportv1.File, error) {
	r, _, err := objs.Open(ctx, bucket, list.GetObjectKey())
	if errors.Is(err, blob.ErrNotFound) {
		return nil, bus.Permanent(bus.Worded("The list of the export's attachments is missing; please try again.",
			fmt.Errorf("attachment list %s: %w", list.GetObjectKey(), err)))
	}
	if err != nil {
		return nil, fmt.Errorf("open attachment list %s: %w", list.GetObjectKey(), err)
	}
	defer r.Close()
	sum := sha256.New()
	br := bufio.NewReader(io.TeeReader(r, sum))
	files := make([]*exportv1.File, 0, list.GetRecords())
	for {
		f := new(exportv1.File)
		err := protodelim.UnmarshalFrom(br, f)
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, blob.ErrUnavailable) {
			return nil, fmt.Errorf("read attachment list %s: %w", list.GetObjectKey(), err)
		}
		if err != nil {
			// Not the store's failure: bytes that do not decode.
			return nil, changedList(list, err)
		}
		files = append(files, f)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != list.GetSha256() || uint64(len(files)) != list.GetRecords() {
		return nil, changedList(list, fmt.Errorf("sha256 %s, %d files; announced %s, %d", got, len(files), list.GetSha256(), list.GetRecords()))
	}
	return files, nil
}

func changedList(list *exportv1.File, err error) error {
	return bus.Permanent(bus.Worded("The list of the export's attachments was changed after it was written; please try again.",
		fmt.Errorf("attachment list %s: %w", list.GetObjectKey(), err)))
}
