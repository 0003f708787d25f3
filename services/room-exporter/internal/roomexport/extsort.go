package roomexport

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// record is the unit the external sorter sorts: four words, compared in
// order. What the words mean is the caller's (see spool.go).
type record [4]uint64

const recordBytes = 32

func compareRecords(a, b record) int {
	for i := range a {
		if c := cmp.Compare(a[i], b[i]); c != 0 {
			return c
		}
	}
	return 0
}

// sorterRunRecords is how many records a sorter holds in memory before it
// writes them out as a sorted run: 1 MiB, whatever the room's size. A
// bigger run saves merge work but is live heap for the whole plan,
// doubled by the collector's headroom.
const sorterRunRecords = 32 << 10

// sorterFanIn is how many runs one merge reads at once, each through a
// sorterReadBuffer: 1 MiB of buffers. A sorter with more runs first
// merges them in groups of sorterFanIn into longer runs (one more pass
// over the file per factor of sorterFanIn: 2,097,152 records, 64 MiB of
// ids, still sort in one pass), so the merge's memory does not grow with
// the number of records either.
const sorterFanIn = 64

// sorterReadBuffer is each run's read buffer during a merge.
const sorterReadBuffer = 16 << 10

// sorter sorts any number of records with bounded memory: records are
// collected in a buffer, each full buffer is sorted and appended to an
// unlinked temporary file as a run, and reading merges the runs (after
// merging groups of them while there are more than sorterFanIn). It is
// used by one goroutine.
type sorter struct {
	dir string
	// run is how many records make a run: sorterRunRecords, less in tests.
	run  int
	buf  []record
	file *os.File
	w    *bufio.Writer
	runs []int64 // end offset of each run written; runs follow each other
	size int64
}

func newSorter(dir string) *sorter {
	return &sorter{dir: dir, run: sorterRunRecords}
}

// add appends r.
func (s *sorter) add(r record) error {
	if s.buf == nil {
		s.buf = make([]record, 0, s.run)
	}
	s.buf = append(s.buf, r)
	if len(s.buf) == cap(s.buf) {
		return s.spill()
	}
	return nil
}

func (s *sorter) spill() error {
	if len(s.buf) == 0 {
		return nil
	}
	if s.file == nil {
		f, err := createUnlinked(s.dir, "roomexport-sort-*")
		if err != nil {
			return err
		}
		s.file, s.w = f, bufio.NewWriterSize(f, 64<<10)
	}
	slices.SortFunc(s.buf, compareRecords)
	for _, r := range s.buf {
		if err := writeRunRecord(s.w, r); err != nil {
			return err
		}
	}
	s.size += int64(len(s.buf)) * recordBytes
	s.runs = append(s.runs, s.size)
	s.buf = s.buf[:0]
	return nil
}

// sorted returns an iterator over every record added, in order. Records
// are not added after it.
func (s *sorter) sorted() (*mergeIter, error) {
	if len(s.runs) == 0 {
		// Everything fits in memory: no file at all.
		slices.SortFunc(s.buf, compareRecords)
		return &mergeIter{mem: s.buf}, nil
	}
	if err := s.spill(); err != nil {
		return nil, err
	}
	if err := s.w.Flush(); err != nil {
		return nil, fmt.Errorf("sort run: %w", err)
	}
	s.buf = nil
	for len(s.runs) > sorterFanIn {
		if err := s.mergePass(); err != nil {
			return nil, err
		}
	}
	return mergeRuns(s.file, 0, s.runs)
}

// mergePass merges the runs in groups of sorterFanIn into a new run file,
// which replaces the old one.
func (s *sorter) mergePass() error {
	f, err := createUnlinked(s.dir, "roomexport-sort-*")
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 64<<10)
	var (
		runs  []int64
		size  int64
		start int64
	)
	for group := range slices.Chunk(s.runs, sorterFanIn) {
		it, err := mergeRuns(s.file, start, group)
		if err != nil {
			f.Close()
			return err
		}
		for {
			r, ok, err := it.next()
			if err != nil {
				f.Close()
				return err
			}
			if !ok {
				break
			}
			if err := writeRunRecord(w, r); err != nil {
				f.Close()
				return err
			}
			size += recordBytes
		}
		runs = append(runs, size)
		start = group[len(group)-1]
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("sort run: %w", err)
	}
	s.file.Close()
	s.file, s.w, s.runs, s.size = f, w, runs, size
	return nil
}

// mergeRuns returns an iterator over the runs of f that follow each other
// from offset start, each ending at the next of ends.
func mergeRuns(f *os.File, start int64, ends []int64) (*mergeIter, error) {
	it := &mergeIter{heap: make(runHeap, 0, len(ends))}
	for _, end := range ends {
		c := &runCursor{r: bufio.NewReaderSize(io.NewSectionReader(f, start, end-start), sorterReadBuffer)}
		ok, err := c.advance()
		if err != nil {
			return nil, err
		}
		if ok {
			it.heap = append(it.heap, c)
		}
		start = end
	}
	it.heap.init()
	return it, nil
}

func writeRunRecord(w *bufio.Writer, r record) error {
	var b [recordBytes]byte
	for i, v := range r {
		binary.LittleEndian.PutUint64(b[i*8:], v)
	}
	if _, err := w.Write(b[:]); err != nil {
		return fmt.Errorf("sort run: %w", err)
	}
	return nil
}

// close releases the run file.
func (s *sorter) close() {
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
	s.buf = nil
}

// mergeIter yields a sorter's records in order.
type mergeIter struct {
	mem  []record // when nothing was written out
	heap runHeap
}

// next returns the next record, or false at the end.
func (it *mergeIter) next() (record, bool, error) {
	if it.heap == nil {
		if len(it.mem) == 0 {
			return record{}, false, nil
		}
		r := it.mem[0]
		it.mem = it.mem[1:]
		return r, true, nil
	}
	if len(it.heap) == 0 {
		return record{}, false, nil
	}
	c := it.heap[0]
	r := c.cur
	ok, err := c.advance()
	if err != nil {
		return record{}, false, err
	}
	if !ok {
		last := len(it.heap) - 1
		it.heap[0], it.heap[last] = it.heap[last], nil
		it.heap = it.heap[:last]
	}
	it.heap.down(0)
	return r, true, nil
}

type runCursor struct {
	r   *bufio.Reader
	cur record
}

func (c *runCursor) advance() (bool, error) {
	var b [recordBytes]byte
	if _, err := io.ReadFull(c.r, b[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("sort run: %w", err)
	}
	for i := range c.cur {
		c.cur[i] = binary.LittleEndian.Uint64(b[i*8:])
	}
	return true, nil
}

// runHeap is a min-heap of run cursors by their current record. It is
// not a container/heap.Interface: a merge of every id record of a big
// room (spool.go) spends its time here, and a typed heap compares without
// the interface's indirect calls.
type runHeap []*runCursor

func (h runHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// down moves h[i] down to its place.
func (h runHeap) down(i int) {
	for {
		j := 2*i + 1
		if j >= len(h) {
			return
		}
		if r := j + 1; r < len(h) && compareRecords(h[r].cur, h[j].cur) < 0 {
			j = r
		}
		if compareRecords(h[j].cur, h[i].cur) >= 0 {
			return
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}

// createUnlinked creates a temporary file in dir and removes its name at
// once: the space is the open file's and goes back to the system when it is
// closed, even if the process is killed.
func createUnlinked(dir, pattern string) (*os.File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, fmt.Errorf("spool file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool file: %w", err)
	}
	return f, nil
}
