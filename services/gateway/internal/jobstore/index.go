package jobstore

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/kvbatch"
)

// The index (bucket bus.BucketJobIndex) answers every listing from keys
// built for it, so a listing costs what the caller's own jobs cost and
// never reads every job. Each key names one job; values are empty. The
// families:
//
//	own.<owner>.<dialect>.<org>.<kind>.<inverted created_at>.<job id>
//	org.<dialect>.<org>.<inverted created_at>.<job id>   (jobs with an organization)
//	par.<parent>.<inverted created_at>.<job id>          (runs of a schedule)
//	act.<owner>.<created_at>.<job id>                    (unfinished jobs)
//	run.<kind>.<created_at>.<job id>                     (unfinished jobs)
//
// Owners, organizations and parents are hashed into a token; dialects and
// kinds are used as they are when they form a token. Timestamps are
// nanoseconds, 19 digits, the inverted ones counted down from MaxInt64 so
// that newest sorts first.
//
// Entries are hints, verified against the job record on every read: an
// entry counts only if the job exists and its own keys include the entry
// (and, for act and run, the job has not ended). That is what keeps the
// index consistent without a transaction:
//
//   - Store.apply writes a new job's entries before the job record, so a
//     job that exists is always indexed; an entry whose create failed or
//     lost a race names a missing or different job and is ignored, and
//     purged once it is older than staleEntry.
//   - act and run entries are purged when the job first becomes terminal;
//     a purge lost to a crash leaves an entry that names an ended job,
//     which reads ignore and purge.
//   - Applying an ExportRequested that changes nothing (the copy from the
//     stream) indexes its job if it is not yet: jobs created by a gateway
//     that predates the index are picked up as their requests come back.
//   - BuildIndex indexes every job of the old layout once, at start.
//
// The indexed fields (owner, dialect, organization, kind, parent,
// created_at) are never changed by reduce, so a job's keys are fixed for
// its life.

const (
	famOwner   = "own"
	famOrg     = "org"
	famParent  = "par"
	famActive  = "act"
	famRunning = "run"
	// builtKey marks that BuildIndex has run to its end on this
	// deployment.
	builtKey = "meta.built"
	// staleEntry is how long an entry may name a job that does not exist:
	// Submit writes the job within submit.Timeout (15 s) of its entries.
	staleEntry = 2 * time.Minute
	// markerTTL is how long a purged entry leaves its marker: the index
	// bucket keeps no tombstones, so a listing never reads the entries of
	// jobs long ended.
	markerTTL = time.Minute
	// fetchers bounds the purges and index writes run at once.
	fetchers = 16
	// minBatch is the fewest entries Find reads at once while it fills a
	// page, so that a page whose entries are partly stale or filtered out
	// does not take one round trip per missing job.
	minBatch = 64
)

