package jobstore

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/kvbatch"
)

// The index (bucket bus.BucketJobIndex) answers every listing from keys
// built for it, so a listing costs what the caller's own jobs cost and
// never reads every job. Each entry names one job. The families:
//
//	own.<owner>.<day>.<minute>.<dialect>.<org>.<kind>.<inverted created_at>.<job id>
//	org.<org>.<dialect>.<kind>.<inverted created_at>.<job id>   (jobs with an organization)
//	par.<parent>.<inverted created_at>.<job id>          (runs of a schedule)
//	act.<owner>.<created_at>.<job id>                    (unfinished jobs)
//	run.<kind>.<created_at>.<job id>                     (unfinished jobs)
//
// and beside the owner entries, written with them and never removed:
//
//	own.<owner>.<day>            (the owner has jobs created that day)
//	own.<owner>.<day>.<minute>   (the owner has jobs created that minute)
//	cnt.<owner>.<shard>          (jobs of the owner counted there, in decimal)
//	cnt.<owner>                  (the same, written by earlier versions)
//	blk.<owner>.<shard>          (summaries of the owner's jobs, see blocks.go)
//
// Owner and organization entries hold the job's summary (summary.go);
// the others are empty. Organizations have no counter: nothing reads one
// (the Rebilly list counts the summaries it filters), and every create of
// every member would contend for the one key.
//
// Owners, organizations and parents are hashed into a token; dialects and
// kinds are used as they are when they form a token. Timestamps are
// nanoseconds, 19 digits, the inverted ones counted down from MaxInt64 so
// that newest sorts first; <day> (6 digits) and <minute> (9 digits) are
// created_at's UTC day and minute since 1970, counted down the same way.
//
// An owner's page is read bucket by bucket, newest first: the owner's
// minute markers (or, past what one get answers, its day markers and
// then a day's minute markers), then the entries of a few minutes, each
// a direct get of the keys under one or more filters (kvbatch.MatchingAny,
// which never waits in the JetStream API queue), until the page is full.
// Reads that need no marker go with the first get: the owner's counter
// rides on it, and the cursor's minute of a page after a cursor is read
// beside it. A get answers each entry with its summary, a message each,
// which a page does not need: it is bounded to a little more than the
// page, and a minute holding more (a burst of creates) is listed by its
// keys instead, from the stream's info (see walkOwn). A page of n jobs
// thus reads about n entries plus the markers of the days and minutes it
// passes through, whatever else a minute, the owner or the projection
// holds. The total a listing reports is the owner's counter, not a count
// of entries.
//
// An organization's entries are only ever read all at once (an
// administrator's Rebilly list filters, sorts and counts all of them), so
// they have no day and minute buckets: walking buckets costs a round trip
// per minute with jobs, about 1,700 for 100,000 jobs a second apart.
// Their keys are listed with one stream-info request per 100,000, and
// their values (the summaries) read a thousand per direct get, a few at
// once; never the jobs.
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
//   - The owner entry is created (not put), and whoever creates it adds
//     one to the owner's counter, so each job is counted once however
//     many replicas, replays and builds index it. The counter is the sum
//     of counterShards keys (and the one key earlier versions wrote), a
//     job counted in the shard its entry hashes to: every create of one
//     owner contends for its counter, and a burst of them (scheduled
//     runs, a bulk fill) used up the retries of a single key. Each
//     addition is a revision-checked write retried with a fresh read
//     and the same Nats-Msg-Id (see bump), so a retry after an answer
//     that was lost adds nothing twice. A create whose count or job
//     write fails takes its one back and purges its owner entry, so
//     that the create tried again creates the entry and counts anew; a
//     twin applier of the same request whose job got written meanwhile
//     is re-indexed when the request comes back from the stream (below).
//     A process that dies between its entry and its job leaves the
//     counter one too high, and one that dies between its entry and the
//     counter one too low. The organization entry is created too, so
//     that no replay or build empties the summary it holds.
//   - act and run entries are purged when the job first becomes terminal;
//     a purge lost to a crash leaves an entry that names an ended job,
//     which reads ignore and purge.
//   - Applying an ExportRequested that changes nothing (the copy from the
//     stream) indexes its job if it is not yet: jobs created by a gateway
//     that predates the index are picked up as their requests come back.
//   - BuildIndex indexes every job of the projection once, at start; it
//     runs again for a deployment whose index has an earlier layout,
//     whose entries no read of this layout matches. Earlier layouts:
//     v1 owner entries own.<owner>.<dialect>.<org>.<kind>.<inv>.<job>
//     (marker meta.built), and v1 and v2 organization entries
//     org.<dialect>.<org>.<inv>.<job> without summaries (v2's marker
//     meta.built.v2). PurgeOldLayout removes them once no replica of the
//     old code can still be running (see there).
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
	famCount   = "cnt"
	// builtKey marks that BuildIndex has built this layout to its end on
	// this deployment; its value is when. The earlier layouts' markers
	// say nothing about this layout; PurgeOldLayout removes them.
	builtKey = "meta.built.v3"
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

// Owner buckets: a day and a minute of created_at, counted down so that
// the newest sorts first, in fixed widths so that tokens compare as
// strings.
const (
	nsPerMinute = int64(time.Minute)
	nsPerDay    = int64(24 * time.Hour)
	maxDay      = math.MaxInt64 / nsPerDay
	maxMinute   = math.MaxInt64 / nsPerMinute
)

func dayToken(ns int64) string    { return fmt.Sprintf("%06d", maxDay-ns/nsPerDay) }
func minuteToken(ns int64) string { return fmt.Sprintf("%09d", maxMinute-ns/nsPerMinute) }

// ownKey is a job's owner entry; hash is hashToken or a memo of it.
func ownKey(job *exportv1.Job, hash func(string) string) string {
	ts := stamp(job)
	return strings.Join([]string{famOwner, hash(job.GetOwnerId()), dayToken(ts), minuteToken(ts),
		nameToken(job.GetDialect()), hash(job.GetOrganizationId()), kindToken(job.GetKind()), inverted(ts), job.GetId()}, ".")
}

