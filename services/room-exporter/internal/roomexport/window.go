package roomexport

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"slices"
)

// The speculative render (speculate.go) does not take a version as soon
// as it is read: versions wait in a window, bounded in versions and in
// bytes, and only the oldest leave it for the renderer. A version whose
// id has its first version still in the window (an edit, a reaction, a
// thread's new reply count, mostly published soon after the message) is
// applied there: the first version's entry takes its bytes, keeps its
// position, and remembers the sequence applied (the render's latest,
// which a checkpoint needs, see position.placed); the version itself
// stays in the window as a skip. That is what the planned render does
// with the whole history (spool.go), so the render sees exactly the
// planned render's versions. Only an id republished after its first
// version left the window makes the speculative document wrong: the read
// abandons it at once when the table of recent ids confirms the Bloom
// filter's hit, or the verdict at the read's end finds it (verify,
// resolved).
//
// Whether a version is applied depends only on the history, never on
// timing, so a resumed attempt that reads the history again from its
// start rebuilds the same window and renders what follows its
// checkpoint as the first attempt would have; the bounds are part of the
// checkpoint's meaning (speculativeCheckpointVersion).

// Bounds of the window: what is held is at most about windowBytes of
// payloads plus 64 bytes per version, whatever the room's size.
const (
	windowVersions = 16 << 10
	windowBytes    = 4 << 20
)

// maxSuspects bounds the ids the window cannot tell apart from
// republished ones without the history (see verify): 384 KiB at most, 24
// bytes each. A room of more than about 1,300,000 versions has more (the
// Bloom filter's false hits grow with it past its cap, and a room too big
// for filters has every entry a suspect, see spool.go) and is then
// checked by the plan, whose sort of the records costs local disk, not
// memory.
const maxSuspects = 1 << 14

// recentIDs is the size of the table of recent id hashes that confirms a
// Bloom filter's "seen" for an id no longer in the window: 1 MiB. Each
// slot keeps the last id hashed to it, so an id published again within
// some tens of thousands of messages is found at once, and a hit is never
// a false one.
const recentIDs = 1 << 16

// pending is a version in the window.
type pending struct {
	version
	hid idHash
	// keyed: the window's index holds hid for this entry (a first
	// version whose id was read; not an undecodable version or a skip).
	keyed bool
}

// window is the speculative render's window; it is used by the read's
// goroutine only.
type window struct {
	ring []pending
	head int // ring index of the oldest entry
	n    int
	// out is how many entries have left the window: the oldest entry's
	// number, as the index counts them.
	out   uint64
	index idIndex // id hash → number of its first version's entry
	bytes int
	// maxVersions, maxBytes bound the window; recent confirms republished
	// ids whose first version left it.
	maxVersions, maxBytes int
	recent                []idHash
	// runs counts the entries a later version was applied to, applied the
	// versions of those entries (first ones included): see resolved.
	runs, applied int
	// suspects are the entries the Bloom filter had seen, by id hash,
	// with their sequences, in stream order: each a first version unless
	// the history holds an earlier version of its id (verify).
	// suspectsLost: there were more than maxSuspects.
	suspects     []suspect
	suspectsLost bool
}

// suspect is an entry whose id the Bloom filter had seen.
type suspect struct {
	hid idHash
	seq uint64
}

func newWindow(versions, bytes, recent int) *window {
	w := &window{
		ring:        make([]pending, min(256, versions+1)),
		maxVersions: versions,
		maxBytes:    bytes,
		recent:      make([]idHash, cmp.Or(recent, recentIDs)),
	}
	w.index.reset(w, len(w.ring))
	return w
}

// entry returns the window's entry number num (out ≤ num < out+n).
func (w *window) entry(num uint64) *pending {
	return &w.ring[(w.head+int(num-w.out))%len(w.ring)]
}