// plainToken reports whether s may stand for itself in a key: 1 to 32 of
// [a-z0-9_]. It runs twice per job of every listing, where a regexp
// cost a tenth of the listing.
func plainToken(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

func hashToken(s string) string {
	if s == "" {
		return "-"
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

func nameToken(s string) string {
	if s == "" {
		return "-"
	}
	if plainToken(s) {
		return s
	}
	return hashToken(s)
}

func kindToken(k exportv1.JobKind) string {
	return nameToken(strings.ToLower(strings.TrimPrefix(k.String(), "JOB_KIND_")))
}

// stamp is a job's created_at in nanoseconds, clamped to what the
// key layout can carry.
func stamp(job *exportv1.Job) int64 {
	ts := job.GetCreatedAt()
	if !ts.IsValid() {
		return 0
	}
	return max(ts.AsTime().UnixNano(), 0)
}

func forward(ns int64) string  { return fmt.Sprintf("%019d", ns) }
func inverted(ns int64) string { return fmt.Sprintf("%019d", math.MaxInt64-ns) }

// lastingKeys are the entries a job keeps for its life.
func lastingKeys(job *exportv1.Job) []string { return lastingKeysWith(job, hashToken) }

// lastingKeysWith is lastingKeys with hash as hashToken (a memo of it).
func lastingKeysWith(job *exportv1.Job, hash func(string) string) []string {
	inv, id := inverted(stamp(job)), job.GetId()
	keys := []string{strings.Join([]string{famOwner, hash(job.GetOwnerId()), nameToken(job.GetDialect()),
		hash(job.GetOrganizationId()), kindToken(job.GetKind()), inv, id}, ".")}
	if org := job.GetOrganizationId(); org != "" {
		keys = append(keys, strings.Join([]string{famOrg, nameToken(job.GetDialect()), hash(org), inv, id}, "."))
	}
	if p := job.GetParentId(); p != "" {
		keys = append(keys, strings.Join([]string{famParent, hash(p), inv, id}, "."))
	}
	return keys
}

// unfinishedKeys are the entries a job holds until it ends.
func unfinishedKeys(job *exportv1.Job) []string { return unfinishedKeysWith(job, hashToken) }

func unfinishedKeysWith(job *exportv1.Job, hash func(string) string) []string {
	fwd, id := forward(stamp(job)), job.GetId()
	return []string{
		strings.Join([]string{famActive, hash(job.GetOwnerId()), fwd, id}, "."),
		strings.Join([]string{famRunning, kindToken(job.GetKind()), fwd, id}, "."),
	}
}

// holds reports whether key is one of job's current entries; hash is
// hashToken or a memo of it.
func holds(job *exportv1.Job, key string, hash func(string) string) bool {
	switch fam, _, _ := strings.Cut(key, "."); fam {
	case famOwner, famOrg, famParent:
		return slices.Contains(lastingKeysWith(job, hash), key)
	case famActive, famRunning:
		return !Terminal(job.GetState()) && slices.Contains(unfinishedKeysWith(job, hash), key)
	}
	return false
}

// hashMemo returns hashToken remembering its answers: the jobs of one
// listing share their owner and organization, and a SHA-256 per job and
// field was a fifth of a large listing's time.
func hashMemo() func(string) string {
	seen := map[string]string{}
	return func(s string) string {
		h, ok := seen[s]
		if !ok {
			h = hashToken(s)
			seen[s] = h
		}
		return h
	}
}

// entry is an index key split into what listings sort and verify by.
type entry struct {
	key   string
	stamp int64
	id    string
}

// parseEntry reads the last two tokens of key: the (possibly inverted)
// timestamp and the job id.
func parseEntry(key string, inverted bool) (entry, bool) {
	i := strings.LastIndexByte(key, '.')
	if i < 0 {
		return entry{}, false
	}
	j := strings.LastIndexByte(key[:i], '.')
	n, err := strconv.ParseInt(key[j+1:i], 10, 64)
	if err != nil || n < 0 {
		return entry{}, false
	}
	if inverted {
		n = math.MaxInt64 - n
	}
	return entry{key: key, stamp: n, id: key[i+1:]}, true
}

// newestFirst is the order of every listing: created_at descending, then
// id descending (as jobs were always listed).
func newestFirst(a, b entry) int {
	if c := cmp.Compare(b.stamp, a.stamp); c != 0 {
		return c
	}
	return cmp.Compare(b.id, a.id)
}

// writeIndex puts job's entries: the lasting ones, and the unfinished ones
// while the job runs. Puts are idempotent, so replicas and retries may
// repeat them.
func (s *Store) writeIndex(ctx context.Context, job *exportv1.Job) error {
	keys := lastingKeys(job)
	if !Terminal(job.GetState()) {
		keys = append(keys, unfinishedKeys(job)...)
	}
	for _, k := range keys {
		if _, err := s.index.Put(ctx, k, nil); err != nil {
			return fmt.Errorf("index job %s: %w", job.GetId(), err)
		}
	}
	return nil
}

// ensureIndexed indexes job unless its owner entry is there already.
func (s *Store) ensureIndexed(ctx context.Context, job *exportv1.Job) error {
	_, err := s.index.Get(ctx, lastingKeys(job)[0])
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("index job %s: %w", job.GetId(), err)
	}
	return s.writeIndex(ctx, job)
}

// unindexFinished purges the entries a job holds only while it runs.
// A failure leaves entries that reads recognise as stale and purge, so
// it is not reported.
func (s *Store) unindexFinished(ctx context.Context, job *exportv1.Job) {
	for _, k := range unfinishedKeys(job) {
		s.purge(ctx, k)
	}
}

func (s *Store) purge(ctx context.Context, key string) {
	_ = s.index.Purge(ctx, key, jetstream.PurgeTTL(markerTTL))
}

// listEntries returns the index entries under filter. It asks the index
// bucket's stream which subjects under the filter hold a message: one
// request per hundred thousand entries, no consumer. A purged entry's
// marker is listed until it expires (markerTTL); fetch recognises the
// entry as stale like any other.
func (s *Store) listEntries(ctx context.Context, filter string, inverted bool) ([]entry, error) {
	stream, err := s.indexStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("list index %s: %w", filter, err)
	}
	prefix := "$KV." + s.index.Bucket() + "."
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(prefix+filter))
	if err != nil {
		return nil, fmt.Errorf("list index %s: %w", filter, err)
	}
	out := make([]entry, 0, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		if e, ok := parseEntry(strings.TrimPrefix(subject, prefix), inverted); ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// indexStream is the index bucket's stream, looked up once.
func (s *Store) indexStream(ctx context.Context) (jetstream.Stream, error) {
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	if s.stream == nil {
		st, err := s.js.Stream(ctx, "KV_"+s.index.Bucket())
		if err != nil {
			return nil, err
		}
		s.stream = st
	}
	return s.stream, nil
}

// fetch reads the jobs of entries (one request per thousand, see
// kvbatch) and returns, in the same order, each job that the entry truly
// names (nil for the others). Entries found stale are purged on the way.
func (s *Store) fetch(ctx context.Context, entries []entry) ([]*exportv1.Job, error) {
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.id
	}
	values, err := kvbatch.Get(ctx, s.js, s.kv, ids)
	if err != nil {
		return nil, err
	}
	jobs := make([]*exportv1.Job, len(entries))
	var stale []string
	now := s.now()
	hash := hashMemo()
	for i, e := range entries {
		data, ok := values[e.id]
		if !ok {
			if now.Sub(time.Unix(0, e.stamp)) > staleEntry {
				stale = append(stale, e.key)
			}
			continue
		}
		job := &exportv1.Job{}
		if err := proto.Unmarshal(data, job); err != nil {
			return nil, fmt.Errorf("decode job %s: %w", e.id, err)
		}
		if !holds(job, e.key, hash) {
			stale = append(stale, e.key)
			continue
		}
		jobs[i] = job
	}
	if len(stale) > 0 {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(fetchers)
		for _, k := range stale {
			g.Go(func() error { s.purge(gctx, k); return nil })
		}
		_ = g.Wait()
	}
	return jobs, nil
}

// Scope names a set of jobs the index lists.
//
//   - Owner alone: every job of the owner, any dialect and organization.
//   - Owner and Dialect: the owner's jobs of that dialect in Organization
//     ("" meaning jobs of no organization).
//   - Dialect and Organization without Owner: every owner's jobs of that
//     dialect in the organization (an administrator's view).
//   - Parent: the runs of one schedule.
//
// Kind, when set, narrows any of them to one job kind.
type Scope struct {
	Owner        string
	Dialect      string
	Organization string
	Kind         exportv1.JobKind
	Parent       string
}

func (sc Scope) filter() (string, error) {
	kind := "*"
	if sc.Kind != exportv1.JobKind_JOB_KIND_UNSPECIFIED {
		kind = kindToken(sc.Kind)
	}
	switch {
	case sc.Parent != "":
		return famParent + "." + hashToken(sc.Parent) + ".>", nil
	case sc.Owner != "" && sc.Dialect == "":
		return strings.Join([]string{famOwner, hashToken(sc.Owner), "*", "*", kind, ">"}, "."), nil
	case sc.Owner != "":
		return strings.Join([]string{famOwner, hashToken(sc.Owner), nameToken(sc.Dialect), hashToken(sc.Organization), kind, ">"}, "."), nil
	case sc.Dialect != "" && sc.Organization != "":
		return strings.Join([]string{famOrg, nameToken(sc.Dialect), hashToken(sc.Organization), ">"}, "."), nil
	}
	return "", fmt.Errorf("jobstore: scope %+v names no index", sc)
}

// matches checks what the filter cannot: tokens are hashes, so the job
// itself decides.
func (sc Scope) matches(job *exportv1.Job) bool {
	switch {
	case sc.Parent != "" && job.GetParentId() != sc.Parent:
		return false
	case sc.Owner != "" && job.GetOwnerId() != sc.Owner:
		return false
	case sc.Dialect != "" && (job.GetDialect() != sc.Dialect || job.GetOrganizationId() != sc.Organization):
		return false
	case sc.Kind != exportv1.JobKind_JOB_KIND_UNSPECIFIED && job.GetKind() != sc.Kind:
		return false
	}
	return true
}

// Query is one listing: the jobs of Scope that Keep accepts (nil: all),
// newest first, the first Limit of them (0: all) after the cursor After
// ("" : from the newest).
type Query struct {
	Scope
	Keep  func(*exportv1.Job) bool
	After string
	Limit int
}

// ErrBadCursor is returned by Find for an After it did not hand out.
var ErrBadCursor = errors.New("jobstore: invalid cursor")

// cursor encodes the position of e; only the order of entries matters, so
// a cursor stays valid when the job it names goes away.
func cursor(e entry) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(e.stamp, 10) + "." + e.id))
}