// ownMarkers are the day and minute markers of a job's owner entry.
func ownMarkers(job *exportv1.Job) []string {
	ts := stamp(job)
	day := famOwner + "." + hashToken(job.GetOwnerId()) + "." + dayToken(ts)
	return []string{day, day + "." + minuteToken(ts)}
}

// orgBase is the common prefix of an organization's entries of one
// dialect.
func orgBase(org, dialect string, hash func(string) string) string {
	return famOrg + "." + hash(org) + "." + nameToken(dialect)
}

// orgKey is a job's organization entry, "" for a job of no organization.
func orgKey(job *exportv1.Job, hash func(string) string) string {
	org := job.GetOrganizationId()
	if org == "" {
		return ""
	}
	return strings.Join([]string{orgBase(org, job.GetDialect(), hash), kindToken(job.GetKind()), inverted(stamp(job)), job.GetId()}, ".")
}

// lastingKeysWith are the entries a job keeps for its life: the owner
// entry first, then the organization entry if the job has an
// organization, then its schedule's; hash is hashToken or a memo of it.
func lastingKeysWith(job *exportv1.Job, hash func(string) string) []string {
	keys := []string{ownKey(job, hash)}
	if k := orgKey(job, hash); k != "" {
		keys = append(keys, k)
	}
	if k := parentKey(job, hash); k != "" {
		keys = append(keys, k)
	}
	return keys
}

// parentKey is a run's entry under its schedule, "" for a job that is no
// run.
func parentKey(job *exportv1.Job, hash func(string) string) string {
	p := job.GetParentId()
	if p == "" {
		return ""
	}
	return strings.Join([]string{famParent, hash(p), inverted(stamp(job)), job.GetId()}, ".")
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

// writeIndex writes job's entries: the markers, the owner entry, and the
// other lasting ones, and the unfinished ones while the job runs. Puts
// are idempotent, so replicas and retries may repeat them; the owner and
// organization entries are created. count is the job's count when this
// call created the owner entry (and so counted the job), else nil; a
// count that fails purges the entry it was for and fails the call.
func (s *Store) writeIndex(ctx context.Context, job *exportv1.Job) (count *jobCount, err error) {
	for _, k := range ownMarkers(job) {
		if _, err := s.index.Put(ctx, k, nil); err != nil {
			return nil, fmt.Errorf("index job %s: %w", job.GetId(), err)
		}
	}
	key := ownKey(job, hashToken)
	switch rev, err := s.index.Create(ctx, key, nil); {
	case err == nil:
		c := &jobCount{entry: key, owner: hashToken(job.GetOwnerId()), op: strconv.FormatUint(rev, 10)}
		if err := s.bump(ctx, c.key(), 1, "count."+c.op); err != nil {
			// The create tried again must find no entry, or it would
			// not count the job.
			s.purge(ctx, key)
			return nil, fmt.Errorf("count job %s: %w", job.GetId(), err)
		}
		count = c
	case !errors.Is(err, jetstream.ErrKeyExists):
		return nil, fmt.Errorf("index job %s: %w", job.GetId(), err)
	}
	if k := orgKey(job, hashToken); k != "" {
		if _, err := s.index.Create(ctx, k, nil); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return count, fmt.Errorf("index job %s: %w", job.GetId(), err)
		}
	}
	var keys []string
	if k := parentKey(job, hashToken); k != "" {
		keys = append(keys, k)
	}
	if !Terminal(job.GetState()) {
		keys = append(keys, unfinishedKeys(job)...)
	}
	for _, k := range keys {
		if _, err := s.index.Put(ctx, k, nil); err != nil {
			return count, fmt.Errorf("index job %s: %w", job.GetId(), err)
		}
	}
	return count, nil
}

// jobCount is the one a job's owner entry added to its owner's counter.
type jobCount struct {
	// entry is the owner entry, owner the owner's hash.
	entry, owner string
	// op names the count: the revision that created the entry, unique in
	// the index's stream.
	op string
}

// key is the counter shard the count went to: the one the entry hashes
// to, so that an owner's creates spread over every shard.
func (c *jobCount) key() string {
	sum := sha256.Sum256([]byte(c.entry))
	return shardKey(c.owner, int(sum[0])%counterShards)
}

// ensureIndexed indexes job unless its owner and organization entries
// are there already: a job that a replica of the previous layout indexed
// has the owner entry of this layout but not the organization entry.
// An entry it adds gets job's summary.
func (s *Store) ensureIndexed(ctx context.Context, job *exportv1.Job, rev uint64) error {
	keys := []string{ownKey(job, hashToken)}
	if k := orgKey(job, hashToken); k != "" {
		keys = append(keys, k)
	}
	have, err := kvbatch.Get(ctx, s.js, s.index, keys)
	if err != nil {
		return fmt.Errorf("index job %s: %w", job.GetId(), err)
	}
	if len(have) == len(keys) {
		return nil
	}
	if _, err = s.writeIndex(ctx, job); err != nil {
		return err
	}
	s.writeSummary(ctx, job, rev)
	return nil
}

// uncount takes back count, the count of job, whose owner entry this
// call created but whose create failed, and purges the entry, when no
// job or another job is stored under its id; not when the job stored is
// the one the entry names (another applier of the same request won, or
// the write landed though its answer was lost), nor when that cannot be
// read. The one is taken back before the entry goes, so that a failure
// of either leaves the entry and its count together: a create tried
// again then counts the job once.
func (s *Store) uncount(ctx context.Context, job *exportv1.Job, count *jobCount) {
	stored, err := s.Get(ctx, job.GetId())
	if (err == nil && holds(stored, count.entry, hashToken)) || (err != nil && !errors.Is(err, ErrNotFound)) {
		return
	}
	if s.bump(ctx, count.key(), -1, "uncount."+count.op) == nil {
		s.purge(ctx, count.entry)
	}
}