// add puts the version read at seq into the window: applied to its id's
// first version when that is still there, else as an entry of its own.
// keyed says data's id, id, was read (hid is its hash); seen is the
// Bloom filter's "may have been seen before" (always, when the spool has
// no filter). add reports false when the
// id is known to be republished after its first version left the window:
// the speculative render is wrong.
func (w *window) add(seq uint64, data, id []byte, hid idHash, keyed, seen bool) bool {
	if !keyed {
		w.push(pending{version: version{seq: seq, data: data}})
		return true
	}
	slot := &w.recent[hid.a%uint64(len(w.recent))]
	if seen {
		if num, ok := w.index.get(hid); ok {
			e := w.entry(num)
			if first, _ := messageID(e.data); !bytes.Equal(first, id) {
				return false // two ids share a hash: the planned render reports it
			}
			if e.latest == 0 {
				w.runs++
				w.applied++
			}
			w.applied++
			w.bytes += len(data) - len(e.data)
			e.data, e.latest = data, seq
			*slot = hid
			w.push(pending{version: version{seq: seq}})
			return true
		}
		if *slot == hid {
			return false
		}
		if len(w.suspects) < maxSuspects && !w.suspectsLost {
			w.suspects = append(w.suspects, suspect{hid, seq})
		} else {
			w.suspects, w.suspectsLost = nil, true
		}
	}
	*slot = hid
	num := w.out + uint64(w.n)
	w.push(pending{version: version{seq: seq, data: data}, hid: hid, keyed: true})
	w.index.put(hid, num)
	return true
}

func (w *window) push(p pending) {
	if w.n == len(w.ring) {
		ring := make([]pending, min(2*len(w.ring), w.maxVersions+1))
		k := copy(ring, w.ring[w.head:])
		copy(ring[k:], w.ring[:w.head])
		w.ring, w.head = ring, 0
		w.index.reset(w, len(ring))
	}
	w.ring[(w.head+w.n)%len(w.ring)] = p
	w.n++
	w.bytes += len(p.data)
}

// over reports whether the window holds more than its bounds allow.
func (w *window) over() bool {
	return w.n > w.maxVersions || w.bytes > w.maxBytes && w.n > 0
}

// pop takes the oldest version out of the window.
func (w *window) pop() version {
	p := w.ring[w.head]
	if p.keyed {
		w.index.remove(p.hid, w.out)
	}
	w.ring[w.head] = pending{} // the payload is the renderer's now
	w.head = (w.head + 1) % len(w.ring)
	w.n--
	w.out++
	w.bytes -= len(p.data)
	return p.version
}

// drop forgets the window's versions (an abandoned render's window holds
// payloads nobody will render); its counts and suspects stay.
func (w *window) drop() {
	w.ring, w.index, w.recent, w.n, w.bytes = nil, idIndex{}, nil, 0, 0
}

// verify tells, from the spool's id records (ids, spool.go: 128-bit id
// hash, seq, offset, in stream order), whether the window applied every
// republished version of the history, without the plan's sorts; false
// when it cannot tell (the plan's counts then decide, resolved). Every
// entry of the window is an id's first version if the Bloom filter had
// not seen its id, and a suspect otherwise: it is one exactly when no
// record of its id comes before it. With every entry a first version,
// every later version was applied to its id's first, as the plan would
// have it.
func (w *window) verify(ids *os.File) bool {
	if w.suspectsLost {
		return false
	}
	if len(w.suspects) == 0 {
		return true
	}
	// By hash, each id's last suspect only: an earlier record of its id
	// than that one's is what tells.
	sus := w.suspects
	slices.SortFunc(sus, func(x, y suspect) int {
		return cmp.Or(cmp.Compare(x.hid.a, y.hid.a), cmp.Compare(x.hid.b, y.hid.b), cmp.Compare(y.seq, x.seq))
	})
	sus = slices.CompactFunc(sus, func(x, y suspect) bool { return x.hid == y.hid })
	r := bufio.NewReaderSize(io.NewSectionReader(ids, 0, 1<<62), 64<<10)
	var b [recordBytes]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			// The end, or an error the plan will report.
			return errors.Is(err, io.EOF)
		}
		hid := idHash{binary.LittleEndian.Uint64(b[0:]), binary.LittleEndian.Uint64(b[8:])}
		i, ok := slices.BinarySearchFunc(sus, hid, func(x suspect, h idHash) int {
			return cmp.Or(cmp.Compare(x.hid.a, h.a), cmp.Compare(x.hid.b, h.b))
		})
		if ok && binary.LittleEndian.Uint64(b[16:]) < sus[i].seq {
			return false
		}
	}
}

