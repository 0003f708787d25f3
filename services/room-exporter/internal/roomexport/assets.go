package roomexport

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"sync"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protodelim"
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
// checkpoint from the segments of the list its checkpoint names.

// assetCollector is a Renderer that remembers the attachments of the
// messages it passes on, in order and once each, on local disk
// (attachmentList). Its checkpoints name the segments of the list it
// uploaded at each of them (segs), not the list itself.
type assetCollector struct {
	inner Renderer
	list  *attachmentList
	// ahead, when not nil, describes each attachment as soon as it is
	// collected, beside the render (listAhead).
	ahead *assetLister
	segs  *segmentStore
	// segments are uploaded, holding the list's first segListed
	// attachments, its first segEnd bytes.
	segments, segListed int
	segEnd              int64
}

// collectAssets wraps format's renderers in an assetCollector, which
// *into receives once New has run; its checkpoints keep the list in the
// task's segments. The caller closes *into.
func (e *Exporter) collectAssets(ctx context.Context, task *exportv1.ExportTask, format Format, into **assetCollector) Format {
	return e.collectAssetsAhead(ctx, task, format, into, nil)
}

// collectAssetsAhead is collectAssets with the attachments handed to
// ahead as they are collected, so that roomAssets finds them described
// when the render ends. Every renderer New makes (a speculative render
// and the planned one that replaces it) shares ahead; a new one closes
// the collector it replaces.
func (e *Exporter) collectAssetsAhead(ctx context.Context, task *exportv1.ExportTask, format Format, into **assetCollector, ahead *assetLister) Format {
	inner := format.New
	segs := &segmentStore{ctx: ctx, store: e.store, bucket: e.bucket, jobID: task.GetJobId(), part: task.GetPart()}
	format.New = func(w io.Writer, meta Meta) Renderer {
		(*into).close()
		c := &assetCollector{inner: inner(w, meta), list: newAttachmentList(), ahead: ahead, segs: segs}
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
		if err := c.add(a); err != nil {
			return err
		}
	}
	return c.inner.Message(m)
}

