package roomexport

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/taskrun"
)

// A room export of type file delivers the files its document links to,
// as Rocket.Chat's does (a zip of the document and assets/): the room
// part announces them beside its document (PartUploaded.files, by
// reference into the assets bucket), and the archiver zips them with it
// (the job's archive) while the document stays the job's file, taking
// their sizes and SHA-256s from the bytes it copies. The list
// is what the renderer was given, so it is exactly the attachments of the
// messages the document holds; a resumed part gets those before its
// checkpoint from the segments of the list its checkpoint names.

// assetCollector is a Renderer that remembers the attachments of the
// messages it passes on, in order, on local disk (attachmentList, which
// lists each once). Its checkpoints name the segments of the list it
// uploaded at each of them (segs), not the list itself.
type assetCollector struct {
	inner Renderer
	list  *attachmentList
	segs  *segmentStore
	// segments are uploaded, holding the list's first segListed
	// attachments, its first segEnd bytes.
	segments, segListed int
	segEnd              int64
}

// collectAssets wraps format's renderers in an assetCollector, which
// *into receives once New has run; its checkpoints keep the list in the
// task's segments. Every renderer New makes (a speculative render and the
// planned one that replaces it) gets a collector of its own, and closes
// the one it replaces; the caller closes *into.
func (e *Exporter) collectAssets(ctx context.Context, task *exportv1.ExportTask, format Format, into **assetCollector) Format {
	inner := format.New
	segs := &segmentStore{ctx: ctx, store: e.store, bucket: e.bucket, jobID: task.GetJobId(), part: task.GetPart()}
	format.New = func(w io.Writer, meta Meta) Renderer {
		(*into).close()
		c := &assetCollector{inner: inner(w, meta), list: newAttachmentList(), segs: segs}
		*into = c
		return c
	}
	return format
}

func (c *assetCollector) Begin(room *sourcev1.Room) error { return c.inner.Begin(room) }

func (c *assetCollector) Message(m *sourcev1.ChatMessage) error {
	for _, a := range m.GetAttachments() {
		if a.GetFileId() == "" {
			continue
		}
		if err := c.list.add(a); err != nil {
			return err
		}
	}
	return c.inner.Message(m)
}

func (c *assetCollector) End() error { return c.inner.End() }

// close releases the list's file; a nil collector does nothing.
func (c *assetCollector) close() {
	if c != nil {
		c.list.close()
	}
}

// endMember passes a part cut on to a compressed renderer (memberEnder),
// or the collector would hide it and a csv.gz part never be resumable.
func (c *assetCollector) endMember() error {
	if m, ok := c.inner.(memberEnder); ok {
		return m.endMember()
	}
	return nil
}

// collectorState is an assetCollector's checkpointed state: the inner
// renderer's, and how many segments hold the attachments so far, so a
// resumed part lists the attachments of the messages before its
// checkpoint without reading them again. A segment is what was collected
// since the checkpoint before, so a checkpoint costs the same at the
// 1,000th part as at the first. Assets is the list itself, as
// checkpoints carried it before segments (about 100 bytes an attachment,
// up to taskrun.MaxCheckpointBytes): still read, never written.
type collectorState struct {
	Inner    json.RawMessage `json:"inner"`
	Segments int             `json:"segments,omitempty"`
	Listed   int             `json:"listed,omitempty"`
	Assets   [][4]string     `json:"assets,omitempty"` // file id, name, object key, content type
}

// saveState uploads what was collected since the last segment as the
// next one. It runs at a part cut, before the part it closes is
// acknowledged, so the checkpoint that names the segment is saved only
// after it is stored; a segment no saved checkpoint names yet is
// harmless, and the next one starts where the last uploaded one ended.
func (c *assetCollector) saveState() ([]byte, error) {
	s, ok := c.inner.(resumable)
	if !ok {
		return nil, errNotResumable
	}
	inner, err := s.saveState()
	if err != nil {
		return nil, err
	}
	if c.list.n > c.segListed {
		body, err := c.list.section(c.segEnd)
		if err != nil {
			return nil, err
		}
		if err := c.segs.put(c.segments, body); err != nil {
			return nil, err
		}
		c.segments, c.segListed, c.segEnd = c.segments+1, c.list.n, c.list.size()
	}
	return json.Marshal(collectorState{Inner: inner, Segments: c.segments, Listed: c.segListed})
}

