package roomexport

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"time"
)

// A room's history is read from JetStream once. ChatMessage's contract is
// that a later publication of an id (an edit, a thread root's new reply
// count, a reaction) replaces the earlier one, and the export shows each
// message once, at its first position, in its last version: what goes at
// a position is only known once the whole subject has been read.
//
// So the one pass spools the subject to local disk and plans the render
// there:
//
//   - data: every version as it arrived (uvarint seq, uvarint length,
//     bytes), in stream order;
//   - ids: one record per version (128-bit hash of its id, seq, offset in
//     data), unsorted, written beside data.
//
// Two Bloom filters remember which id hashes were seen and which were
// seen again. A room nobody edited is done there: nothing to plan. Else
// the id records of possibly republished ids are sorted by (hash, seq)
// with bounded memory (sorter), each run of one id becomes a plan record
// for its first position (where its last version is) and one for every
// later version (skip it), and the plan is sorted by seq. The render pass
// then reads data sequentially and the plan beside it: no second read of
// the stream, no random read of JetStream, and memory is the buffers and
// filters (at most 1 MiB + 256 KiB of Bloom bits, seenBloomBits and
// againBloomBits), whatever the room's size or number of edits. Local
// reads of a last version hit the page cache.
//
// The caps trade memory for exact work: a false hit of seen puts an id
// into again, and a false hit of again puts an id's record into the sort,
// where its group of one is dropped, so the plan is exact whatever the
// filters say. Up to about 840,000 versions the filters have their ten
// bits an id and the sort gets some 0.3% false candidates; at 2,800,000
// (three bits an id, bloomMaxIDs) about 11%. A bigger room gets no
// filters at all: seen would hold fewer bits an id and pass ever more ids
// (19% at 4,000,000, 57% at 10,000,000), again would fill behind it (46%
// and all of the records sorted), and their bits would be memory spent
// on a sort nearly as long as the whole one.
// Such a room's id records go straight into a sorter as they are read
// (its runs sorted on the read's goroutine, which mostly waits for the
// broker), and every one of them is planned as above: the same plan, from
// one merge after the read, with the memory of the sorter's buffers
// (1 MiB), not of filters that grow with the room up to their cap.
//
// Local disk is what grows: about the room's encoded size plus 32 bytes
// per version (64 while an unfiltered room's sort merges its runs), in
// unlinked files of os.TempDir ($TMPDIR), gone when the export ends or
// the process dies.

// Plan record kinds (word 1 of a plan record; word 0 is the seq).
const (
	planLatest = iota // render the last version: its seq in word 2, its offset in data in word 3
	planSkip          // a later version of an id already placed
)

// spoolReadBuffer is the render pass's read buffer over the data file.
const spoolReadBuffer = 256 << 10

// spool is a room's history on local disk with its render plan.
type spool struct {
	data *os.File
	size int64
	// planned counts the plan's records: versions of republished ids.
	planned int
	plan    *mergeIter
	// sorters own the plan's files.
	sorters []*sorter
	seed    maphash.Seed

	// republished counts the ids (id hashes) whose versions planned
	// counts.
	republished int
	// filtered: the read kept Bloom filters (see above). planTook is the
	// time from the read's end to the plan's (the window's verify or the
	// sorts), what a room pays for the filters it had or lacked.
	filtered bool
	planTook time.Duration
}

// idHash is a 128-bit hash of a message id: collisions among a room's ids
// are vanishingly rare (and checked where they would matter, see each).
type idHash struct{ a, b uint64 }

func hashID(seed maphash.Seed, id []byte) idHash {
	var h maphash.Hash
	h.SetSeed(seed)
	h.Write(id)
	a := h.Sum64()
	h.WriteByte(0x5c)
	return idHash{a, h.Sum64()}
}

// Caps of the two filters: seen holds every id, again the ids seen twice
// (true republications and seen's false hits), sized for a quarter of the
// versions. Past bloomMaxIDs versions no filter is built (see above).
// Together they are 1.25 MiB at most, what they cost a room of millions
// of versions more than one of thousands (20 KiB). With caps of 4 and 1
// MiB a room of 10,000,000 versions held 5 MiB to sort 7.4% of its id
// records rather than all of them.
const (
	seenBloomBits  = 8 << 20 // 1 MiB
	againBloomBits = 2 << 20 // 256 KiB
	bloomMaxIDs    = seenBloomBits / 3
)