func (c *assetCollector) add(a *sourcev1.Attachment) error {
	added, err := c.list.add(a)
	if added {
		c.ahead.want(a)
	}
	return err
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
		if err := c.add(&sourcev1.Attachment{FileId: a[0], Name: a[1], ObjectKey: a[2], ContentType: a[3]}); err != nil {
			return err
		}
	}
	for n := range st.Segments {
		if err := c.segs.each(n, c.add); err != nil {
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

// listBatch is how many attachments roomAssets describes before it
// writes them out in order: what it holds of the list at a time.
const listBatch = 256

// roomAssets returns the files the room part's messages link to, as c
// collected them (with those before the checkpoint of a resumed part),
// each described by its object's metadata (describeAsset), assetReaders
// at a time; those c's lister (if any) described during the render are
// taken from it. The listing is on local disk; the caller closes it.
// The document's upload is complete by now, so no checkpoint can resume
// it: the list's segments are deleted.
func (e *Exporter) roomAssets(ctx context.Context, t *taskrun.Task, c *assetCollector) (*assetListing, error) {
	if c == nil {
		return nil, nil
	}
	if c.ahead != nil {
		c.ahead.wait()
	}
	out, err := newAssetListing()
	if err != nil {
		return nil, err
	}
	var missing, read int
	batch := make([]*sourcev1.Attachment, 0, listBatch)
	found := make([]described, listBatch)
	flush := func() error {
		found := found[:len(batch)]
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(assetReaders)
		for i, a := range batch {
			if c.ahead != nil {
				var err error
				if found[i], err = c.ahead.result(a); err != nil {
					return err
				}
			}
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
				return context.Cause(ctx)
			}
			return err
		}
		for i, a := range batch {
			f := found[i].file
			switch d := found[i]; {
			case assetGone(d.err):
				if missing < missingLogged {
					t.Log.WarnContext(ctx, "asset object missing; listed as missing", "file_id", a.GetFileId(), "object_key", a.GetObjectKey())
				}
				f = e.missingAsset(a)
				missing++
			case d.read:
				read++
			}
			if err := out.add(f); err != nil {
				return err
			}
			found[i] = described{}
		}
		batch = batch[:0]
		return nil
	}
	err = c.list.each(func(a *sourcev1.Attachment) error {
		if batch = append(batch, a); len(batch) < listBatch {
			return nil
		}
		return flush()
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		out.close()
		return nil, err
	}
	c.segs.deleteAll(ctx, t)
	switch {
	case missing > missingLogged:
		t.Log.WarnContext(ctx, "room attachments listed; more objects missing than logged one by one",
			"attachments", out.n, "missing", missing, "logged", missingLogged, "read_in_full", read)
	case out.n > 0:
		t.Log.InfoContext(ctx, "room attachments listed", "attachments", out.n, "missing", missing, "read_in_full", read)
	}
	return out, nil
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
// "Attachments by their checksum"). It makes at most aheadReaders object
// requests at a time, so that the part uploads, which share the store,
// are not kept waiting; the render only queues, and what arrives while
// aheadQueued are waiting is left to roomAssets. The descriptions go to
// an unlinked local file; in memory it keeps a slot of 8 bytes per
// description (offsetIndex) and the hashes of those queued or being
// described.
// want is called by the render's goroutine; wait and result by the
// part's, after the render; stop ends it whatever happened.
type assetLister struct {
	e      *Exporter
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	queue []*sourcev1.Attachment
	// index finds a description in out by a hash of its assetKey;
	// pending holds the hashes of those queued or being described (at
	// most aheadQueued + aheadReaders, and what a failed describe left).
	// An attachment whose hash or slot another one's took is not
	// described here but by roomAssets, which checks the key of what it
	// reads: the lister is a cache of descriptions, not their record.
	index   offsetIndex
	pending map[uint64]struct{}
	seed    maphash.Seed
	hash    func(*sourcev1.Attachment) uint64 // seededHash
	out     *blob.PartFile                    // created by the first description
	closed  bool
	wake    chan struct{} // a queued attachment or closed, for the dispatcher
	started bool
	// finished is closed when the dispatcher and every describe it started
	// have returned.
	finished chan struct{}
}

// aheadQueued is the most attachments an assetLister holds waiting: a
// render far ahead of the describing leaves the rest to roomAssets
// rather than queue the room's every attachment in memory.
const aheadQueued = 1024

// assetKey is what describeAsset's answer depends on.
type assetKey struct{ fileID, name, objectKey, contentType string }

func keyOf(a *sourcev1.Attachment) assetKey {
	return assetKey{a.GetFileId(), a.GetName(), a.GetObjectKey(), a.GetContentType()}
}

func (l *assetLister) seededHash(a *sourcev1.Attachment) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	for _, s := range []string{a.GetFileId(), a.GetName(), a.GetObjectKey(), a.GetContentType()} {
		h.WriteString(s)
		h.WriteByte(0)
	}
	return h.Sum64()
}

// listAhead returns a lister whose requests end with ctx or stop.
func (e *Exporter) listAhead(ctx context.Context) *assetLister {
	ctx, cancel := context.WithCancel(ctx)
	l := &assetLister{e: e, ctx: ctx, cancel: cancel, pending: map[uint64]struct{}{}, seed: maphash.MakeSeed(),
		wake: make(chan struct{}, 1), finished: make(chan struct{})}
	l.hash = l.seededHash
	return l
}

// want queues a for describing, once per attachment; a nil lister does
// nothing. a must not change afterwards.
func (l *assetLister) want(a *sourcev1.Attachment) {
	if l == nil {
		return
	}
	k := l.hash(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.pending[k]; ok || l.closed || len(l.queue) >= aheadQueued || l.index.mayHave(k) {
		return
	}
	l.pending[k] = struct{}{}
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

// dispatch describes the queued attachments, aheadReaders at a time,
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
			if err := l.keep(a, d); err != nil {
				l.cancel() // a local disk failing: roomAssets tries it again
			}
			return nil
		})
	}
}

// Description records in out: a flags byte, then the attachment and,
// unless it is gone, its File, each delimited.
const (
	describedRead byte = 1 << iota
	describedGone
)

