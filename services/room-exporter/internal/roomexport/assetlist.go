package roomexport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/taskrun"
)

// A room's attachments are as many as its messages allow (200,000 in the
// benchmark's room of 10,000,000 messages), so nothing holds them in
// memory: the collector appends each to an unlinked local file
// (attachmentList), and the listing roomAssets writes to another
// (assetListing), from which a long list is streamed into its object.
// What stays in memory is a slot of 8 bytes per attachment (offsetIndex,
// for the list's exact dedup), and bounded buffers.

// attachmentList is a collector's attachments, in order and once each
// (by file id), as delimited sourcev1.Attachment messages of the four
// fields the listing uses, in an unlinked local file (blob.PartFile).
// Dedup is exact: index finds the entries whose slot matches a hash of
// the file id, whose ids are read back to compare. It is not safe for
// concurrent use.
type attachmentList struct {
	file  *blob.PartFile // created by the first attachment
	n     int
	index offsetIndex
	hash  func(id string) uint64
	buf   []byte
}

func newAttachmentList() *attachmentList {
	seed := maphash.MakeSeed()
	return &attachmentList{hash: func(id string) uint64 { return maphash.String(seed, id) }}
}

// add appends a unless an attachment with its file id is listed already,
// and reports whether it did.
func (l *attachmentList) add(a *sourcev1.Attachment) (bool, error) {
	id := a.GetFileId()
	h := l.hash(id)
	listed, err := l.index.candidates(h, func(off int64) (bool, error) {
		e, err := l.entryAt(off)
		return err == nil && e.GetFileId() == id, err
	})
	if listed || err != nil {
		return false, err
	}
	if l.file == nil {
		f, err := blob.NewPartFile(os.TempDir())
		if err != nil {
			return false, fmt.Errorf("attachment list: %w", err)
		}
		l.file = f
	}
	if l.index.full() {
		if err := l.index.grow(l.rehash); err != nil {
			return false, fmt.Errorf("attachment list: %w", err)
		}
	}
	at := int64(l.file.Len())
	entry := &sourcev1.Attachment{FileId: id, Name: a.GetName(), ObjectKey: a.GetObjectKey(), ContentType: a.GetContentType()}
	if _, err := protodelim.MarshalTo(l.file, entry); err != nil {
		return false, fmt.Errorf("attachment list: %w", err)
	}
	if err := l.index.put(h, at); err != nil {
		return false, fmt.Errorf("attachment list: %w", err)
	}
	l.n++
	return true, nil
}

// rehash puts every entry of the list into a grown index.
func (l *attachmentList) rehash(put func(h uint64, off int64) error) error {
	if l.n == 0 {
		return nil
	}
	r, err := l.section(0)
	if err != nil {
		return err
	}
	var e sourcev1.Attachment
	return eachDelimited(r, func(off int64, body []byte) error {
		if err := proto.Unmarshal(body, &e); err != nil {
			return fmt.Errorf("entry at %d: %w", off, err)
		}
		return put(l.hash(e.GetFileId()), off)
	})
}

// entryAt reads the entry at byte offset off.
func (l *attachmentList) entryAt(off int64) (*sourcev1.Attachment, error) {
	r, err := l.file.Contents()
	if err != nil {
		return nil, err
	}
	var head [binary.MaxVarintLen64]byte
	n, err := r.ReadAt(head[:], off)
	if n == 0 {
		return nil, fmt.Errorf("attachment list: entry at %d: %w", off, err)
	}
	size, k := binary.Uvarint(head[:n])
	if k <= 0 || off+int64(k)+int64(size) > r.Size() {
		return nil, fmt.Errorf("attachment list: entry at %d is damaged", off)
	}
	if uint64(cap(l.buf)) < size {
		l.buf = make([]byte, size)
	}
	l.buf = l.buf[:size]
	if _, err := r.ReadAt(l.buf, off+int64(k)); err != nil {
		return nil, fmt.Errorf("attachment list: entry at %d: %w", off, err)
	}
	a := new(sourcev1.Attachment)
	if err := proto.Unmarshal(l.buf, a); err != nil {
		return nil, fmt.Errorf("attachment list: entry at %d: %w", off, err)
	}
	return a, nil
}

// size is how many bytes the list holds.
func (l *attachmentList) size() int64 {
	if l.file == nil {
		return 0
	}
	return int64(l.file.Len())
}

// section returns the list's bytes from offset from on.
func (l *attachmentList) section(from int64) (*io.SectionReader, error) {
	r, err := l.file.Contents()
	if err != nil {
		return nil, err
	}
	return io.NewSectionReader(r, from, r.Size()-from), nil
}

