package jobstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/kvbatch"
)

// Summary blocks: beside its owner entry, a job's summary is kept in one
// of its owner's blockShards blocks,
//
//	blk.<owner>.<shard>   (the summaries of the owner's jobs whose id hashes to shard)
//
// so that a listing that must read all of an owner's summaries (the
// Rebilly list filters, sorts and counts them) reads blockShards messages
// instead of one per job. A direct get of a thousand entries cost the
// server a subject look-up and a message each, and the client a message
// each to parse: about two thirds of such a list's CPU (docs/BENCHMARKS.md,
// "One owner's Rebilly list").
//
// A block is written with a revision check (read, merge, write only if
// no one wrote meanwhile, else again), and a job's record in it is
// replaced only by one of a later revision of the job, so two replicas'
// writers of one owner's jobs lose none of each other's records and each
// record ends with its job's last revision that a writer put.
//
// The blocks are used only when they are complete: when they hold as
// many records as the owner's counter counts jobs. A job is counted
// before it is written and put into its block after, so in between (a
// create in flight), and for jobs no block holds (indexed by a previous
// version or by BuildIndex, whose block write failed, or that did not fit
// maxBlockBytes), the listing reads the owner entries as before, and puts
// the summaries it read there into the blocks that lack them, so that the
// next listing finds them complete. A block records only written jobs,
// so a complete count means every counted job is there. The one case it
// misses is a counter one too low (a gateway that died between an owner
// entry and its count, see the index's comment) together with a job not
// yet in its block; the job's next change puts it there.
//
// A job changed by a replica of the previous version, which writes no
// blocks, keeps its earlier summary in its block. The listing reads the
// owner's unfinished entries beside the blocks (as few as the owner's
// running jobs), and a job its block shows unfinished that holds no
// unfinished entry has ended since: a job's summary is written before
// its unfinished entries are purged, by every version. Such jobs are
// read from their owner entries, which every version writes, and put
// into their blocks. So a job ended during a rolling upgrade is listed
// in its final state; a change between two unfinished states made by
// the previous version shows once the job ends.
const (
	famBlock    = "blk"
	blockShards = 16
	// maxBlockBytes bounds a block: a job that would make its block
	// larger is left out of it (its owner's listings then read the
	// entries), well under the server's default maximum message (1 MiB).
	// Sixteen of them hold about twelve thousand summaries (of about 170
	// bytes); the bound is lower than the message's because each change
	// of a job rewrites its whole block.
	maxBlockBytes = 128 << 10
	// blockAttempts bounds the writes of one block change.
	blockAttempts = 48
	// blockVersion is the first byte of a block's value.
	blockVersion = 1
)

// blockKey is the block of the owner hashed to ownerHash that holds the
// job id's summary.
func blockKey(ownerHash, id string) string {
	sum := sha256.Sum256([]byte(id))
	return blockPrefix(ownerHash) + strconv.FormatInt(int64(sum[0])%blockShards, 16)
}

func blockPrefix(ownerHash string) string { return famBlock + "." + ownerHash + "." }

// blockRecord is one job's summary in a block: the job's id, the job
// record's revision the summary was taken from, and the summary's
// protobuf.
type blockRecord struct {
	id  string
	rev uint64
	sum []byte
}

// decodeBlock splits a block's value into its records; ok is false for a
// value this version does not read.
func decodeBlock(v []byte) (recs []blockRecord, ok bool) {
	if len(v) == 0 || v[0] != blockVersion {
		return nil, false
	}
	v = v[1:]
	for len(v) > 0 {
		var r blockRecord
		n, k := binary.Uvarint(v)
		if k <= 0 || uint64(len(v)-k) < n {
			return nil, false
		}
		r.id, v = string(v[k:k+int(n)]), v[k+int(n):]
		if r.rev, k = binary.Uvarint(v); k <= 0 {
			return nil, false
		}
		v = v[k:]
		if n, k = binary.Uvarint(v); k <= 0 || uint64(len(v)-k) < n {
			return nil, false
		}
		r.sum, v = v[k:k+int(n)], v[k+int(n):]
		recs = append(recs, r)
	}
	return recs, true
}