// counterShards is how many keys an owner's counter is spread over. A
// count reads them all with one direct get; sixteen cut the contenders
// for one key in a burst of 256 creates of one owner to about sixteen.
const counterShards = 16

// shardKey is shard n of the counter of the owner hashed to ownerHash.
func shardKey(ownerHash string, n int) string {
	return famCount + "." + ownerHash + "." + strconv.FormatInt(int64(n), 16)
}

// countKeys are every key of the owner's counter: the shards, and the
// one key earlier versions counted in.
func countKeys(ownerHash string) []string {
	keys := []string{famCount + "." + ownerHash}
	for n := range counterShards {
		keys = append(keys, shardKey(ownerHash, n))
	}
	return keys
}

// counterAttempts bounds the writes of one bump.
const counterAttempts = 48

// bump adds delta to the counter key. Each attempt reads the key afresh
// and writes the sum with a revision check and op (which names this
// change, the same in every attempt) as the write's Nats-Msg-Id. The
// server drops a write whose id it has stored within the stream's
// duplicate window (two minutes) and answers it as a success, so an
// attempt after one whose answer was lost (a timeout on a loaded
// machine, a reconnect) adds nothing twice: either the earlier write
// landed, and the fresh read finds it and the write is dropped, or it
// did not, and this one lands. That is why every error is retried, not
// only a conflict. Conflicts back off with full jitter.
func (s *Store) bump(ctx context.Context, key string, delta int64, op string) error {
	subject := "$KV." + s.index.Bucket() + "." + key
	var err error
	for attempt := 1; attempt <= counterAttempts; attempt++ {
		if attempt > 1 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("counter %s: %w (after %v)", key, ctx.Err(), err)
			case <-time.After(counterBackoff(attempt - 1)):
			}
		}
		var n int64
		var rev uint64
		e, gerr := s.index.Get(ctx, key)
		switch {
		case errors.Is(gerr, jetstream.ErrKeyNotFound):
			// Counters are never deleted: no entry means no message.
		case gerr != nil:
			err = gerr
			continue
		default:
			if n, err = strconv.ParseInt(string(e.Value()), 10, 64); err != nil {
				return fmt.Errorf("counter %s: %w", key, err)
			}
			rev = e.Revision()
		}
		_, err = s.js.Publish(ctx, subject, []byte(strconv.FormatInt(n+delta, 10)),
			jetstream.WithMsgID(op), jetstream.WithExpectLastSequencePerSubject(rev))
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("counter %s: %d attempts: %w", key, counterAttempts, err)
}

// counterBackoff is a full-jitter pause that doubles up to 64 ms: one
// owner's counter is contended by every create of that owner at once (a
// burst of scheduled runs, a bulk fill), and pauses growing only by a
// millisecond per attempt let 16 writers use up their attempts.
func counterBackoff(attempt int) time.Duration {
	ceiling := time.Millisecond << min(attempt, 6)
	return time.Duration(rand.Int64N(int64(ceiling)))
}

// count is how many jobs ownerID has, read from its counter's keys with
// one direct get.
func (s *Store) count(ctx context.Context, ownerID string) (int, error) {
	values, err := kvbatch.Get(ctx, s.js, s.index, countKeys(hashToken(ownerID)))
	if err != nil {
		return 0, fmt.Errorf("count jobs: %w", err)
	}
	return sumCounter(values)
}

// sumCounter adds up the keys of a counter, read by key.
func sumCounter(values map[string][]byte) (int, error) {
	total := 0
	for k, v := range values {
		n, err := strconv.Atoi(string(v))
		if err != nil {
			return 0, fmt.Errorf("count jobs: counter %s: %w", k, err)
		}
		total += n
	}
	return max(total, 0), nil
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
	keys, err := s.subjects(ctx, filter)
	if err != nil {
		return nil, err
	}
	return parseEntries(keys, inverted), nil
}

func parseEntries(keys []string, inverted bool) []entry {
	out := make([]entry, 0, len(keys))
	for _, k := range keys {
		if e, ok := parseEntry(k, inverted); ok {
			out = append(out, e)
		}
	}
	return out
}

// subjects lists the keys under filter through the stream's info, which
// has no bound on how many it answers but waits in the JetStream API
// queue.
func (s *Store) subjects(ctx context.Context, filter string) ([]string, error) {
	stream, err := s.indexStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("list index %s: %w", filter, err)
	}
	prefix := "$KV." + s.index.Bucket() + "."
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(prefix+filter))
	if err != nil {
		return nil, fmt.Errorf("list index %s: %w", filter, err)
	}
	out := make([]string, 0, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		out = append(out, strings.TrimPrefix(subject, prefix))
	}
	return out, nil
}

// keys lists the keys under filter, with their values: with one direct
// get when they are few (the common case, a bucket of one owner), else
// through the stream's info, without values.
func (s *Store) keys(ctx context.Context, filter string) (map[string][]byte, error) {
	m, err := kvbatch.Matching(ctx, s.js, s.index, filter)
	switch {
	case errors.Is(err, kvbatch.ErrTooMany):
		return s.keysAlone(ctx, filter)
	case err != nil:
		return nil, fmt.Errorf("list index %s: %w", filter, err)
	}
	return m, nil
}

// keysAlone lists the keys under filter from the stream's info, each
// with a nil value.
func (s *Store) keysAlone(ctx context.Context, filter string) (map[string][]byte, error) {
	keys, err := s.subjects(ctx, filter)
	if err != nil {
		return nil, err
	}
	m := make(map[string][]byte, len(keys))
	for _, k := range keys {
		m[k] = nil
	}
	return m, nil
}

// tokens lists the keys under filter by their last token, sorted.
func (s *Store) tokens(ctx context.Context, filter string) ([]string, error) {
	m, err := s.keys(ctx, filter)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k[strings.LastIndexByte(k, '.')+1:])
	}
	slices.Sort(out)
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
	switch {
	case sc.Parent != "":
		return famParent + "." + hashToken(sc.Parent) + ".>", nil
	case sc.Owner != "":
		return sc.ownFilter("*", "*"), nil
	case sc.Dialect != "" && sc.Organization != "":
		return sc.orgFilter(), nil
	}
	return "", fmt.Errorf("jobstore: scope %+v names no index", sc)
}