// each calls f with every attachment, in order. The list must not be
// added to meanwhile.
func (l *attachmentList) each(f func(*sourcev1.Attachment) error) error {
	if l.n == 0 {
		return nil
	}
	r, err := l.section(0)
	if err != nil {
		return err
	}
	return eachAttachment(bufio.NewReaderSize(r, 64<<10), f)
}

// eachAttachment calls f with every delimited Attachment r holds.
func eachAttachment(r *bufio.Reader, f func(*sourcev1.Attachment) error) error {
	for {
		a := new(sourcev1.Attachment)
		err := protodelim.UnmarshalFrom(r, a)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("attachment list: %w", err)
		}
		if err := f(a); err != nil {
			return err
		}
	}
}

func (l *attachmentList) close() {
	if l != nil && l.file != nil {
		l.file.Close()
		l.file = nil
	}
}

// segmentStore is where a collector keeps the segments of its list that
// its checkpoints name (objects.AttachmentSegmentKey), in the exports
// bucket.
type segmentStore struct {
	ctx    context.Context
	store  *blob.Store
	bucket string
	jobID  string
	part   uint32
}

func (s *segmentStore) put(n int, body io.Reader) error {
	key := objects.AttachmentSegmentKey(s.jobID, s.part, n)
	if _, err := s.store.Upload(s.ctx, s.bucket, key, body, "application/x-protobuf"); err != nil {
		return fmt.Errorf("upload attachment segment %d: %w", n, err)
	}
	return nil
}

// each calls f with every attachment of segment n, in order.
func (s *segmentStore) each(n int, f func(*sourcev1.Attachment) error) error {
	key := objects.AttachmentSegmentKey(s.jobID, s.part, n)
	r, _, err := s.store.Open(s.ctx, s.bucket, key)
	if err != nil {
		return fmt.Errorf("attachment segment %d: %w", n, err)
	}
	defer r.Close()
	return eachAttachment(bufio.NewReaderSize(r, 64<<10), f)
}

// deleteAll deletes every segment of the part, those of earlier attempts
// too. A failure is logged: what is left goes with the job's objects at
// retention.
func (s *segmentStore) deleteAll(ctx context.Context, t *taskrun.Task) {
	prefix := objects.AttachmentSegmentPrefix(s.jobID, s.part)
	infos, err := s.store.List(ctx, s.bucket, prefix)
	for _, info := range infos {
		if err == nil {
			err = s.store.Delete(ctx, s.bucket, info.Key)
		}
	}
	if err != nil {
		t.Log.WarnContext(ctx, "attachment segments not deleted; left to retention", "prefix", prefix, "error", err)
	}
}

// assetListing is a part's listed attachments, delimited exportv1.File
// messages in an unlinked local file, in the collector's order.
type assetListing struct {
	file *blob.PartFile
	n    int
}

func newAssetListing() (*assetListing, error) {
	f, err := blob.NewPartFile(os.TempDir())
	if err != nil {
		return nil, fmt.Errorf("attachment listing: %w", err)
	}
	return &assetListing{file: f}, nil
}

func (l *assetListing) add(f *exportv1.File) error {
	if _, err := protodelim.MarshalTo(l.file, f); err != nil {
		return fmt.Errorf("attachment listing: %w", err)
	}
	l.n++
	return nil
}

// files reads the listing into memory: for a list short enough for an
// event (taskrun.MaxInlineAttachments), or a split range's report.
func (l *assetListing) files() ([]*exportv1.File, error) {
	r, err := l.file.Contents()
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(r)
	out := make([]*exportv1.File, 0, l.n)
	for {
		f := new(exportv1.File)
		err := protodelim.UnmarshalFrom(br, f)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("attachment listing: %w", err)
		}
		out = append(out, f)
	}
}

func (l *assetListing) close() {
	if l != nil {
		l.file.Close()
	}
}

// announceAssets puts the listing into res: inline when an event holds
// it, else streamed from local disk into the part's attachment list
// object (PartUploaded.attachment_list).
func announceAssets(ctx context.Context, t *taskrun.Task, res *taskrun.Result, l *assetListing) error {
	if l == nil {
		return nil
	}
	if l.n <= taskrun.MaxInlineAttachments {
		var err error
		res.Attachments, err = l.files()
		return err
	}
	body, err := l.file.Contents()
	if err != nil {
		return err
	}
	res.AttachmentList, err = t.UploadAttachmentList(ctx, body, l.n)
	return err
}
