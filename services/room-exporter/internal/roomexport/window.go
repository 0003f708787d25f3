package roomexport

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"io"
	"os"
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
// republished ones without the history (see verify): 1.5 MiB at most.
const maxSuspects = 1 << 16

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
	index map[idHash]uint64 // id hash → number of its first version's entry
	bytes int
	// maxVersions, maxBytes bound the window; recent confirms republished
	// ids whose first version left it.
	maxVersions, maxBytes int
	recent                []idHash
	// runs counts the entries a later version was applied to, applied the
	// versions of those entries (first ones included): see resolved.
	runs, applied int
	// suspects are the entries the Bloom filter had seen, by id hash,
	// with the sequence of the last such entry: a first version unless
	// the history holds an earlier version (verify). suspectsLost: there
	// were more than maxSuspects.
	suspects     map[idHash]uint64
	suspectsLost bool
}

func newWindow(versions, bytes, recent int) *window {
	return &window{
		ring:        make([]pending, min(256, versions+1)),
		index:       make(map[idHash]uint64),
		suspects:    make(map[idHash]uint64),
		maxVersions: versions,
		maxBytes:    bytes,
		recent:      make([]idHash, cmp.Or(recent, recentIDs)),
	}
}

// add puts the version read at seq into the window: applied to its id's
// first version when that is still there, else as an entry of its own.
// keyed says data's id, id, was read (hid is its hash); seen is the
// Bloom filter's "may have been seen before". add reports false when the
// id is known to be republished after its first version left the window:
// the speculative render is wrong.
func (w *window) add(seq uint64, data, id []byte, hid idHash, keyed, seen bool) bool {
	if !keyed {
		w.push(pending{version: version{seq: seq, data: data}})
		return true
	}
	slot := &w.recent[hid.a%uint64(len(w.recent))]
	if seen {
		if num, ok := w.index[hid]; ok {
			e := &w.ring[(w.head+int(num-w.out))%len(w.ring)]
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
		if len(w.suspects) < maxSuspects {
			w.suspects[hid] = seq
		} else {
			w.suspectsLost = true
		}
	}
	*slot = hid
	w.index[hid] = w.out + uint64(w.n)
	w.push(pending{version: version{seq: seq, data: data}, hid: hid, keyed: true})
	return true
}

func (w *window) push(p pending) {
	if w.n == len(w.ring) {
		ring := make([]pending, min(2*len(w.ring), w.maxVersions+1))
		k := copy(ring, w.ring[w.head:])
		copy(ring[k:], w.ring[:w.head])
		w.ring, w.head = ring, 0
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
	w.ring[w.head] = pending{} // the payload is the renderer's now
	if p.keyed && w.index[p.hid] == w.out {
		delete(w.index, p.hid)
	}
	w.head = (w.head + 1) % len(w.ring)
	w.n--
	w.out++
	w.bytes -= len(p.data)
	return p.version
}

// drop forgets the window's versions (an abandoned render's window holds
// payloads nobody will render); its counts and suspects stay.
func (w *window) drop() {
	w.ring, w.index, w.recent, w.n, w.bytes = nil, nil, nil, 0, 0
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
	r := bufio.NewReaderSize(io.NewSectionReader(ids, 0, 1<<62), 64<<10)
	var b [recordBytes]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			// The end, or an error the plan will report.
			return errors.Is(err, io.EOF)
		}
		hid := idHash{binary.LittleEndian.Uint64(b[0:]), binary.LittleEndian.Uint64(b[8:])}
		if q, ok := w.suspects[hid]; ok && binary.LittleEndian.Uint64(b[16:]) < q {
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