func parseCursor(c string) (entry, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return entry{}, ErrBadCursor
	}
	ts, id, ok := strings.Cut(string(b), ".")
	n, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || !ValidID(id) {
		return entry{}, ErrBadCursor
	}
	return entry{stamp: n, id: id}, nil
}

// Page is one answer of Find.
type Page struct {
	// Jobs are the page's jobs, newest first.
	Jobs []*exportv1.Job
	// Next is the cursor of the following page, "" when this page is the
	// last.
	Next string
	// Total is how many index entries the scope holds: the number of its
	// jobs (before Keep), read without reading them. An entry is written
	// just before its job, so while a create is in flight, or after it
	// failed until its entry is purged, Total may count one job the pages
	// do not show.
	Total int
}

// Find lists the jobs q asks for, newest first. It reads the index
// entries of q's scope and then only as many jobs as the page needs (all
// of the scope's when Keep must see them), so its cost is bounded by the
// scope's own jobs whatever the rest of the projection holds.
func (s *Store) Find(ctx context.Context, q Query) (Page, error) {
	filter, err := q.filter()
	if err != nil {
		return Page{}, err
	}
	entries, err := s.listEntries(ctx, filter, true)
	if err != nil {
		return Page{}, err
	}
	page := Page{Total: len(entries)}
	slices.SortFunc(entries, newestFirst)
	if q.After != "" {
		after, err := parseCursor(q.After)
		if err != nil {
			return Page{}, err
		}
		i, _ := slices.BinarySearchFunc(entries, after, newestFirst)
		if i < len(entries) && newestFirst(entries[i], after) == 0 {
			i++
		}
		entries = entries[i:]
	}
	for len(entries) > 0 && (q.Limit == 0 || len(page.Jobs) < q.Limit) {
		n := len(entries)
		if q.Limit > 0 {
			n = min(n, max(q.Limit-len(page.Jobs), minBatch))
		}
		batch, err := s.fetch(ctx, entries[:n])
		if err != nil {
			return Page{}, fmt.Errorf("list jobs: %w", err)
		}
		for i, job := range batch {
			if job == nil || !q.matches(job) || (q.Keep != nil && !q.Keep(job)) {
				continue
			}
			page.Jobs = append(page.Jobs, job)
			if q.Limit > 0 && len(page.Jobs) == q.Limit {
				if i+1 < len(entries) {
					page.Next = cursor(entries[i])
				}
				return page, nil
			}
		}
		entries = entries[n:]
	}
	return page, nil
}