// ownFilter is the filter of sc's owner entries in one day and minute
// ("*" for any); it names whole entries only, never the markers.
func (sc Scope) ownFilter(day, minute string) string {
	kind := "*"
	if sc.Kind != exportv1.JobKind_JOB_KIND_UNSPECIFIED {
		kind = kindToken(sc.Kind)
	}
	dialect, org := "*", "*"
	if sc.Dialect != "" {
		dialect, org = nameToken(sc.Dialect), hashToken(sc.Organization)
	}
	return strings.Join([]string{famOwner, hashToken(sc.Owner), day, minute, dialect, org, kind, "*", "*"}, ".")
}

// orgFilter is the filter of sc's organization entries (a scope of an
// organization and dialect without owner).
func (sc Scope) orgFilter() string {
	kind := "*"
	if sc.Kind != exportv1.JobKind_JOB_KIND_UNSPECIFIED {
		kind = kindToken(sc.Kind)
	}
	return strings.Join([]string{orgBase(sc.Organization, sc.Dialect, hashToken), kind, "*", "*"}, ".")
}

// orgWide reports whether sc is one organization's jobs of one dialect,
// every owner's.
func (sc Scope) orgWide() bool {
	return sc.Owner == "" && sc.Parent == "" && sc.Dialect != "" && sc.Organization != ""
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
	// Total is how many jobs the scope holds (before Keep), read
	// without reading them: for a scope of an owner alone, the owner's
	// counter (see the package's index notes for how it may be off by
	// one after a crash); for any other scope, the entries the listing
	// read when it read them all (no Limit), else -1.
	Total int
}

// Find lists the jobs q asks for, newest first. An owner's jobs are read
// bucket by bucket (see the index notes), the jobs only as many as the
// page needs, so a page costs about its own size; other scopes read
// their entries at once, then only the jobs the page needs. Keep sees
// every job it is asked about, so a Keep that rejects most jobs reads
// more of them.
func (s *Store) Find(ctx context.Context, q Query) (Page, error) {
	release, err := s.enterListing(ctx)
	if err != nil {
		return Page{}, err
	}
	defer release()
	return s.find(ctx, q)
}

// find is Find within a listing's slot.
func (s *Store) find(ctx context.Context, q Query) (Page, error) {
	filter, err := q.filter()
	if err != nil {
		return Page{}, err
	}
	var after *entry
	if q.After != "" {
		a, err := parseCursor(q.After)
		if err != nil {
			return Page{}, err
		}
		after = &a
	}
	if q.Owner == "" || q.Parent != "" {
		return s.findAll(ctx, q, filter, after)
	}
	// The owner's counter does not depend on the page, so it is read
	// with the walk's first get: a request less per listing.
	return s.findOwn(ctx, q, after, q.Dialect == "" && q.Kind == exportv1.JobKind_JOB_KIND_UNSPECIFIED)
}

// findAll answers q from every entry under filter.
func (s *Store) findAll(ctx context.Context, q Query, filter string, after *entry) (Page, error) {
	entries, err := s.listEntries(ctx, filter, true)
	if err != nil {
		return Page{}, err
	}
	return s.findAmong(ctx, q, entries, after)
}

// findAmong answers q from entries, all of q's scope.
func (s *Store) findAmong(ctx context.Context, q Query, entries []entry, after *entry) (Page, error) {
	page := Page{Total: -1}
	if q.Limit == 0 {
		page.Total = len(entries)
	}
	slices.SortFunc(entries, newestFirst)
	entries = skipTo(entries, after)
	full, used, err := s.take(ctx, q, &page, entries)
	if err != nil {
		return Page{}, err
	}
	if full && used < len(entries) {
		page.Next = cursor(entries[used-1])
	}
	return page, nil
}

// findOwn answers q, a scope of one owner, from the owner's buckets. A
// scope narrowed to a dialect or kind may hold few of the owner's
// entries, spread over many buckets: its entries are read with one direct
// get when they fit one, before walking the buckets. Entries are
// gathered across buckets until they could fill the page, and the jobs of
// those read with one request, not one per bucket. With counted, the
// page's Total is the owner's counter, read with the walk's first get.
func (s *Store) findOwn(ctx context.Context, q Query, after *entry, counted bool) (Page, error) {
	page := Page{Total: -1}
	if q.Dialect != "" || q.Kind != exportv1.JobKind_JOB_KIND_UNSPECIFIED {
		values, err := kvbatch.Matching(ctx, s.js, s.index, q.ownFilter("*", "*"))
		if err == nil {
			return s.findAmong(ctx, q, parseEntries(slices.Collect(maps.Keys(values)), true), after)
		}
		if !errors.Is(err, kvbatch.ErrTooMany) {
			return Page{}, fmt.Errorf("list index: %w", err)
		}
	}
	seen, full := 0, false
	var gathered []entry
	// settle reads the jobs of the gathered entries into the page; done
	// reports that the page is full, with its cursor set when more
	// entries follow (more markers mean more entries, but for an entry
	// whose job was never written: then the next page is empty).
	settle := func(last bool) (done bool, err error) {
		filled, used, err := s.take(ctx, q, &page, gathered)
		if err != nil {
			return false, err
		}
		if full = filled; full {
			if used < len(gathered) || !last {
				page.Next = cursor(gathered[used-1])
			}
			return true, nil
		}
		gathered = gathered[:0]
		return false, nil
	}
	need := func() int {
		if q.Limit == 0 {
			return 0
		}
		return max(q.Limit-len(page.Jobs)-len(gathered), 1)
	}
	var also []string
	if counted {
		also = countKeys(hashToken(q.Owner))
	}
	counter, err := s.walkOwn(ctx, q.Scope, after, need, also, true, func(entries []entry, _ map[string][]byte, last bool) (bool, error) {
		seen += len(entries)
		gathered = append(gathered, entries...)
		if q.Limit > 0 && len(gathered) < q.Limit-len(page.Jobs) && !last {
			return false, nil
		}
		return settle(last)
	})
	if err == nil && !full && len(gathered) > 0 {
		_, err = settle(true)
	}
	if err != nil {
		return Page{}, err
	}
	switch {
	case counted && counter != nil:
		page.Total, err = sumCounter(counter)
	case counted:
		page.Total, err = s.count(ctx, q.Owner)
	case q.Limit == 0 && after == nil:
		page.Total = seen
	}
	if err != nil {
		return Page{}, err
	}
	return page, nil
}

