package roomexport

import (
	"context"
	"errors"
	"io"

	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/taskrun"
)

// A room export of type file delivers the files its document links to,
// as Rocket.Chat's does (a zip of the document and assets/): the room
// part lists them after its document, by reference into the assets
// bucket, and the archiver zips them with it (the job's archive) while
// the document stays the job's file. The list is what the renderer was
// given, so it is exactly the attachments of the messages the document
// holds; a part resumed from a checkpoint did not see the messages
// before it, and lists them from the history instead (roomAttachments).

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

// The collected list is not part of the state: a resumed part lists its
// attachments from the history.
func (c *assetCollector) saveState() ([]byte, error) {
	if s, ok := c.inner.(resumable); ok {
		return s.saveState()
	}
	return nil, errNotResumable
}

func (c *assetCollector) restoreState(data []byte) error {
	if s, ok := c.inner.(resumable); ok {
		return s.restoreState(data)
	}
	return errNotResumable
}

// withRoomAssets returns the room part's files: its document, then the
// attachments its messages link to (collected by c, or read from the
// history when the part was resumed or c saw nothing because it never
// ran), each described by reading its object once.
func (e *Exporter) withRoomAssets(ctx context.Context, t *taskrun.Task, doc *exportv1.File, c *assetCollector, resumed bool) ([]*exportv1.File, error) {
	var list []*sourcev1.Attachment
	if c != nil && !resumed {
		list = c.list
	} else {
		var err error
		if list, err = e.roomAttachments(ctx, t); err != nil {
			return nil, err
		}
	}
	files := []*exportv1.File{doc}
	missing := 0
	for _, a := range list {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		f, err := e.describeAsset(ctx, a)
		if errors.Is(err, blob.ErrNotFound) || errors.Is(err, blob.ErrInvalidArgument) {
			t.Log.WarnContext(ctx, "asset object missing; listed as missing", "file_id", a.GetFileId(), "object_key", a.GetObjectKey())
			files = append(files, e.missingAsset(a))
			missing++
			continue
		}
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	if len(list) > 0 {
		t.Log.InfoContext(ctx, "room attachments listed", "attachments", len(list), "missing", missing, "from_history", c == nil || resumed)
	}
	return files, nil
}

// roomAttachments lists the attachments of the messages the task's room
// document holds, from the history: the latest version of each message
// in the task's range, as the document renders it (an edit may drop or
// change an attachment), in order of first appearance, once each.
// Memory grows with the messages that carry attachments.
func (e *Exporter) roomAttachments(ctx context.Context, t *taskrun.Task) ([]*sourcev1.Attachment, error) {
	task := t.Task
	h, err := e.lookupTaskHistory(ctx, task)
	if err != nil {
		return nil, err
	}
	scope := task.GetRoom()
	type carried struct {
		inRange     bool
		attachments []*sourcev1.Attachment
	}
	var (
		order []string // message ids in order of first appearance
		byID  = map[string]*carried{}
		n     int
		m     sourcev1.ChatMessage
	)
	err = e.replay(ctx, h, func(_ uint64, data []byte) (bool, error) {
		if n++; n%1024 == 0 && ctx.Err() != nil {
			return false, context.Cause(ctx)
		}
		if err := proto.Unmarshal(data, &m); err != nil {
			return true, nil // the document skips it too
		}
		c := byID[m.GetId()]
		if c == nil {
			if len(m.GetAttachments()) == 0 {
				return true, nil
			}
			ts := m.GetTs().AsTime()
			c = &carried{inRange: (scope.GetFrom() == nil || !ts.Before(scope.GetFrom().AsTime())) &&
				(scope.GetTo() == nil || !ts.After(scope.GetTo().AsTime()))}
			byID[m.GetId()] = c
			order = append(order, m.GetId())
		}
		// The latest version's attachments are the ones shown.
		c.attachments = c.attachments[:0]
		for _, a := range m.GetAttachments() {
			c.attachments = append(c.attachments, proto.CloneOf(a))
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	var (
		list []*sourcev1.Attachment
		seen = map[string]bool{}
	)
	for _, id := range order {
		c := byID[id]
		if !c.inRange {
			continue
		}
		for _, a := range c.attachments {
			if a.GetFileId() != "" && !seen[a.GetFileId()] {
				seen[a.GetFileId()] = true
				list = append(list, a)
			}
		}
	}
	return list, nil
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