func encodeBlock(recs []blockRecord) []byte {
	out := []byte{blockVersion}
	for _, r := range recs {
		out = binary.AppendUvarint(out, uint64(len(r.id)))
		out = append(out, r.id...)
		out = binary.AppendUvarint(out, r.rev)
		out = binary.AppendUvarint(out, uint64(len(r.sum)))
		out = append(out, r.sum...)
	}
	return out
}

// mergeBlock puts recs (of the jobs of one block, key) into the block: a
// record replaces the job's only if it is of a later revision, and a job
// not there yet is added if the block stays within maxBlockBytes. Each
// attempt reads the block afresh and writes it with a revision check;
// every error is retried (a write whose answer was lost is found by the
// next read, and merging again changes nothing). A failure leaves the
// block as it was, which makes its owner's listings read the entries
// (see famBlock), so it is not reported.
func (s *Store) mergeBlock(ctx context.Context, key string, recs []blockRecord) {
	for attempt := 1; attempt <= blockAttempts; attempt++ {
		if attempt > 1 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(counterBackoff(attempt - 1)):
			}
		}
		var have []blockRecord
		var rev uint64
		size := 1
		e, err := s.index.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			continue
		default:
			var ok bool
			if have, ok = decodeBlock(e.Value()); !ok {
				return
			}
			rev, size = e.Revision(), len(e.Value())
		}
		changed := false
		for _, r := range recs {
			i := slices.IndexFunc(have, func(h blockRecord) bool { return h.id == r.id })
			switch {
			case i >= 0 && have[i].rev < r.rev:
				size += len(r.sum) - len(have[i].sum)
				have[i], changed = r, true
			case i < 0:
				grow := len(r.id) + len(r.sum) + 3*binary.MaxVarintLen64
				if size+grow > maxBlockBytes {
					continue
				}
				size += grow
				have, changed = append(have, r), true
			}
		}
		if !changed {
			return
		}
		// Create, not an update at revision 0: a purged block keeps its
		// purge marker, which Create writes over and an expected
		// revision of 0 never matches.
		if rev == 0 {
			_, err = s.index.Create(ctx, key, encodeBlock(have))
		} else {
			_, err = s.index.Update(ctx, key, encodeBlock(have), rev)
		}
		if err == nil {
			return
		}
	}
}

// writeBlock puts job's summary value (encodeSummary's, taken at the
// job's revision rev) into its block.
func (s *Store) writeBlock(ctx context.Context, job *exportv1.Job, rev uint64, value []byte) {
	if s.noBlocks {
		return
	}
	_, n := binary.Uvarint(value)
	s.mergeBlock(ctx, blockKey(hashToken(job.GetOwnerId()), job.GetId()), []blockRecord{{id: job.GetId(), rev: rev, sum: value[n:]}})
}

// ownerBlocks is what an owner's blocks say: the records, by job id,
// whether they are complete (as many as the owner's counter), and the
// ids of the owner's jobs that hold an unfinished entry.
type ownerBlocks struct {
	ownerHash  string
	recs       map[string]blockRecord
	complete   bool
	unfinished map[string]bool
}

