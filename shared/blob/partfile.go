package blob

import (
	"bufio"
	"fmt"
	"io"
	"os"
)

// Part sizes past the first parts: PartsAtBase parts of MinPartSize hold
// 24 GiB, and objects that big are rare; doubling every PartsPerDoubling
// parts after that keeps an object of up to 327 GiB within MaxParts, and
// only such an object pays for bigger part files.
const (
	PartsAtBase      = 5000
	PartsPerDoubling = 1000
)

// PartSizeAt is the size at which part n (from 1) of an object is cut,
// given the base part size (at least MinPartSize): a function of n alone,
// so a resumed upload cuts its next parts where the first attempt would
// have.
func PartSizeAt(base, n int) int {
	if n <= PartsAtBase {
		return base
	}
	return base << min((n-PartsAtBase-1)/PartsPerDoubling+1, 8)
}

// partWriteBuffer is a PartFile's write buffer.
const partWriteBuffer = 64 << 10

// PartFile holds one part of a multipart upload on local disk, from its
// first byte until the store has acknowledged it. A part in memory is a
// part size of heap twice over (one part filling, one uploading), doubled
// again by the collector's headroom: the biggest cost of an export that
// does not depend on the export. In an unlinked file it is page cache,
// written once by the producer and read once by the upload, and the disk
// goes back to the system when the file is closed, even if the process is
// killed. An uploader keeps two and reuses them for every other part, so
// local disk holds at most two parts per upload.
//
// A PartFile is not safe for concurrent use; Contents' reader may be read
// while nobody writes the file.
type PartFile struct {
	f *os.File
	w *bufio.Writer
	n int
}

// NewPartFile creates an empty part file in dir (os.TempDir() when empty).
func NewPartFile(dir string) (*PartFile, error) {
	f, err := os.CreateTemp(dir, "dataport-part-*")
	if err != nil {
		return nil, fmt.Errorf("part file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("part file: %w", err)
	}
	p := &PartFile{f: f}
	p.w = bufio.NewWriterSize(io.NewOffsetWriter(f, 0), partWriteBuffer)
	return p, nil
}

// Write appends b to the part.
func (p *PartFile) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += n
	if err != nil {
		return n, fmt.Errorf("part file: %w", err)
	}
	return n, nil
}

// Len is how many bytes the part holds.
func (p *PartFile) Len() int { return p.n }

// Contents returns the part's bytes to upload; the reader seeks, so
// minio-go can retry a failed request without a copy. The part must not
// be written to while the reader is read; bytes written afterwards are
// appended past the reader's end, so a file that only grows (a list
// spilled to disk) can be read back between writes.
func (p *PartFile) Contents() (*io.SectionReader, error) {
	if err := p.w.Flush(); err != nil {
		return nil, fmt.Errorf("part file: %w", err)
	}
	return io.NewSectionReader(p.f, 0, int64(p.n)), nil
}

// Reset empties the part for the next one, which overwrites it from the
// start: the file stays as big as the biggest part it held.
func (p *PartFile) Reset() {
	p.n = 0
	p.w.Reset(io.NewOffsetWriter(p.f, 0))
}

// Close releases the file and its disk space.
func (p *PartFile) Close() error { return p.f.Close() }
