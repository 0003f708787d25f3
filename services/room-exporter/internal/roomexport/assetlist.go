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
	"slices"

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
// Repeats are dropped when the list is read, by an external sort of the
// entries' hashes (attachmentList.repeats), so what memory holds is the
// sorter's bounded run, once, after the render: an index of every
// attachment, even at 8 bytes one, grew with the room and was live for
// the whole render (docs/BENCHMARKS.md, "The attachment list sorted
// once").

// attachmentList is a collector's attachments, in order, as delimited
// sourcev1.Attachment messages of the four fields the listing uses, in
// an unlinked local file (blob.PartFile). It keeps every one it is
// given, repeats too; each yields them once each by file id, the first
// of each. Dedup is exact: entries whose hashes match have their ids read
// back and compared. It is not safe for concurrent use.
type attachmentList struct {
	file *blob.PartFile // created by the first attachment
	n    int            // entries, repeats too
	hash func(id string) uint64
	buf  []byte
}

func newAttachmentList() *attachmentList {
	seed := maphash.MakeSeed()
	return &attachmentList{hash: func(id string) uint64 { return maphash.String(seed, id) }}
}

// add appends a's listed fields.
func (l *attachmentList) add(a *sourcev1.Attachment) error {
	if l.file == nil {
		f, err := blob.NewPartFile(os.TempDir())
		if err != nil {
			return fmt.Errorf("attachment list: %w", err)
		}
		l.file = f
	}
	entry := &sourcev1.Attachment{FileId: a.GetFileId(), Name: a.GetName(), ObjectKey: a.GetObjectKey(), ContentType: a.GetContentType()}
	if _, err := protodelim.MarshalTo(l.file, entry); err != nil {
		return fmt.Errorf("attachment list: %w", err)
	}
	l.n++
	return nil
}

// repeats returns a sorter of the offsets (a record's first word) of the
// entries whose file id an earlier entry has, in no order yet: one pass
// over the file puts each entry's hash and offset into a sorter, and its
// order brings entries of one hash together, earliest first. Only where
// two share a hash are ids read back, and a group keeps the distinct ids
// it met, one but for a collision.
func (l *attachmentList) repeats() (*sorter, error) {
	r, err := l.section(0)
	if err != nil {
		return nil, err
	}
	byHash := newSorter(os.TempDir())
	defer byHash.close()
	var e sourcev1.Attachment
	err = eachDelimited(r, func(off int64, body []byte) error {
		if err := proto.Unmarshal(body, &e); err != nil {
			return fmt.Errorf("attachment list: entry at %d: %w", off, err)
		}
		return byHash.add(record{l.hash(e.GetFileId()), uint64(off)})
	})
	if err != nil {
		return nil, err
	}
	it, err := byHash.sorted()
	if err != nil {
		return nil, err
	}
	out := newSorter(os.TempDir())
	var (
		hash  uint64
		first int64    = -1 // the group's first offset, its id not read yet
		ids   []string      // the group's distinct ids, once a second came
	)
	for {
		rec, ok, err := it.next()
		if err != nil {
			out.close()
			return nil, err
		}
		if !ok {
			return out, nil
		}
		off := int64(rec[1])
		if first < 0 || rec[0] != hash {
			hash, first, ids = rec[0], off, ids[:0]
			continue
		}
		if len(ids) == 0 {
			a, err := l.entryAt(first)
			if err != nil {
				out.close()
				return nil, err
			}
			ids = append(ids, a.GetFileId())
		}
		a, err := l.entryAt(off)
		if err != nil {
			out.close()
			return nil, err
		}
		if slices.Contains(ids, a.GetFileId()) {
			err = out.add(record{uint64(off)})
		} else {
			ids = append(ids, a.GetFileId())
		}
		if err != nil {
			out.close()
			return nil, err
		}
	}
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

// each calls f with every file id's first attachment, in order. The
// list must not be added to meanwhile.
func (l *attachmentList) each(f func(*sourcev1.Attachment) error) error {
	if l.n == 0 {
		return nil
	}
	reps, err := l.repeats()
	if err != nil {
		return err
	}
	defer reps.close()
	skip, err := reps.sorted()
	if err != nil {
		return err
	}
	next, more, err := skip.next()
	if err != nil {
		return err
	}
	r, err := l.section(0)
	if err != nil {
		return err
	}
	return eachDelimited(r, func(off int64, body []byte) error {
		if more && int64(next[0]) == off {
			next, more, err = skip.next()
			return err
		}
		a := new(sourcev1.Attachment)
		if err := proto.Unmarshal(body, a); err != nil {
			return fmt.Errorf("attachment list: entry at %d: %w", off, err)
		}
		return f(a)
	})
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

// eachDelimited calls f with the offset and body of every
// varint-delimited record of r, which holds only such records; body is
// reused for the next record.
func eachDelimited(r io.Reader, f func(off int64, body []byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var off int64
	var body []byte
	for {
		size, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("record at %d: %w", off, err)
		}
		if uint64(cap(body)) < size {
			body = make([]byte, size)
		}
		body = body[:size]
		if _, err := io.ReadFull(br, body); err != nil {
			return fmt.Errorf("record at %d: %w", off, err)
		}
		if err := f(off, body); err != nil {
			return err
		}
		off += int64(uvarintLen(size)) + int64(size)
	}
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}
