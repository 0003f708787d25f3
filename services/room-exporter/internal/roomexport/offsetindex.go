package roomexport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// offsetIndex finds records of an append-only local file by a 64-bit
// hash of their key: open addressing with linear probing over packed
// slots, each the record's offset and 24 bits of its hash, at most
// seven-eighths full. A Go map of hash to offset cost 26 to 40 bytes a
// record in the heap profile of a room of 40,000 attachments
// (docs/BENCHMARKS.md, "Packed indexes"), and grows with the room; a
// slot is 8 bytes, 9 to 18 a record as the table doubles. The hash is not kept
// whole, so a match is only a candidate, which the owner reads back
// from its file to compare keys, and growing rehashes the records from
// the file (rehash), sequentially: the file is the index's truth, and
// it is read once per doubling.
// It is not safe for concurrent use.
type offsetIndex struct {
	slots []uint64 // (hash >> offsetBits) << offsetBits | offset+1; 0 is free
	n     int
}

// offsetBits is how many bits of a slot hold an offset: a file of up to
// 1 TiB.
const offsetBits = 40

const offsetMask = 1<<offsetBits - 1

func (x *offsetIndex) home(h uint64) uint64 { return h & uint64(len(x.slots)-1) }

// candidates calls f with the offset of every record whose slot matches
// h, in probe order, until f reports a match; it reports whether one did.
func (x *offsetIndex) candidates(h uint64, f func(off int64) (bool, error)) (bool, error) {
	if x.n == 0 {
		return false, nil
	}
	tag := h >> offsetBits
	mask := uint64(len(x.slots) - 1)
	for i := x.home(h); ; i = (i + 1) & mask {
		s := x.slots[i]
		if s == 0 {
			return false, nil
		}
		if s>>offsetBits != tag {
			continue
		}
		ok, err := f(int64(s&offsetMask) - 1)
		if ok || err != nil {
			return ok, err
		}
	}
}

// full reports whether put must grow the table first.
func (x *offsetIndex) full() bool { return x.n+1 > len(x.slots)/8*7 }

// grow doubles the table (to 1,024 slots for the first record) and
// refills it from rehash, which must call put once for every record the
// index held.
func (x *offsetIndex) grow(rehash func(put func(h uint64, off int64) error) error) error {
	size := max(2*len(x.slots), 1024)
	*x = offsetIndex{slots: make([]uint64, size)}
	return rehash(x.put)
}

// put adds the record at off with hash h; the table must not be full.
func (x *offsetIndex) put(h uint64, off int64) error {
	if off < 0 || off >= offsetMask {
		return fmt.Errorf("local file of %d bytes too big to index", off)
	}
	mask := uint64(len(x.slots) - 1)
	i := x.home(h)
	for x.slots[i] != 0 {
		i = (i + 1) & mask
	}
	x.slots[i] = h>>offsetBits<<offsetBits | uint64(off+1)
	x.n++
	return nil
}

// eachDelimited calls f with the offset and body of every
// varint-delimited record of r, which holds only such records; body is
// reused for the next record.
func eachDelimited(r io.Reader, f func(off int64, body []byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var off int64
	var body []byte
	for {
		size, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("record at %d: %w", off, err)
		}
		if uint64(cap(body)) < size {
			body = make([]byte, size)
		}
		body = body[:size]
		if _, err := io.ReadFull(br, body); err != nil {
			return fmt.Errorf("record at %d: %w", off, err)
		}
		if err := f(off, body); err != nil {
			return err
		}
		off += int64(uvarintLen(size)) + int64(size)
	}
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}