// walkOwn calls fn with the entries of sc (a scope of one owner) bucket
// by bucket (a minute of created_at), newest first, each bucket's
// entries sorted newest first and those up to after (nil: none) left
// out, with the entries' values (nil for a bucket read by its keys
// alone); last reports that no bucket follows. It stops when fn says so
// or fails. The owner's minute markers are read with one direct get
// when they fit one (else the day markers, then each day's minute
// markers), and the minutes' entries several minutes at once, with one
// direct get, as many as need (how many more entries fn wants; 0: all of
// them) says are likely to be enough, so that a walk takes few round
// trips one after the other. The first get also reads the keys under
// also (the caller's own reads that do not depend on the walk, such as
// the owner's counter), whose values walkOwn returns, or nil when the
// first get could not carry them (too many keys in all), and then the
// caller reads them itself. A page after a cursor starts with the
// cursor's minute, which needs no marker: it rides on the first get, or,
// with keysOnly, is read beside it.
//
// With keysOnly (a caller that ignores the values, wanting need
// entries), a minute's entries cost about what the page needs whatever
// the minute holds: a get answers every entry with its summary, a
// message each, and a page of 100 in a minute of 800 jobs (a burst of
// creates) cost eight times the page. So the minutes are read with a
// get bounded to a little more than need (see keysBound), and minutes
// that hold more are listed by their keys (see minuteEntries). A day's
// entries are never read at once, for the same reason.
func (s *Store) walkOwn(ctx context.Context, sc Scope, after *entry, need func() int, also []string, keysOnly bool, fn func(entries []entry, values map[string][]byte, last bool) (stop bool, err error)) (map[string][]byte, error) {
	owner := famOwner + "." + hashToken(sc.Owner)
	bound := func() int {
		if !keysOnly {
			return 0
		}
		return keysBound(need())
	}
	var afterDay, afterMinute string
	first := also
	var cursorRead chan minuteRead
	if after != nil {
		afterDay, afterMinute = dayToken(after.stamp), minuteToken(after.stamp)
		if keysOnly {
			cursorRead = make(chan minuteRead, 1)
			go func() {
				values, err := s.minuteEntries(ctx, sc, owner, afterDay, []string{afterMinute}, bound())
				if err != nil {
					cursorRead <- minuteRead{err: err}
					return
				}
				cursorRead <- minuteRead{values: values[0]}
			}()
		} else {
			first = append(slices.Clip(first), sc.ownFilter(afterDay, afterMinute))
		}
	}
	days, minutesOf, extra, err := s.ownMinutes(ctx, owner, first)
	// The cursor's minute, when the first get read it or beside it.
	var cursorMinute map[string][]byte
	if cursorRead != nil {
		r := <-cursorRead
		if err == nil {
			cursorMinute, err = r.values, r.err
		}
	}
	if err != nil {
		return nil, err
	}
	var alsoValues map[string][]byte
	if extra != nil {
		alsoValues = map[string][]byte{}
		prefix := owner + "." + afterDay + "." + afterMinute + "."
		for k, v := range extra {
			if after != nil && !keysOnly && strings.HasPrefix(k, prefix) {
				if cursorMinute == nil {
					cursorMinute = map[string][]byte{}
				}
				cursorMinute[k] = v
				continue
			}
			alsoValues[k] = v
		}
		if after != nil && cursorMinute == nil {
			cursorMinute = map[string][]byte{}
		}
	}
	// read and seen are the minutes read so far and their entries (the
	// skipped ones too: they tell how full a minute is).
	read, seen := 0, 0
	for di, day := range days {
		if day < afterDay {
			continue
		}
		minutes, err := minutesOf(day)
		if err != nil {
			return nil, err
		}
		if day == afterDay {
			minutes = slices.DeleteFunc(minutes, func(m string) bool { return m < afterMinute })
		}
		lastDay := di+1 == len(days)
		for start := 0; start < len(minutes); {
			var chunk []string
			var values []map[string][]byte
			if cursorMinute != nil && day == afterDay && minutes[start] == afterMinute {
				chunk, values = minutes[start:start+1], []map[string][]byte{cursorMinute}
			} else {
				// As many minutes as the entries still wanted likely
				// fill, judged by the minutes read so far: reading more
				// costs the server a message per entry, fewer a round
				// trip.
				ahead := minutesAhead
				if want := need(); want > 0 && seen > 0 {
					ahead = min(max((want*read+seen-1)/seen, 1), minutesAhead)
				} else if want > 0 {
					ahead = 1
				}
				chunk = minutes[start:min(start+ahead, len(minutes))]
				if values, err = s.minuteEntries(ctx, sc, owner, day, chunk, bound()); err != nil {
					return nil, err
				}
			}
			for i := range chunk {
				entries := parseEntries(slices.Collect(maps.Keys(values[i])), true)
				slices.SortFunc(entries, newestFirst)
				read, seen = read+1, seen+len(entries)
				entries = skipTo(entries, after)
				stop, err := fn(entries, values[i], lastDay && start+i+1 == len(minutes))
				if stop || err != nil {
					return alsoValues, err
				}
			}
			start += len(chunk)
		}
	}
	return alsoValues, nil
}

// minuteRead is one minute's entries read beside the first get.
type minuteRead struct {
	values map[string][]byte
	err    error
}