// List returns ownerID's jobs, newest first.
func (s *Store) List(ctx context.Context, ownerID string) ([]*exportv1.Job, error) {
	if ownerID == "" {
		return nil, nil
	}
	page, err := s.Find(ctx, Query{Scope: Scope{Owner: ownerID}})
	return page.Jobs, err
}

// Unfinished returns the jobs that have not ended, oldest first: those of
// ownerID, or every owner's when ownerID is "", narrowed to kind unless it
// is unspecified. Its cost is bounded by the unfinished jobs it names.
func (s *Store) Unfinished(ctx context.Context, ownerID string, kind exportv1.JobKind) ([]*exportv1.Job, error) {
	filter := famRunning + ".>"
	switch {
	case ownerID != "":
		filter = famActive + "." + hashToken(ownerID) + ".>"
	case kind != exportv1.JobKind_JOB_KIND_UNSPECIFIED:
		filter = famRunning + "." + kindToken(kind) + ".>"
	}
	entries, err := s.listEntries(ctx, filter, false)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(entries, func(a, b entry) int { return newestFirst(b, a) })
	batch, err := s.fetch(ctx, entries)
	if err != nil {
		return nil, fmt.Errorf("list unfinished jobs: %w", err)
	}
	scope := Scope{Owner: ownerID, Kind: kind}
	var jobs []*exportv1.Job
	seen := map[string]bool{}
	for _, job := range batch {
		if job == nil || seen[job.GetId()] || !scope.matches(job) {
			continue
		}
		seen[job.GetId()] = true
		jobs = append(jobs, job)
	}
	return jobs, nil
}