// spoolHistory reads h's subject from stream sequence start (0 for the
// first message) to h.lastSeq into a spool. Versions of ids in h.emitted
// (rendered by an earlier attempt, see resume.go) are planned as skipped.
// fd, when not nil, gets every version as it is read (speculate.go); the
// caller ends it.
func (e *Exporter) spoolHistory(ctx context.Context, h *history, start uint64, fd *feed) (sp *spool, err error) {
	sp = &spool{seed: maphash.MakeSeed()}
	defer func() {
		if err != nil {
			sp.close()
		}
	}()
	dir := os.TempDir()
	if sp.data, err = createUnlinked(dir, "roomexport-data-*"); err != nil {
		return nil, err
	}
	var (
		dw      = bufio.NewWriterSize(sp.data, 256<<10)
		skips   = newSorter(dir) // versions an earlier attempt placed
		repeats bool
		n       int
		hdr     [2 * binary.MaxVarintLen64]byte
		rec     [recordBytes]byte
		// Filtered: seen and again, and the id records in stream order
		// in ids. Unfiltered: every id record in byID.
		seen, again *bloom
		ids         *os.File
		iw          *bufio.Writer
		byID        *sorter
	)
	sp.sorters = append(sp.sorters, skips)
	if h.count <= uint64(cmp.Or(e.opts.bloomMaxIDs, bloomMaxIDs)) {
		sp.filtered = true
		seen, again = newBloom(h.count, seenBloomBits), newBloom(h.count/4, againBloomBits)
		if ids, err = createUnlinked(dir, "roomexport-ids-*"); err != nil {
			return nil, err
		}
		defer ids.Close()
		iw = bufio.NewWriterSize(ids, 64<<10)
	} else {
		byID = newSorter(dir)
		sp.sorters = append(sp.sorters, byID)
		repeats = true // unknown until the sort
		if fd != nil {
			fd.unfiltered()
		}
	}
	err = e.replayFrom(ctx, h, start, func(seq uint64, data []byte) (bool, error) {
		if n++; n%1024 == 0 && ctx.Err() != nil {
			return false, context.Cause(ctx)
		}
		off := sp.size
		id, ok := messageID(data)
		if ok && h.emitted != nil {
			if _, done := h.emitted[string(id)]; done {
				data, ok = nil, false
				if err := skips.add(record{seq, planSkip}); err != nil {
					return false, err
				}
			}
		}
		k := binary.PutUvarint(hdr[:], seq)
		k += binary.PutUvarint(hdr[k:], uint64(len(data)))
		if _, err := dw.Write(hdr[:k]); err != nil {
			return false, fmt.Errorf("spool: %w", err)
		}
		if _, err := dw.Write(data); err != nil {
			return false, fmt.Errorf("spool: %w", err)
		}
		sp.size += int64(k + len(data))
		var (
			hid idHash
			// Without filters any id may have been seen: the window
			// looks each one up.
			maybeSeen = seen == nil
		)
		if ok {
			hid = hashID(sp.seed, id)
			if seen != nil {
				if maybeSeen = seen.testAndAdd(hid); maybeSeen {
					again.testAndAdd(hid)
					repeats = true
				}
			}
		}
		if fd != nil {
			fd.add(seq, data, id, hid, ok, maybeSeen)
		}
		if !ok {
			return true, nil // undecodable or placed already: never planned
		}
		if byID != nil {
			return true, byID.add(record{hid.a, hid.b, seq, uint64(off)})
		}
		binary.LittleEndian.PutUint64(rec[0:], hid.a)
		binary.LittleEndian.PutUint64(rec[8:], hid.b)
		binary.LittleEndian.PutUint64(rec[16:], seq)
		binary.LittleEndian.PutUint64(rec[24:], uint64(off))
		if _, err := iw.Write(rec[:]); err != nil {
			return false, fmt.Errorf("spool ids: %w", err)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if err := dw.Flush(); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	planStart, plan := time.Now(), skips
	switch {
	case byID != nil:
		if plan, err = sp.planGroups(byID, skips); err != nil {
			return nil, err
		}
	case repeats:
		if err := iw.Flush(); err != nil {
			return nil, fmt.Errorf("spool ids: %w", err)
		}
		// A speculative render the window shows right needs no plan.
		if fd == nil || !fd.verify(ids) {
			if plan, err = sp.planRepeats(ids, again, skips); err != nil {
				return nil, err
			}
		}
	}
	if sp.plan, err = plan.sorted(); err != nil {
		return nil, err
	}
	sp.planTook = time.Since(planStart)
	return sp, nil
}

// planRepeats sorts the id records of ids the filter again holds and adds
// their plan to plan.
func (sp *spool) planRepeats(ids *os.File, again *bloom, plan *sorter) (*sorter, error) {
	byID := newSorter(os.TempDir())
	sp.sorters = append(sp.sorters, byID)
	r := bufio.NewReaderSize(io.NewSectionReader(ids, 0, 1<<62), 64<<10)
	var b [recordBytes]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("spool ids: %w", err)
		}
		hid := idHash{binary.LittleEndian.Uint64(b[0:]), binary.LittleEndian.Uint64(b[8:])}
		if !again.test(hid) {
			continue
		}
		if err := byID.add(record{hid.a, hid.b, binary.LittleEndian.Uint64(b[16:]), binary.LittleEndian.Uint64(b[24:])}); err != nil {
			return nil, err
		}
	}
	return sp.planGroups(byID, plan)
}

// planGroups adds to plan the plan of the id records byID holds (hash,
// seq, offset), any that may be republished, and closes byID.
func (sp *spool) planGroups(byID *sorter, plan *sorter) (*sorter, error) {
	it, err := byID.sorted()
	if err != nil {
		return nil, err
	}
	// One id's versions come together, oldest first: the first is where
	// the message goes, the last what it says, the others are skipped.
	var first, last record
	group := 0
	end := func() error {
		if group < 2 {
			return nil
		}
		sp.planned += group
		sp.republished++
		return plan.add(record{first[2], planLatest, last[2], last[3]})
	}
	for {
		r, ok, err := it.next()
		if err != nil {
			return nil, err
		}
		if ok && group > 0 && r[0] == first[0] && r[1] == first[1] {
			if err := plan.add(record{r[2], planSkip}); err != nil {
				return nil, err
			}
			last = r
			group++
			continue
		}
		if err := end(); err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		first, last, group = r, r, 1
	}
	byID.close()
	return plan, nil
}

// each calls f for every version spooled, in stream order. data is the
// version to render at seq (its own bytes, or its id's last version when
// latest, that version's seq, is not zero), or nil when the version is a
// later one of an id already placed. data is valid only during the call.
func (sp *spool) each(f func(seq uint64, data []byte, latest uint64) (bool, error)) error {
	r := bufio.NewReaderSize(io.NewSectionReader(sp.data, 0, sp.size), spoolReadBuffer)
	next, more, err := sp.plan.next()
	if err != nil {
		return err
	}
	var buf, latestBuf []byte
	for {
		seq, err := binary.ReadUvarint(r)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		var data []byte
		if n <= spoolReadBuffer {
			// Straight out of the read buffer, no copy.
			if data, err = r.Peek(int(n)); err == nil {
				_, err = r.Discard(int(n))
			}
		} else {
			buf = grow(buf, int(n))
			_, err = io.ReadFull(r, buf)
			data = buf
		}
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		var latest uint64
		for more && next[0] < seq {
			// Only a planned version that was never spooled: impossible,
			// but never loop on it.
			if next, more, err = sp.plan.next(); err != nil {
				return err
			}
		}
		if more && next[0] == seq {
			switch next[1] {
			case planSkip:
				data = nil
			case planLatest:
				id, _ := messageID(data)
				if latestBuf, err = sp.readAt(latestBuf, int64(next[3])); err != nil {
					return err
				}
				if lid, _ := messageID(latestBuf); string(lid) != string(id) {
					return fmt.Errorf("spool: message ids %q and %q share a hash", id, lid)
				}
				data, latest = latestBuf, next[2]
			}
			if next, more, err = sp.plan.next(); err != nil {
				return err
			}
		}
		if ok, err := f(seq, data, latest); err != nil || !ok {
			return err
		}
	}
}

// readAt reads the version spooled at off into buf.
func (sp *spool) readAt(buf []byte, off int64) ([]byte, error) {
	var hdr [2 * binary.MaxVarintLen64]byte
	k, err := sp.data.ReadAt(hdr[:], off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("spool: %w", err)
	}
	_, a := binary.Uvarint(hdr[:k])
	n, b := binary.Uvarint(hdr[max(a, 0):k])
	if a <= 0 || b <= 0 {
		return nil, errors.New("spool: corrupt record header")
	}
	buf = grow(buf, int(n))
	if _, err := sp.data.ReadAt(buf, off+int64(a+b)); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return buf, nil
}

// grow returns buf resized to n bytes, reallocated only when too small.
func grow(buf []byte, n int) []byte {
	if cap(buf) < n {
		return make([]byte, n)
	}
	return buf[:n]
}

// close releases the spool's files.
func (sp *spool) close() {
	if sp == nil {
		return
	}
	if sp.data != nil {
		sp.data.Close()
	}
	for _, s := range sp.sorters {
		s.close()
	}
}