// keep writes d, a's description, to out.
func (l *assetLister) keep(a *sourcev1.Attachment, d described) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.out == nil {
		f, err := blob.NewPartFile(os.TempDir())
		if err != nil {
			return err
		}
		l.out = f
	}
	k := l.hash(a)
	delete(l.pending, k)
	if l.index.full() {
		if err := l.index.grow(l.rehash); err != nil {
			return err
		}
	}
	off := int64(l.out.Len())
	var flags byte
	if d.read {
		flags |= describedRead
	}
	if d.err != nil {
		flags |= describedGone
	}
	if _, err := l.out.Write([]byte{flags}); err != nil {
		return err
	}
	key := &sourcev1.Attachment{FileId: a.GetFileId(), Name: a.GetName(), ObjectKey: a.GetObjectKey(), ContentType: a.GetContentType()}
	if _, err := protodelim.MarshalTo(l.out, key); err != nil {
		return err
	}
	if d.err == nil {
		if _, err := protodelim.MarshalTo(l.out, d.file); err != nil {
			return err
		}
	}
	return l.index.put(k, off)
}

// rehash puts every description of out into a grown index.
func (l *assetLister) rehash(put func(h uint64, off int64) error) error {
	r, err := l.out.Contents()
	if err != nil {
		return err
	}
	br := bufio.NewReaderSize(r, 64<<10)
	var off int64
	var key sourcev1.Attachment
	var body []byte
	for {
		flags, err := br.ReadByte()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("attachment description at %d: %w", off, err)
		}
		size, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("attachment description at %d: %w", off, err)
		}
		if uint64(cap(body)) < size {
			body = make([]byte, size)
		}
		body = body[:size]
		if _, err := io.ReadFull(br, body); err != nil {
			return fmt.Errorf("attachment description at %d: %w", off, err)
		}
		if err := proto.Unmarshal(body, &key); err != nil {
			return fmt.Errorf("attachment description at %d: %w", off, err)
		}
		if err := put(l.hash(&key), off); err != nil {
			return err
		}
		next := 1 + int64(uvarintLen(size)) + int64(size)
		if flags&describedGone == 0 {
			size, err := binary.ReadUvarint(br)
			if err != nil {
				return fmt.Errorf("attachment description at %d: %w", off, err)
			}
			if _, err := br.Discard(int(size)); err != nil {
				return fmt.Errorf("attachment description at %d: %w", off, err)
			}
			next += int64(uvarintLen(size)) + int64(size)
		}
		off += next
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
	l.queue = nil
	started := l.started
	l.mu.Unlock()
	if started {
		l.signal()
		<-l.finished
	}
}

// result is a's description, if the lister has it (done is false if
// not); an error only when its description cannot be read back.
func (l *assetLister) result(a *sourcev1.Attachment) (described, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	want := keyOf(a)
	var d described
	_, err := l.index.candidates(l.hash(a), func(off int64) (bool, error) {
		var err error
		d, err = l.descriptionAt(off, want)
		return d.done, err
	})
	if err != nil {
		return described{}, err
	}
	return d, nil
}

// descriptionAt reads the description at off, if it is the one of the
// attachment whose key is want (done is false if not).
func (l *assetLister) descriptionAt(off int64, want assetKey) (described, error) {
	r, err := l.out.Contents()
	if err != nil {
		return described{}, err
	}
	br := bufio.NewReaderSize(io.NewSectionReader(r, off, r.Size()-off), 512)
	flags, err := br.ReadByte()
	if err != nil {
		return described{}, fmt.Errorf("attachment description: %w", err)
	}
	var key sourcev1.Attachment
	if err := protodelim.UnmarshalFrom(br, &key); err != nil {
		return described{}, fmt.Errorf("attachment description: %w", err)
	}
	if keyOf(&key) != want {
		return described{}, nil // another attachment with the same slot
	}
	d := described{read: flags&describedRead != 0, done: true}
	if flags&describedGone != 0 {
		d.err = blob.ErrNotFound
		return d, nil
	}
	d.file = new(exportv1.File)
	if err := protodelim.UnmarshalFrom(br, d.file); err != nil {
		return described{}, fmt.Errorf("attachment description: %w", err)
	}
	return d, nil
}

// stop cancels what is still being described, waits for it and releases
// the descriptions' file.
func (l *assetLister) stop() {
	l.cancel()
	l.wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.out != nil {
		l.out.Close()
		l.out = nil
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
