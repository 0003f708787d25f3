package recordexport

import (
	"bufio"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"time"

	"dataport.dev/shared/recordquery"
)

// item is one matching record on its way to the renderer: its id, the
// values of the output columns and the values of the sort keys.
type item struct {
	id     string
	values []any
	keys   []any
}

// sorter is an external merge sort with bounded memory. Items collect in
// memory until their estimated size reaches memLimit; then they are sorted
// (stably) into a run file under dir. finish merges the runs, at most
// maxFanIn at a time (merging the first runs into one that takes their
// place, so equal keys keep source order across runs too).
//
// Memory is about memLimit plus maxFanIn read buffers; disk is about the
// size of the matching records once more.
type sorter struct {
	desc     []bool
	dir      string
	memLimit int64
	mem      []item
	memBytes int64
	runs     []string
}

const (
	maxFanIn      = 64
	runReadBuffer = 64 << 10
)

func newSorter(keys []recordquery.SortKey, dir string, memLimit int64) *sorter {
	s := &sorter{dir: dir, memLimit: memLimit}
	for _, k := range keys {
		s.desc = append(s.desc, k.Desc)
	}
	return s
}

func (s *sorter) compare(a, b *item) int {
	for i, d := range s.desc {
		c := recordquery.CompareValues(a.keys[i], b.keys[i])
		if d {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

func itemSize(it *item) int64 {
	n := int64(64 + len(it.id))
	for _, vs := range [][]any{it.values, it.keys} {
		for _, v := range vs {
			n += 24 + int64(len(recordquery.FormatValue(v)))
		}
	}
	return n
}

func (s *sorter) add(it item) error {
	s.mem = append(s.mem, it)
	s.memBytes += itemSize(&it)
	if s.memBytes >= s.memLimit {
		return s.spill()
	}
	return nil
}

// spill sorts the items in memory into a new run file.
func (s *sorter) spill() error {
	if len(s.mem) == 0 {
		return nil
	}
	slices.SortStableFunc(s.mem, func(a, b item) int { return s.compare(&a, &b) })
	f, err := os.CreateTemp(s.dir, "dataport-sort-*.run")
	if err != nil {
		return fmt.Errorf("sort: create run: %w", err)
	}
	s.runs = append(s.runs, f.Name())
	w := bufio.NewWriterSize(f, 256<<10)
	var buf []byte
	for i := range s.mem {
		buf = encodeItem(buf[:0], &s.mem[i])
		if _, err := w.Write(buf); err != nil {
			_ = f.Close()
			return fmt.Errorf("sort: write run: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return fmt.Errorf("sort: write run: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sort: close run: %w", err)
	}
	clear(s.mem)
	s.mem = s.mem[:0]
	s.memBytes = 0
	return nil
}

// finish emits every item in sorted order.
func (s *sorter) finish(emit func(*item) error) error {
	if len(s.runs) == 0 {
		slices.SortStableFunc(s.mem, func(a, b item) int { return s.compare(&a, &b) })
		for i := range s.mem {
			if err := emit(&s.mem[i]); err != nil {
				return err
			}
		}
		return nil
	}
	if err := s.spill(); err != nil {
		return err
	}
	for len(s.runs) > maxFanIn {
		f, err := os.CreateTemp(s.dir, "dataport-sort-*.run")
		if err != nil {
			return fmt.Errorf("sort: create run: %w", err)
		}
		w := bufio.NewWriterSize(f, 256<<10)
		var buf []byte
		err = s.merge(s.runs[:maxFanIn], func(it *item) error {
			buf = encodeItem(buf[:0], it)
			_, err := w.Write(buf)
			return err
		})
		if err == nil {
			err = w.Flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(f.Name())
			return fmt.Errorf("sort: merge runs: %w", err)
		}
		for _, r := range s.runs[:maxFanIn] {
			_ = os.Remove(r)
		}
		s.runs = append([]string{f.Name()}, s.runs[maxFanIn:]...)
	}
	return s.merge(s.runs, emit)
}

// close removes the run files.
func (s *sorter) close() {
	for _, r := range s.runs {
		_ = os.Remove(r)
	}
	s.runs = nil
	s.mem = nil
}

type runReader struct {
	r   *bufio.Reader
	f   *os.File
	cur item
	idx int
}

type runHeap struct {
	s  *sorter
	rs []*runReader
}

func (h *runHeap) Len() int { return len(h.rs) }
func (h *runHeap) Less(i, j int) bool {
	if c := h.s.compare(&h.rs[i].cur, &h.rs[j].cur); c != 0 {
		return c < 0
	}
	return h.rs[i].idx < h.rs[j].idx
}
func (h *runHeap) Swap(i, j int) { h.rs[i], h.rs[j] = h.rs[j], h.rs[i] }
func (h *runHeap) Push(x any)    { h.rs = append(h.rs, x.(*runReader)) }
func (h *runHeap) Pop() any {
	x := h.rs[len(h.rs)-1]
	h.rs = h.rs[:len(h.rs)-1]
	return x
}

func (s *sorter) merge(runs []string, emit func(*item) error) error {
	h := &runHeap{s: s}
	defer func() {
		for _, r := range h.rs {
			_ = r.f.Close()
		}
	}()
	for i, name := range runs {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("sort: open run: %w", err)
		}
		rr := &runReader{r: bufio.NewReaderSize(f, runReadBuffer), f: f, idx: i}
		ok, err := rr.next()
		if err != nil {
			_ = f.Close()
			return err
		}
		if !ok {
			_ = f.Close()
			continue
		}
		h.rs = append(h.rs, rr)
	}
	heap.Init(h)
	for h.Len() > 0 {
		top := h.rs[0]
		if err := emit(&top.cur); err != nil {
			return err
		}
		ok, err := top.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(h, 0)
		} else {
			_ = top.f.Close()
			heap.Pop(h)
		}
	}
	return nil
}

func (r *runReader) next() (bool, error) {
	n, err := binary.ReadUvarint(r.r)
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sort: read run: %w", err)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r.r, buf); err != nil {
		return false, fmt.Errorf("sort: read run: %w", err)
	}
	it, err := decodeItem(buf)
	if err != nil {
		return false, err
	}
	r.cur = it
	return true, nil
}

// Run file encoding: each item is a uvarint length and then id, the
// values and the keys; values are a tag byte and their payload.
const (
	tagNil byte = iota
	tagString
	tagFloat
	tagBool
	tagTime
	tagStrings
	tagList
)

func encodeItem(b []byte, it *item) []byte {
	var body []byte
	body = appendString(body, it.id)
	body = appendValues(body, it.values)
	body = appendValues(body, it.keys)
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendValues(b []byte, vs []any) []byte {
	b = binary.AppendUvarint(b, uint64(len(vs)))
	for _, v := range vs {
		b = appendValue(b, v)
	}
	return b
}

func appendValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case string:
		return appendString(append(b, tagString), x)
	case float64:
		return binary.BigEndian.AppendUint64(append(b, tagFloat), math.Float64bits(x))
	case bool:
		if x {
			return append(b, tagBool, 1)
		}
		return append(b, tagBool, 0)
	case time.Time:
		b = binary.AppendVarint(append(b, tagTime), x.Unix())
		return binary.AppendUvarint(b, uint64(x.Nanosecond()))
	case []string:
		b = binary.AppendUvarint(append(b, tagStrings), uint64(len(x)))
		for _, s := range x {
			b = appendString(b, s)
		}
		return b
	case []any:
		return appendValues(append(b, tagList), x)
	case nil:
		return append(b, tagNil)
	}
	return appendString(append(b, tagString), recordquery.FormatValue(v))
}

type decoder struct {
	b   []byte
	err error
}

var errCorruptRun = errors.New("sort: corrupt run file")

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorruptRun
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errCorruptRun
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) values() []any {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errCorruptRun
		return nil
	}
	out := make([]any, n)
	for i := range out {
		out[i] = d.value()
	}
	return out
}