func (c *assetCollector) restoreState(data []byte) error {
	s, ok := c.inner.(resumable)
	if !ok {
		return errNotResumable
	}
	var st collectorState
	if err := json.Unmarshal(data, &st); err != nil || st.Inner == nil {
		// A checkpoint from before attachments were collected: the part
		// starts over rather than miss them.
		return errors.New("checkpoint holds no attachment list")
	}
	c.list.close()
	c.list = newAttachmentList()
	for _, a := range st.Assets {
		if err := c.list.add(&sourcev1.Attachment{FileId: a[0], Name: a[1], ObjectKey: a[2], ContentType: a[3]}); err != nil {
			return err
		}
	}
	for n := range st.Segments {
		if err := c.segs.each(n, c.list.add); err != nil {
			return err
		}
	}
	if want := len(st.Assets) + st.Listed; c.list.n != want {
		return fmt.Errorf("attachment segments hold %d attachments, the checkpoint %d", c.list.n, want)
	}
	// An inline list goes into the next segment with what follows it.
	c.segments, c.segListed, c.segEnd = st.Segments, st.Listed, int64(0)
	if st.Assets == nil {
		c.segEnd = c.list.size()
	}
	return s.restoreState(st.Inner)
}

// roomAssets returns the files the room part's messages link to, as c
// collected them (with those before the checkpoint of a resumed part),
// by reference only (listedAsset): the archiver takes each one's size and
// SHA-256 from the bytes it zips, and finds out then which are missing,
// so nothing here asks the store about an attachment. The listing is on
// local disk; the caller closes it. The document's upload is complete by
// now, so no checkpoint can resume it: the list's segments are deleted.
func (e *Exporter) roomAssets(ctx context.Context, t *taskrun.Task, c *assetCollector) (*assetListing, error) {
	if c == nil {
		return nil, nil
	}
	out, err := newAssetListing()
	if err != nil {
		return nil, err
	}
	if err := c.list.each(func(a *sourcev1.Attachment) error { return out.add(e.listedAsset(a)) }); err != nil {
		out.close()
		return nil, err
	}
	c.segs.deleteAll(ctx, t)
	if out.n > 0 {
		t.Log.InfoContext(ctx, "room attachments listed", "attachments", out.n)
	}
	return out, nil
}

// listedAsset is the listing of a room part's attachment: where its
// object is, the name documents link to it by, and the marker that leaves
// its size and SHA-256 to the archive's copy (File.described_on_delivery).
// One without an object key names no object to copy: it is missing now.
func (e *Exporter) listedAsset(a *sourcev1.Attachment) *exportv1.File {
	if a.GetObjectKey() == "" {
		return e.missingAsset(a)
	}
	return &exportv1.File{
		Bucket:              e.opts.AssetBucket,
		ObjectKey:           a.GetObjectKey(),
		Name:                AssetPath(a.GetFileId(), a.GetName()),
		Records:             1,
		ContentType:         a.GetContentType(),
		DescribedOnDelivery: true,
	}
}

// missingAsset is the listing of an attachment whose object is gone: its
// name as documents link to it, and where it was.
func (e *Exporter) missingAsset(a *sourcev1.Attachment) *exportv1.File {
	return &exportv1.File{
		Bucket:      e.opts.AssetBucket,
		ObjectKey:   a.GetObjectKey(),
		Name:        AssetPath(a.GetFileId(), a.GetName()),
		ContentType: a.GetContentType(),
		Missing:     true,
	}
}

// describeAsset returns the listing of a's object, for the parts that
// attach or list a few files themselves (room mails, a data download's
// assets): its size and SHA-256 from the store's metadata when the object
// was stored with a whole SHA-256 checksum (blob.Store.Upload of an
// object up to blob.PartSize; any S3 PUT with x-amz-checksum-sha256), or
// else by reading it once (an object stored without a checksum, or
// multipart: its checksum is a composite of its parts').
func (e *Exporter) describeAsset(ctx context.Context, a *sourcev1.Attachment) (*exportv1.File, error) {
	key := a.GetObjectKey()
	if key == "" {
		return nil, blob.ErrNotFound
	}
	info, err := e.store.Stat(ctx, e.opts.AssetBucket, key)
	if err != nil {
		return nil, fmt.Errorf("stat asset %s: %w", key, err)
	}
	sum, ok := info.ObjectSHA256()
	if !ok {
		if sum, info.Size, err = e.hashAsset(ctx, key); err != nil {
			return nil, err
		}
	}
	ct := info.ContentType
	if a.GetContentType() != "" {
		ct = a.GetContentType()
	}
	return &exportv1.File{
		Bucket:      e.opts.AssetBucket,
		ObjectKey:   key,
		Name:        AssetPath(a.GetFileId(), a.GetName()),
		Size:        uint64(info.Size),
		Records:     1,
		Sha256:      sum,
		ContentType: ct,
	}, nil
}

// hashAsset streams the asset object key through SHA-256.
func (e *Exporter) hashAsset(ctx context.Context, key string) (string, int64, error) {
	r, _, err := e.store.Open(ctx, e.opts.AssetBucket, key)
	if err != nil {
		return "", 0, fmt.Errorf("open asset %s: %w", key, err)
	}
	defer r.Close()
	sum := sha256.New()
	n, err := io.Copy(sum, r)
	if err != nil {
		return "", 0, fmt.Errorf("read asset %s: %w", key, err)
	}
	return hex.EncodeToString(sum.Sum(nil)), n, nil
}