// keysBound is how many entries walkOwn's bounded get of minutes holding
// about want entries may answer before it lists their keys instead:
// twice want, so that a walk over minutes about as full as the ones
// before (which choose how many minutes a get covers) rarely lists.
func keysBound(want int) int {
	if want <= 0 {
		return 0
	}
	return min(max(2*want, minBatch), kvbatch.MaxMatching)
}

// minuteEntries reads sc's entries in the minutes of day, one map each.
// With bound 0, with their values: one direct get when they fit one,
// else one request per minute at once (a minute too large for a direct
// get answers its keys alone). With bound > 0 the caller needs the keys
// alone: a direct get of at most bound entries, and when the minutes
// hold more, their keys are listed from the stream's info instead, one
// request per minute at once (an entry costs a name in the answer, not
// a message). A minute found to hold more than bound is remembered
// (Store.busy) and listed at once the next time, without the get.
func (s *Store) minuteEntries(ctx context.Context, sc Scope, owner, day string, minutes []string, bound int) ([]map[string][]byte, error) {
	values := make([]map[string][]byte, len(minutes))
	filters := make([]string, len(minutes))
	for i, m := range minutes {
		filters[i] = sc.ownFilter(day, m)
	}
	var all map[string][]byte
	var err error
	switch {
	case bound > 0 && s.anyBusy(filters):
		return s.minuteKeys(ctx, filters, bound)
	case bound > 0:
		var complete bool
		all, complete, err = kvbatch.MatchingUpTo(ctx, s.js, s.index, bound, filters...)
		if err == nil && !complete {
			return s.minuteKeys(ctx, filters, bound)
		}
	default:
		all, err = kvbatch.MatchingAny(ctx, s.js, s.index, filters...)
	}
	switch {
	case err == nil:
		at := make(map[string]int, len(minutes))
		for i, m := range minutes {
			at[m] = i
			values[i] = map[string][]byte{}
		}
		for k, v := range all {
			minute, _, _ := strings.Cut(strings.TrimPrefix(k, owner+"."+day+"."), ".")
			if i, ok := at[minute]; ok {
				values[i][k] = v
			}
		}
		return values, nil
	case !errors.Is(err, kvbatch.ErrTooMany):
		return nil, fmt.Errorf("list index: %w", err)
	case bound > 0:
		return s.minuteKeys(ctx, filters, bound)
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, f := range filters {
		g.Go(func() (err error) { values[i], err = s.keys(gctx, f); return err })
	}
	return values, g.Wait()
}

// minuteKeys lists the keys under each of filters from the stream's
// info, one request each at once, without values, and remembers the
// filters that hold more than bound keys.
func (s *Store) minuteKeys(ctx context.Context, filters []string, bound int) ([]map[string][]byte, error) {
	values := make([]map[string][]byte, len(filters))
	g, gctx := errgroup.WithContext(ctx)
	for i, f := range filters {
		g.Go(func() error {
			keys, err := s.keysAlone(gctx, f)
			if err != nil {
				return err
			}
			values[i] = keys
			if len(keys) > bound {
				s.markBusy(f)
			}
			return nil
		})
	}
	return values, g.Wait()
}

// maxBusy bounds the minutes Store.busy remembers; past it, it starts
// over.
const maxBusy = 4096

// markBusy remembers that the minute filter f holds more entries than a
// bounded get answers. Entries are never taken out of a past minute but
// for stale ones, so the mark stays true; were it not, a listing would
// only read the minute's keys the dearer way.
func (s *Store) markBusy(f string) {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	if s.busy == nil || len(s.busy) >= maxBusy {
		s.busy = map[string]struct{}{}
	}
	s.busy[f] = struct{}{}
}

// anyBusy reports whether markBusy marked any of filters.
func (s *Store) anyBusy(filters []string) bool {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	for _, f := range filters {
		if _, ok := s.busy[f]; ok {
			return true
		}
	}
	return false
}

// ownMinutes lists the days of owner (an owner entries' prefix) with
// jobs, sorted newest first, and answers each day's minutes with jobs,
// sorted the same way: from the owner's minute markers, read with one
// direct get, or, when they are more than one answers, from the day
// markers and each day's minute markers as it is asked for. The keys
// under extra are read with the minute markers and answered as they are
// (nil when they did not fit that get: the caller reads them itself).
func (s *Store) ownMinutes(ctx context.Context, owner string, extra []string) (days []string, minutesOf func(day string) ([]string, error), got map[string][]byte, err error) {
	markersOf := owner + ".*.*"
	all, err := kvbatch.MatchingAny(ctx, s.js, s.index, append([]string{markersOf}, extra...)...)
	if errors.Is(err, kvbatch.ErrTooMany) && len(extra) > 0 {
		all, err = kvbatch.Matching(ctx, s.js, s.index, markersOf)
	} else if err == nil {
		got = map[string][]byte{}
	}
	switch {
	case errors.Is(err, kvbatch.ErrTooMany):
		days, err := s.tokens(ctx, owner+".*")
		if err != nil {
			return nil, nil, nil, err
		}
		return days, func(day string) ([]string, error) { return s.tokens(ctx, owner+"."+day+".*") }, nil, nil
	case err != nil:
		return nil, nil, nil, fmt.Errorf("list index: %w", err)
	}
	byDay := map[string][]string{}
	for k, v := range all {
		rest, ok := strings.CutPrefix(k, owner+".")
		if !ok || strings.Count(rest, ".") != 1 {
			if got != nil {
				got[k] = v
			}
			continue
		}
		day, minute, _ := strings.Cut(rest, ".")
		byDay[day] = append(byDay[day], minute)
	}
	days = slices.Sorted(maps.Keys(byDay))
	return days, func(day string) ([]string, error) {
		minutes := byDay[day]
		slices.Sort(minutes)
		return minutes, nil
	}, got, nil
}

// minutesAhead bounds the minute buckets walkOwn reads at once.
const minutesAhead = 4

// skipTo drops the entries of a newest-first slice up to and including
// the position after (nil: none).
func skipTo(entries []entry, after *entry) []entry {
	if after == nil {
		return entries
	}
	i, _ := slices.BinarySearchFunc(entries, *after, newestFirst)
	if i < len(entries) && newestFirst(entries[i], *after) == 0 {
		i++
	}
	return entries[i:]
}

// take appends to page the jobs of entries that q accepts, in order,
// until the page holds q.Limit jobs; full reports that it does, used how
// many entries that took (all of them when not full).
func (s *Store) take(ctx context.Context, q Query, page *Page, entries []entry) (full bool, used int, err error) {
	for used < len(entries) {
		n := len(entries) - used
		if q.Limit > 0 {
			n = min(n, max(q.Limit-len(page.Jobs), minBatch))
		}
		batch, err := s.fetch(ctx, entries[used:used+n])
		if err != nil {
			return false, 0, fmt.Errorf("list jobs: %w", err)
		}
		for i, job := range batch {
			if job == nil || !q.matches(job) || (q.Keep != nil && !q.Keep(job)) {
				continue
			}
			page.Jobs = append(page.Jobs, job)
			if q.Limit > 0 && len(page.Jobs) == q.Limit {
				return true, used + i + 1, nil
			}
		}
		used += n
	}
	return false, used, nil
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
// before the index existed, or indexed in an earlier layout. It reads
// every job once, so it runs at start, never on a request. It streams:
// one job is decoded at a time, and its entries are published
// asynchronously, at most buildWindow of them unacknowledged, so a
// million jobs take one pass over the bucket and little memory. Owner
// and organization entries are published as creates (expecting no
// entry), with the job's summary; each owner entry that succeeds counts
// its job, and the counts are added to the owners'
// counters in batches, so a job indexed already (by the write path, a
// replay or another replica) is not counted twice. It is idempotent and
// safe to run on several replicas at once (every other write is a put of
// an empty entry; a job that ends meanwhile leaves at most a stale
// unfinished entry, which reads purge). built reports whether this call
// did the work.
func (s *Store) BuildIndex(ctx context.Context) (built bool, err error) {
	if _, err := s.index.Get(ctx, builtKey); err == nil {
		return false, nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, fmt.Errorf("build index: %w", err)
	}
	if err := s.build(ctx); err != nil {
		return false, err
	}
	if _, err := s.index.Put(ctx, builtKey, []byte(s.now().UTC().Format(time.RFC3339Nano))); err != nil {
		return false, fmt.Errorf("build index: %w", err)
	}
	return true, nil
}

// build is BuildIndex's pass over every job, whatever the marker says.
func (s *Store) build(ctx context.Context) error {
	// A put of a KV entry is a publish on its subject; publishing
	// directly lets many be in flight at once instead of one round trip
	// per entry.
	prefix := "$KV." + s.index.Bucket() + "."
	type pending struct {
		f jetstream.PubAckFuture
		// owner is the owner's hash for an owner entry, else "".
		owner string
		// create: an entry expected not to exist, which may exist.
		create bool
	}
	var inflight []pending
	counts := map[string]int64{}
	flush := func() error {
		for owner, n := range counts {
			op := fmt.Sprintf("build.%016x%016x", rand.Uint64(), rand.Uint64())
			if err := s.bump(ctx, shardKey(owner, rand.IntN(counterShards)), n, op); err != nil {
				return fmt.Errorf("count jobs: %w", err)
			}
		}
		clear(counts)
		return nil
	}
	// wait settles the oldest publishes until at most keep are in flight.
	wait := func(keep int) error {
		for len(inflight) > keep {
			p := inflight[0]
			select {
			case <-p.f.Ok():
				if p.owner != "" {
					counts[p.owner]++
				}
			case err := <-p.f.Err():
				var apiErr *jetstream.APIError
				if !p.create || !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
					return fmt.Errorf("index %s: %w", p.f.Msg().Subject, err)
				}
			case <-ctx.Done():
				return ctx.Err()
			}
			inflight = inflight[1:]
		}
		if len(counts) >= buildCounts {
			return flush()
		}
		return nil
	}
	publish := func(key string, value []byte, p pending) error {
		var opts []jetstream.PublishOpt
		if p.create {
			opts = append(opts, jetstream.WithExpectLastSequencePerSubject(0))
		}
		f, err := s.js.PublishAsync(prefix+key, value, opts...)
		if err != nil {
			return fmt.Errorf("index %s: %w", key, err)
		}
		p.f = f
		inflight = append(inflight, p)
		return nil
	}
	err := s.scan(ctx, func(job *exportv1.Job, rev uint64) error {
		keys := ownMarkers(job)
		if k := parentKey(job, hashToken); k != "" {
			keys = append(keys, k)
		}
		if !Terminal(job.GetState()) {
			keys = append(keys, unfinishedKeys(job)...)
		}
		for _, k := range keys {
			if err := publish(k, nil, pending{}); err != nil {
				return err
			}
		}
		// An entry there already (written by a replica meanwhile) keeps
		// its summary, which is at least as new as this one.
		sum, err := encodeSummary(job, rev)
		if err != nil {
			return fmt.Errorf("index job %s: %w", job.GetId(), err)
		}
		if err := publish(ownKey(job, hashToken), sum, pending{owner: hashToken(job.GetOwnerId()), create: true}); err != nil {
			return err
		}
		if k := orgKey(job, hashToken); k != "" {
			if err := publish(k, sum, pending{create: true}); err != nil {
				return err
			}
		}
		return wait(buildWindow)
	})
	if err == nil {
		err = wait(0)
	}
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("build index: %w", err)
	}
	return nil
}