// BuildIndex indexes every job of the bucket unless that was done before
// on this deployment: the one-time migration of a projection written
// before the index existed. It reads every job once, so it runs at start,
// never on a request. It streams: one job is decoded at a time, and its
// entries are published asynchronously, at most buildWindow of them
// unacknowledged, so a million jobs take one pass over the bucket and
// little memory. It is idempotent and safe to run on several replicas at
// once (every write is a put of an empty entry; a job that ends meanwhile
// leaves at most a stale unfinished entry, which reads purge). built
// reports whether this call did the work.
func (s *Store) BuildIndex(ctx context.Context) (built bool, err error) {
	if _, err := s.index.Get(ctx, builtKey); err == nil {
		return false, nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, fmt.Errorf("build index: %w", err)
	}
	// A put of a KV entry is a publish on its subject; publishing
	// directly lets many be in flight at once instead of one round trip
	// per entry.
	prefix := "$KV." + s.index.Bucket() + "."
	var inflight []jetstream.PubAckFuture
	// wait settles the oldest publishes until at most keep are in flight.
	wait := func(keep int) error {
		for len(inflight) > keep {
			f := inflight[0]
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("index %s: %w", f.Msg().Subject, err)
			case <-ctx.Done():
				return ctx.Err()
			}
			inflight = inflight[1:]
		}
		return nil
	}
	err = s.scan(ctx, func(job *exportv1.Job) error {
		keys := lastingKeys(job)
		if !Terminal(job.GetState()) {
			keys = append(keys, unfinishedKeys(job)...)
		}
		for _, k := range keys {
			f, err := s.js.PublishAsync(prefix+k, nil)
			if err != nil {
				return fmt.Errorf("index job %s: %w", job.GetId(), err)
			}
			inflight = append(inflight, f)
		}
		return wait(buildWindow)
	})
	if err == nil {
		err = wait(0)
	}
	if err != nil {
		return false, fmt.Errorf("build index: %w", err)
	}
	if _, err := s.index.Put(ctx, builtKey, []byte(s.now().UTC().Format(time.RFC3339))); err != nil {
		return false, fmt.Errorf("build index: %w", err)
	}
	return true, nil
}

// buildWindow bounds BuildIndex's unacknowledged publishes, below the
// JetStream context's default limit of async publishes in flight (4,000):
// the oldest is waited for before more go out.
const buildWindow = 1024

// scan calls fn with every job of the bucket, one at a time, holding none
// of them, and stops at fn's first error. It reads the bucket's stream
// with an ordered pull consumer, the last message of each key, at most
// scanBatch of them buffered: a watcher would buffer as much of the bucket
// as the server sends ahead of fn (about 670 MiB at a million jobs).
// Every message is delivered in stream order, and the message that was
// last when the scan began is either still current or superseded by a
// newer one, so the scan ends once it has seen a sequence at least that
// one, or nothing is pending.
func (s *Store) scan(ctx context.Context, fn func(*exportv1.Job) error) error {
	stream, err := s.js.Stream(ctx, "KV_"+s.kv.Bucket())
	if err != nil {
		return err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy, InactiveThreshold: time.Minute,
	})
	if err != nil {
		return err
	}
	msgs, err := cons.Messages(jetstream.PullMaxMessages(scanBatch))
	if err != nil {
		return err
	}
	defer msgs.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		msg, err := msgs.Next(jetstream.NextMaxWait(5 * time.Second))
		if errors.Is(err, nats.ErrTimeout) {
			// Nothing came: done if nothing is pending (every key left
			// was deleted after the scan began), else the server is slow.
			ci, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			if ci.NumPending == 0 {
				return nil
			}
			continue
		}
		if err != nil {
			return err
		}
		meta, err := msg.Metadata()
		if err != nil {
			return err
		}
		if h := msg.Headers(); h.Get("KV-Operation") == "" && h.Get("Nats-Marker-Reason") == "" {
			job := &exportv1.Job{}
			if err := proto.Unmarshal(msg.Data(), job); err != nil {
				return fmt.Errorf("decode job %s: %w", msg.Subject(), err)
			}
			if err := fn(job); err != nil {
				return err
			}
		}
		if meta.Sequence.Stream >= last || meta.NumPending == 0 {
			return nil
		}
	}
}

// scanBatch is how many jobs scan holds buffered at most.
const scanBatch = 256