func (d *decoder) value() any {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCorruptRun
		return nil
	}
	tag := d.b[0]
	d.b = d.b[1:]
	switch tag {
	case tagNil:
		return nil
	case tagString:
		return d.str()
	case tagFloat:
		if len(d.b) < 8 {
			d.err = errCorruptRun
			return nil
		}
		f := math.Float64frombits(binary.BigEndian.Uint64(d.b))
		d.b = d.b[8:]
		return f
	case tagBool:
		if len(d.b) < 1 {
			d.err = errCorruptRun
			return nil
		}
		v := d.b[0] == 1
		d.b = d.b[1:]
		return v
	case tagTime:
		sec, n := binary.Varint(d.b)
		if n <= 0 {
			d.err = errCorruptRun
			return nil
		}
		d.b = d.b[n:]
		nsec := d.uvarint()
		return time.Unix(sec, int64(nsec)).UTC()
	case tagStrings:
		n := d.uvarint()
		if d.err != nil || n > uint64(len(d.b)) {
			d.err = errCorruptRun
			return nil
		}
		out := make([]string, n)
		for i := range out {
			out[i] = d.str()
		}
		return out
	case tagList:
		return d.values()
	}
	d.err = errCorruptRun
	return nil
}

func decodeItem(b []byte) (item, error) {
	d := &decoder{b: b}
	it := item{id: d.str()}
	it.values = d.values()
	it.keys = d.values()
	if d.err != nil {
		return item{}, d.err
	}
	return it, nil
}
