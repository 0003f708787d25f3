package roomexport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/taskrun"
)

// A room export of type file delivers the files its document links to,
// as Rocket.Chat's does (a zip of the document and assets/): the room
// part announces them beside its document (PartUploaded.files, by
// reference into the assets bucket), and the archiver zips them with it
// (the job's archive) while the document stays the job's file. The list
// is what the renderer was given, so it is exactly the attachments of the
// messages the document holds; a resumed part gets those before its
// checkpoint from the checkpoint.

// assetCollector is a Renderer that remembers the attachments of the
// messages it passes on, in order and once each.
type assetCollector struct {
	inner Renderer
	seen  map[string]bool
	list  []*sourcev1.Attachment
}

// collectAssets wraps format's renderers in an assetCollector, which
// *list receives once New has run.
func collectAssets(format Format, into **assetCollector) Format {
	inner := format.New
	format.New = func(w io.Writer, meta Meta) Renderer {
		c := &assetCollector{inner: inner(w, meta), seen: map[string]bool{}}
		*into = c
		return c
	}
	return format
}

func (c *assetCollector) Begin(room *sourcev1.Room) error { return c.inner.Begin(room) }

func (c *assetCollector) Message(m *sourcev1.ChatMessage) error {
	for _, a := range m.GetAttachments() {
		if a.GetFileId() != "" && !c.seen[a.GetFileId()] {
			c.seen[a.GetFileId()] = true
			c.list = append(c.list, proto.CloneOf(a))
		}
	}
	return c.inner.Message(m)
}

func (c *assetCollector) End() error { return c.inner.End() }

// endMember passes a part cut on to a compressed renderer (memberEnder),
// or the collector would hide it and a csv.gz part never be resumable.
func (c *assetCollector) endMember() error {
	if m, ok := c.inner.(memberEnder); ok {
		return m.endMember()
	}
	return nil
}

// collectorState is an assetCollector's checkpointed state: the inner
// renderer's and the attachments so far, so a resumed part lists the
// attachments of the messages before its checkpoint without reading them
// again. About 100 bytes an attachment: a room with many thousands of
// them outgrows taskrun.MaxCheckpointBytes, and then resumes from an
// earlier checkpoint only.
type collectorState struct {
	Inner  json.RawMessage `json:"inner"`
	Assets [][4]string     `json:"assets"` // file id, name, object key, content type
}

func (c *assetCollector) saveState() ([]byte, error) {
	s, ok := c.inner.(resumable)
	if !ok {
		return nil, errNotResumable
	}
	inner, err := s.saveState()
	if err != nil {
		return nil, err
	}
	// A list that would not fit is not encoded at all: every part of a
	// big room would encode all of it again only to have it refused.
	size := len(inner)
	for _, a := range c.list {
		size += len(a.GetFileId()) + len(a.GetName()) + len(a.GetObjectKey()) + len(a.GetContentType()) + len(`["","","",""],`)
	}
	if size > taskrun.MaxCheckpointBytes {
		return nil, fmt.Errorf("%d attachments are more than a checkpoint holds", len(c.list))
	}
	st := collectorState{Inner: inner, Assets: make([][4]string, 0, len(c.list))}
	for _, a := range c.list {
		st.Assets = append(st.Assets, [4]string{a.GetFileId(), a.GetName(), a.GetObjectKey(), a.GetContentType()})
	}
	return json.Marshal(st)
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
	c.list = c.list[:0]
	for _, a := range st.Assets {
		c.seen[a[0]] = true
		c.list = append(c.list, &sourcev1.Attachment{FileId: a[0], Name: a[1], ObjectKey: a[2], ContentType: a[3]})
	}
	return s.restoreState(st.Inner)
}

// roomAssets returns the files the room part's messages link to, as c
// collected them (with those before the checkpoint of a resumed part),
// each described by reading its object once. The reads run
// assetReaders at a time: one after the other, a room with thousands of
// attachments spent a third of its export waiting on them.
func (e *Exporter) roomAssets(ctx context.Context, t *taskrun.Task, c *assetCollector) ([]*exportv1.File, error) {
	if c == nil {
		return nil, nil
	}
	list := c.list
	files := make([]*exportv1.File, len(list))
	var missing atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(assetReaders)
	for i, a := range list {
		g.Go(func() error {
			f, err := e.describeAsset(gctx, a)
			if errors.Is(err, blob.ErrNotFound) || errors.Is(err, blob.ErrInvalidArgument) {
				t.Log.WarnContext(gctx, "asset object missing; listed as missing", "file_id", a.GetFileId(), "object_key", a.GetObjectKey())
				files[i] = e.missingAsset(a)
				missing.Add(1)
				return nil
			}
			files[i] = f
			return err
		})
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	if len(list) > 0 {
		t.Log.InfoContext(ctx, "room attachments listed", "attachments", len(list), "missing", missing.Load())
	}
	return files, nil
}

// assetReaders is how many attachments roomAssets reads at once: enough
// to hide the object store's latency, few enough to leave it to others.
const assetReaders = 8

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