// resolved reports whether the window applied every republished version
// of the history, given the spool's exact count of republished ids and
// of their versions (when verify could not tell). The window merges versions of one id only, and
// consecutive ones (those read while the entry was in the window), so an
// id's versions fall into runs, each run an entry of its own. With
// applied ≤ planned per id, equal totals mean every version of every
// republished id is in a run of two or more; with at least one run per
// id, equal counts of runs and ids mean exactly one: each id at its
// first position in its last version, every later version skipped,
// which is the plan.
func (w *window) resolved(republished, planned int) bool {
	return w.runs == republished && w.applied == planned
}

// idIndex finds a window entry by its id hash: open addressing with
// linear probing over entry numbers, the hashes being the entries' own,
// at most two-thirds full. A Go map would cost three times as much here, and
// grow with the room: the window deletes as often as it inserts, and a
// map's deleted slots are only reclaimed by growing it. The table grows
// only with the ring, so its size is set by the window's bounds, not by
// the room (256 KiB for 16,384 versions).
type idIndex struct {
	w     *window
	slots []uint64 // entry number + 1; 0 is a free slot
	mask  uint64
}

// reset sizes the table for a ring of n entries and indexes the window's
// keyed entries again, oldest first, so a later entry of one hash wins as
// put has it.
func (x *idIndex) reset(w *window, n int) {
	size := 1
	for size < n+n/2 {
		size <<= 1
	}
	*x = idIndex{w: w, slots: make([]uint64, size), mask: uint64(size - 1)}
	for i := range w.n {
		if e := &w.ring[(w.head+i)%len(w.ring)]; e.keyed {
			x.put(e.hid, w.out+uint64(i))
		}
	}
}

// find returns the slot of hid, or the free slot where it would go.
func (x *idIndex) find(hid idHash) (int, bool) {
	for i := hid.a & x.mask; ; i = (i + 1) & x.mask {
		s := x.slots[i]
		if s == 0 {
			return int(i), false
		}
		if x.w.entry(s-1).hid == hid {
			return int(i), true
		}
	}
}

func (x *idIndex) get(hid idHash) (uint64, bool) {
	i, ok := x.find(hid)
	return x.slots[i] - 1, ok
}

// put maps hid to entry number num, which is in the window.
func (x *idIndex) put(hid idHash, num uint64) {
	i, _ := x.find(hid)
	x.slots[i] = num + 1
}

// remove forgets hid if it maps to entry number num, which is still in
// the window: the entries the others' slots name are found through it.
// Later slots of the probe shift back into the hole, so a lookup never
// stops at a slot that was freed.
func (x *idIndex) remove(hid idHash, num uint64) {
	i, ok := x.find(hid)
	if !ok || x.slots[i] != num+1 {
		return
	}
	hole := uint64(i)
	for j := (hole + 1) & x.mask; x.slots[j] != 0; j = (j + 1) & x.mask {
		home := x.w.entry(x.slots[j]-1).hid.a & x.mask
		// The slot at j stays unless the hole lies on its probe, between
		// its home and j.
		if (j-home)&x.mask >= (j-hole)&x.mask {
			x.slots[hole], hole = x.slots[j], j
		}
	}
	x.slots[hole] = 0
}