// buildCounts bounds the owners BuildIndex holds counts for before it
// adds them to their counters.
const buildCounts = 4096

// buildWindow bounds BuildIndex's unacknowledged publishes, below the
// JetStream context's default limit of async publishes in flight (4,000):
// the oldest is waited for before more go out.
const buildWindow = 1024

// scan calls fn with every job of the bucket and its revision, one at a
// time, holding none of them, and stops at fn's first error.
func (s *Store) scan(ctx context.Context, fn func(job *exportv1.Job, rev uint64) error) error {
	return s.scanStream(ctx, "KV_"+s.kv.Bucket(), jetstream.OrderedConsumerConfig{}, func(msg jetstream.Msg, seq uint64) error {
		job := &exportv1.Job{}
		if err := proto.Unmarshal(msg.Data(), job); err != nil {
			return fmt.Errorf("decode job %s: %w", msg.Subject(), err)
		}
		return fn(job, seq)
	})
}

// scanStream calls fn with the last message of each subject of a KV
// bucket's stream (narrowed by cfg's filters and options) that holds a
// value, not a delete or purge, one at a time. It reads with an ordered
// pull consumer, at most scanBatch messages buffered: a watcher would
// buffer as much of the bucket as the server sends ahead of fn (about 670
// MiB at a million jobs). Every message is delivered in stream order, and
// the message that was last when the scan began is either still current
// or superseded by a newer one, so the scan ends once it has seen a
// sequence at least that one, or nothing is pending.
func (s *Store) scanStream(ctx context.Context, name string, cfg jetstream.OrderedConsumerConfig, fn func(msg jetstream.Msg, seq uint64) error) error {
	stream, err := s.js.Stream(ctx, name)
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
	cfg.DeliverPolicy, cfg.InactiveThreshold = jetstream.DeliverLastPerSubjectPolicy, time.Minute
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	// A filter that matches nothing ends here, not after a wait for a
	// first message that never comes.
	if ci, err := cons.Info(ctx); err != nil {
		return err
	} else if ci.NumPending == 0 {
		return nil
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
			if err := fn(msg, meta.Sequence.Stream); err != nil {
				return err
			}
		}
		if meta.Sequence.Stream >= last || meta.NumPending == 0 {
			return nil
		}
	}
}