// readBlocks reads sc's owner's blocks, counter and unfinished entries
// with one direct get. An owner with more unfinished jobs than one
// request answers gets blocks that are not complete: its listing reads
// the entries.
func (s *Store) readBlocks(ctx context.Context, owner string) (ownerBlocks, error) {
	oh := hashToken(owner)
	active := famActive + "." + oh + ".*.*"
	filters := append([]string{blockPrefix(oh) + "*", active}, countKeys(oh)...)
	values, err := kvbatch.MatchingAny(ctx, s.js, s.index, filters...)
	if errors.Is(err, kvbatch.ErrTooMany) {
		values, err = kvbatch.MatchingAny(ctx, s.js, s.index, slices.Delete(filters, 1, 2)...)
		active = ""
	}
	if err != nil {
		return ownerBlocks{}, fmt.Errorf("list blocks: %w", err)
	}
	b := ownerBlocks{ownerHash: oh, recs: map[string]blockRecord{}, unfinished: map[string]bool{}}
	counts := map[string][]byte{}
	valid := active != ""
	for k, v := range values {
		if strings.HasPrefix(k, famActive+".") {
			if e, ok := parseEntry(k, false); ok {
				b.unfinished[e.id] = true
			}
			continue
		}
		if !strings.HasPrefix(k, famBlock+".") {
			counts[k] = v
			continue
		}
		recs, ok := decodeBlock(v)
		valid = valid && ok
		for _, r := range recs {
			b.recs[r.id] = r
		}
	}
	total, err := sumCounter(counts)
	if err != nil {
		return ownerBlocks{}, err
	}
	b.complete = valid && total == len(b.recs)
	return b, nil
}

// eachBlockSummary calls fn with the summaries in b of sc's jobs,
// decoded only as far as LazySummary reads them. A job its block shows
// unfinished that holds no unfinished entry has ended since its block
// was written (see famBlock): it is read from its owner entry instead,
// and its block repaired.
func (s *Store) eachBlockSummary(ctx context.Context, b ownerBlocks, sc Scope, fn func(*LazySummary) error) error {
	var ended []*exportv1.Job
	// One allocation for the owner's summaries, not one each.
	lazies := make([]LazySummary, 0, len(b.recs))
	for _, r := range b.recs {
		lazies = append(lazies, LazySummary{raw: r.sum, id: r.id})
		l := &lazies[len(lazies)-1]
		if !l.scan() || string(l.f.id) != r.id {
			continue
		}
		if !Terminal(l.State()) && !b.unfinished[r.id] {
			if sum := l.Job(); sum != nil {
				ended = append(ended, sum)
			}
			continue
		}
		if !sc.matchesLazy(l) {
			continue
		}
		if err := fn(l); err != nil {
			return err
		}
	}
	repair := &blockRepair{b: b}
	for chunk := range slices.Chunk(ended, kvbatch.MaxMatching) {
		keys := make([]string, len(chunk))
		for i, sum := range chunk {
			keys[i] = ownKey(sum, hashToken)
		}
		values, err := kvbatch.MatchingAny(ctx, s.js, s.index, keys...)
		if err != nil {
			return fmt.Errorf("list index: %w", err)
		}
		for i, sum := range chunk {
			// An entry with no later summary (the job's summary write
			// failed before its purge) leaves the block's.
			if v := values[keys[i]]; v != nil {
				if fresh, rev, ok := decodeSummary(v); ok && fresh.GetId() == sum.GetId() && rev > b.recs[sum.GetId()].rev {
					repair.add(entry{key: keys[i], id: sum.GetId()}, v)
					sum = fresh
				}
			}
			if !sc.matches(sum) {
				continue
			}
			if err := fn(LazyOf(sum)); err != nil {
				return err
			}
		}
	}
	repair.apply(ctx, s)
	return nil
}

// blockRepair collects the summaries a listing read from owner entries
// that the owner's blocks lack or hold at an earlier revision, by block.
type blockRepair struct {
	b     ownerBlocks
	byKey map[string][]blockRecord
}

func (r *blockRepair) add(e entry, value []byte) {
	sum, rev, ok := decodeSummary(value)
	if !ok || sum.GetId() != e.id {
		return
	}
	_, n := binary.Uvarint(value)
	if have, ok := r.b.recs[e.id]; ok && have.rev >= rev {
		return
	}
	if r.byKey == nil {
		r.byKey = map[string][]blockRecord{}
	}
	k := blockKey(r.b.ownerHash, e.id)
	r.byKey[k] = append(r.byKey[k], blockRecord{id: e.id, rev: rev, sum: slices.Clone(value[n:])})
}

// apply merges what was collected into the blocks.
func (r *blockRepair) apply(ctx context.Context, s *Store) {
	for k, recs := range r.byKey {
		s.mergeBlock(ctx, k, recs)
	}
}
