package roomexport

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

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
	// ahead, when not nil, describes each attachment as soon as it is
	// collected, beside the render (listAhead).
	ahead *assetLister
}

// collectAssets wraps format's renderers in an assetCollector, which
// *list receives once New has run.
func collectAssets(format Format, into **assetCollector) Format {
	return collectAssetsAhead(format, into, nil)
}

// collectAssetsAhead is collectAssets with the attachments handed to
// ahead as they are collected, so that roomAssets finds them described
// when the render ends. Every renderer New makes (a speculative render
// and the planned one that replaces it) shares ahead.
func collectAssetsAhead(format Format, into **assetCollector, ahead *assetLister) Format {
	inner := format.New
	format.New = func(w io.Writer, meta Meta) Renderer {
		c := &assetCollector{inner: inner(w, meta), seen: map[string]bool{}, ahead: ahead}
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
			a := proto.CloneOf(a)
			c.list = append(c.list, a)
			c.ahead.want(a)
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
		at := &sourcev1.Attachment{FileId: a[0], Name: a[1], ObjectKey: a[2], ContentType: a[3]}
		c.list = append(c.list, at)
		c.ahead.want(at)
	}
	return s.restoreState(st.Inner)
}

// roomAssets returns the files the room part's messages link to, as c
// collected them (with those before the checkpoint of a resumed part),
// each described by its object's metadata (describeAsset), assetReaders
// at a time; those c's lister (if any) described during the render are
// taken from it.
func (e *Exporter) roomAssets(ctx context.Context, t *taskrun.Task, c *assetCollector) ([]*exportv1.File, error) {
	if c == nil {
		return nil, nil
	}
	list := c.list
	found := make([]described, len(list))
	if c.ahead != nil {
		c.ahead.wait()
		for i, a := range list {
			found[i] = c.ahead.result(a)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(assetReaders)
	for i, a := range list {
		if found[i].done {
			continue
		}
		g.Go(func() error {
			found[i] = e.describeListed(gctx, a)
			if err := found[i].err; err != nil && !assetGone(err) {
				return err // the others stop: the part fails anyway
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	files := make([]*exportv1.File, len(list))
	var missing, read int
	for i, a := range list {
		switch d := found[i]; {
		case assetGone(d.err):
			if missing < missingLogged {
				t.Log.WarnContext(ctx, "asset object missing; listed as missing", "file_id", a.GetFileId(), "object_key", a.GetObjectKey())
			}
			files[i] = e.missingAsset(a)
			missing++
		default:
			files[i] = d.file
			if d.read {
				read++
			}
		}
	}
	switch {
	case missing > missingLogged:
		t.Log.WarnContext(ctx, "room attachments listed; more objects missing than logged one by one",
			"attachments", len(list), "missing", missing, "logged", missingLogged, "read_in_full", read)
	case len(list) > 0:
		t.Log.InfoContext(ctx, "room attachments listed", "attachments", len(list), "missing", missing, "read_in_full", read)
	}
	return files, nil
}

// assetGone reports a describe error that lists the attachment as
// missing: its object is not there (or its key could not name one).
func assetGone(err error) bool {
	return errors.Is(err, blob.ErrNotFound) || errors.Is(err, blob.ErrInvalidArgument)
}

// assetReaders is how many attachments roomAssets describes at once
// after the render: enough to hide the object store's latency, few enough
// to leave it to others. aheadReaders is how many an assetLister
// describes at once during the render, which shares the store with the
// part uploads and the two cores with the read and the broker: two keep
// the listing's share small while the render runs, and what they have
// not reached when it ends roomAssets describes, assetReaders at a time.
//
// missingLogged is how many missing objects a room names in the log one
// by one: a store that lost a room's files by the thousand says so in one
// record with the count, not in a record per file.
const (
	assetReaders  = 8
	aheadReaders  = 2
	missingLogged = 10
)

// described is the outcome of describing one attachment; done is false
// for one not described yet.
type described struct {
	file *exportv1.File
	err  error
	read bool // its object had no whole SHA-256 checksum and was read
	done bool
}

func (e *Exporter) describeListed(ctx context.Context, a *sourcev1.Attachment) described {
	f, read, err := e.describeAssetObject(ctx, a)
	return described{file: f, err: err, read: read, done: true}
}

// An assetLister describes a room part's attachments while the part
// renders, so that listing them adds little after the render on a room
// with thousands of attachments (a third of an edited room's export when
// they were read one after the other at its end; docs/BENCHMARKS.md,
// "Attachments by their checksum"). It holds one result per attachment,
// about the size of the list itself, and at most aheadReaders object
// requests at a time, so that the part uploads, which share the store,
// are not kept waiting; the render only queues.
// want is called by the render's goroutine; wait and result by the
// part's, after the render; stop ends it whatever happened.
type assetLister struct {
	e      *Exporter
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	queue   []*sourcev1.Attachment
	results map[assetKey]described // queued ones have done false until described
	closed  bool
	wake    chan struct{} // a queued attachment or closed, for the dispatcher
	started bool
	// finished is closed when the dispatcher and every describe it started
	// have returned.
	finished chan struct{}
}

// assetKey is what describeAsset's answer depends on.
type assetKey struct{ fileID, name, objectKey, contentType string }

func keyOf(a *sourcev1.Attachment) assetKey {
	return assetKey{a.GetFileId(), a.GetName(), a.GetObjectKey(), a.GetContentType()}
}

// listAhead returns a lister whose requests end with ctx or stop.
func (e *Exporter) listAhead(ctx context.Context) *assetLister {
	ctx, cancel := context.WithCancel(ctx)
	return &assetLister{e: e, ctx: ctx, cancel: cancel, results: map[assetKey]described{},
		wake: make(chan struct{}, 1), finished: make(chan struct{})}
}

// want queues a for describing, once per attachment; a nil lister does
// nothing. a must not change afterwards.
func (l *assetLister) want(a *sourcev1.Attachment) {
	if l == nil {
		return
	}
	k := keyOf(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.results[k]; ok || l.closed {
		return
	}
	l.results[k] = described{}
	l.queue = append(l.queue, a)
	if !l.started {
		// Started by the first attachment: a room without any costs no
		// goroutine.
		l.started = true
		go l.dispatch()
	}
	l.signal()
}

func (l *assetLister) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// dispatch describes the queued attachments, assetReaders at a time,
// until the lister is closed and its queue empty, or stopped.
func (l *assetLister) dispatch() {
	defer close(l.finished)
	var g errgroup.Group
	g.SetLimit(aheadReaders)
	defer func() { _ = g.Wait() }()
	for {
		a, ok := l.next()
		if !ok {
			return
		}
		g.Go(func() error {
			d := l.e.describeListed(l.ctx, a)
			if d.err != nil && !assetGone(d.err) {
				// Stopped, or the store failing: roomAssets describes
				// what is left itself, and reports the failure if it
				// lasts; nothing more is asked of the store meanwhile.
				l.cancel()
				return nil
			}
			l.mu.Lock()
			l.results[keyOf(a)] = d
			l.mu.Unlock()
			return nil
		})
	}
}

// next takes the next queued attachment, waiting for one; false once the
// lister is closed (what is still queued is roomAssets' to describe) or
// stopped.
func (l *assetLister) next() (*sourcev1.Attachment, bool) {
	for {
		if l.ctx.Err() != nil {
			return nil, false
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, false
		}
		if len(l.queue) > 0 {
			a := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			l.mu.Unlock()
			return a, true
		}
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-l.ctx.Done():
			return nil, false
		}
	}
}

// wait takes no more attachments, starts describing no more, and returns
// when those it started are described.
func (l *assetLister) wait() {
	l.mu.Lock()
	l.closed = true
	started := l.started
	l.mu.Unlock()
	if started {
		l.signal()
		<-l.finished
	}
}

// result is a's description, if the lister has it.
func (l *assetLister) result(a *sourcev1.Attachment) described {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.results[keyOf(a)]
}

// stop cancels what is still being described and waits for it.
func (l *assetLister) stop() {
	l.cancel()
	l.wait()
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

// describeAsset returns the listing of a's object: its size and SHA-256
// from the store's metadata when the object was stored with a whole
// SHA-256 checksum (blob.Store.Upload of an object up to blob.PartSize;
// any S3 PUT with x-amz-checksum-sha256), or else by reading it once
// (an object stored without a checksum, or multipart: its checksum is
// a composite of its parts').
func (e *Exporter) describeAsset(ctx context.Context, a *sourcev1.Attachment) (*exportv1.File, error) {
	f, _, err := e.describeAssetObject(ctx, a)
	return f, err
}

// describeAssetObject is describeAsset, also reporting whether it read
// the object.
func (e *Exporter) describeAssetObject(ctx context.Context, a *sourcev1.Attachment) (f *exportv1.File, read bool, err error) {
	key := a.GetObjectKey()
	if key == "" {
		return nil, false, blob.ErrNotFound
	}
	info, err := e.store.Stat(ctx, e.opts.AssetBucket, key)
	if err != nil {
		return nil, false, fmt.Errorf("stat asset %s: %w", key, err)
	}
	sum, ok := info.ObjectSHA256()
	if !ok {
		read = true
		if sum, info.Size, err = e.hashAsset(ctx, key); err != nil {
			return nil, read, err
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
	}, read, nil
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