// scanBatch is how many messages scanStream holds buffered at most.
const scanBatch = 256

// Latest returns the newest job of sc, a scope of one owner, whose
// summary (see Summary) keep accepts, or nil when none does. It reads the
// owner's day markers, then the entries of sc one day at a time, newest
// day first (one direct get each, or the day's minutes one by one when
// the day holds more entries than one get answers), and stops at the
// first day with a match: its cost is the days it passes through and
// the entries of sc in them, and one job. Entries without a summary yet
// are judged by their job. The job itself is read and checked again,
// since a summary may lag its job by the moment between their writes.
func (s *Store) Latest(ctx context.Context, sc Scope, keep func(*exportv1.Job) bool) (*exportv1.Job, error) {
	if sc.Owner == "" || sc.Parent != "" {
		return nil, fmt.Errorf("jobstore: Latest needs a scope of one owner, not %+v", sc)
	}
	owner := famOwner + "." + hashToken(sc.Owner)
	days, err := s.tokens(ctx, owner+".*")
	if err != nil {
		return nil, err
	}
	for _, day := range days {
		values, err := kvbatch.Matching(ctx, s.js, s.index, sc.ownFilter(day, "*"))
		if errors.Is(err, kvbatch.ErrTooMany) {
			job, err := s.latestInMinutes(ctx, sc, owner, day, keep)
			if job != nil || err != nil {
				return job, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list index: %w", err)
		}
		if job, err := s.latestAmong(ctx, sc, values, keep); job != nil || err != nil {
			return job, err
		}
	}
	return nil, nil
}

// latestInMinutes is Latest within one day too large for one direct get.
func (s *Store) latestInMinutes(ctx context.Context, sc Scope, owner, day string, keep func(*exportv1.Job) bool) (*exportv1.Job, error) {
	minutes, err := s.tokens(ctx, owner+"."+day+".*")
	if err != nil {
		return nil, err
	}
	for _, minute := range minutes {
		values, err := s.keys(ctx, sc.ownFilter(day, minute))
		if err != nil {
			return nil, err
		}
		if job, err := s.latestAmong(ctx, sc, values, keep); job != nil || err != nil {
			return job, err
		}
	}
	return nil, nil
}

// latestAmong is the newest job of sc among the owner entries values
// (key to summary) that keep accepts, or nil.
func (s *Store) latestAmong(ctx context.Context, sc Scope, values map[string][]byte, keep func(*exportv1.Job) bool) (*exportv1.Job, error) {
	entries := parseEntries(slices.Collect(maps.Keys(values)), true)
	slices.SortFunc(entries, newestFirst)
	for _, e := range entries {
		if sum, _, ok := decodeSummary(values[e.key]); ok && sum.GetId() == e.id && (!sc.matches(sum) || !keep(sum)) {
			continue
		}
		jobs, err := s.fetch(ctx, []entry{e})
		if err != nil {
			return nil, fmt.Errorf("get job: %w", err)
		}
		if job := jobs[0]; job != nil && sc.matches(job) && keep(Summary(job)) {
			return job, nil
		}
	}
	return nil, nil
}

// UnfinishedBefore counts the jobs of kind that have not ended and were
// created before t: the queue ahead of a job created at t. It counts the
// kind's unfinished entries and reads no job: one direct get when they
// are at most kvbatch.MaxMatching, else the stream's subject list. The
// count may be a little high: an entry whose purge a crash lost counts
// until a listing of unfinished jobs (the watchdog's) purges it, and past
// kvbatch.MaxMatching entries so do entries purged within markerTTL.
func (s *Store) UnfinishedBefore(ctx context.Context, kind exportv1.JobKind, t time.Time) (int, error) {
	filter := famRunning + "." + kindToken(kind) + ".*.*"
	values, err := kvbatch.Matching(ctx, s.js, s.index, filter)
	var keys []string
	switch {
	case errors.Is(err, kvbatch.ErrTooMany):
		if keys, err = s.subjects(ctx, filter); err != nil {
			return 0, err
		}
	case err != nil:
		return 0, fmt.Errorf("count unfinished jobs: %w", err)
	default:
		keys = slices.Collect(maps.Keys(values))
	}
	before := t.UnixNano()
	n := 0
	for _, e := range parseEntries(keys, false) {
		if e.stamp < before {
			n++
		}
	}
	return n, nil
}
