package recordexport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/record-exporter/internal/recordrender"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/objects"
)

// sink writes rows into one file, or into numbered chunk files when the
// task sets row or byte limits, each uploaded as it is written:
// renderer → buffer → byte counter → (gzip) → counter, pipe → upload,
// which computes the file's SHA-256 and has the store verify its checksum.
type sink struct {
	ctx      context.Context
	store    *blob.Store
	bucket   string
	jobID    string
	part     uint32
	format   recordrender.Format
	meta     recordrender.Meta
	base     string // chunk name stem
	single   string // file name without limits
	gzip     bool
	maxRows  uint64
	maxBytes uint64
	// maxTotal caps the bytes of all files together as stored (0: no
	// cap); going over ends the export with errTooMuch.
	maxTotal uint64
	// rotated runs after a chunk was stored and before the row that did
	// not fit opens the next one: the moment a checkpoint can be taken.
	// An error ends the export.
	rotated func() error
	// piece, when set, makes the one file a piece of a split export's
	// file (split.go).
	piece *piece

	cur   *chunk
	files []*exportv1.File
	rows  uint64
	bytes uint64 // stored bytes of closed chunks
}

type chunk struct {
	name, key string
	pw        *io.PipeWriter
	done      chan uploadResult
	r         recordrender.Renderer
	bw        *bufio.Writer
	raw       counter // bytes the renderer produced
	stored    counter // bytes of the object
	gz        *gzip.Writer
	rows      uint64
}

type uploadResult struct {
	info blob.Info
	err  error
}

type counter struct{ n uint64 }

func (c *counter) Write(p []byte) (int, error) { c.n += uint64(len(p)); return len(p), nil }

// countingWriter forwards to w and counts.
type countingWriter struct {
	w io.Writer
	c *counter
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.c.n += uint64(n)
	return n, err
}

func (s *sink) chunked() bool { return s.maxRows > 0 || s.maxBytes > 0 }

func (s *sink) contentType() string {
	if s.gzip {
		return "application/gzip"
	}
	return s.format.ContentType
}

func (s *sink) nextName() string {
	if !s.chunked() {
		return s.single
	}
	name := s.base + "." + strconv.Itoa(len(s.files)) + "." + s.format.Ext
	if s.gzip {
		name += ".gz"
	}
	return name
}

// open starts the next file's upload and writes its header.
func (s *sink) open() error {
	c := &chunk{name: s.nextName(), done: make(chan uploadResult, 1)}
	c.key = objects.PartKey(s.jobID, s.part, c.name)
	pr, pw := io.Pipe()
	c.pw = pw
	ct := s.contentType()
	go func() {
		info, err := s.store.Upload(s.ctx, s.bucket, c.key, pr, ct)
		// Unblocks the writer if the upload gave up first.
		pr.CloseWithError(err)
		c.done <- uploadResult{info: info, err: err}
	}()
	var out io.Writer = countingWriter{w: pw, c: &c.stored}
	if s.gzip {
		c.gz = gzip.NewWriter(out)
		out = c.gz
	}
	c.bw = bufio.NewWriterSize(countingWriter{w: out, c: &c.raw}, 64<<10)
	c.r = s.format.New(c.bw, s.meta)
	s.cur = c
	if s.piece != nil && !s.piece.first {
		if cont, ok := c.r.(recordrender.Continuer); ok {
			s.piece.lead = cont.Continue()
		}
		return nil
	}
	if err := c.r.Begin(); err != nil {
		return s.fail(err)
	}
	return nil
}

// write adds one row, rotating to a new chunk first when the current one
// reached a limit. Byte limits count the rendered (uncompressed) bytes, so
// a chunk closes at the first row that reaches the limit: it holds at most
// one row and the format's closing bytes more.
func (s *sink) write(row recordrender.Row) error {
	if err := s.rotateIfFull(); err != nil {
		return err
	}
	if s.cur == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	if err := s.cur.r.Write(row); err != nil {
		return s.fail(err)
	}
	s.cur.rows++
	s.rows++
	// Buffered bytes count as stored: before gzip that overestimates by at
	// most the 64 KiB buffer, and the cap is reached no later than the row
	// that crosses it.
	if s.maxTotal > 0 && s.bytes+s.cur.stored.n+uint64(s.cur.bw.Buffered()) > s.maxTotal {
		return s.fail(errTooMuch)
	}
	return nil
}

// rotateIfFull closes the current chunk if it reached a limit and runs
// rotated. write calls it before each row; the run calls it when a row
// cap ends the export, so a chunk that is full but was still open (no
// row past it was written) counts as finished and is kept.
func (s *sink) rotateIfFull() error {
	if s.cur == nil || !s.chunked() || s.cur.rows == 0 || !s.full() {
		return nil
	}
	if err := s.closeChunk(); err != nil {
		return err
	}
	if s.rotated != nil {
		return s.rotated()
	}
	return nil
}

func (s *sink) full() bool {
	c := s.cur
	if s.maxRows > 0 && c.rows >= s.maxRows {
		return true
	}
	return s.maxBytes > 0 && c.raw.n+uint64(c.bw.Buffered()) >= s.maxBytes
}

// progressBytes is what was produced so far.
func (s *sink) progressBytes() uint64 {
	if s.cur == nil {
		return s.bytes
	}
	return s.bytes + s.cur.stored.n
}

// finish closes the last file (opening an empty one when no row came, so
// every export has a file) and returns the files.
func (s *sink) finish() ([]*exportv1.File, error) {
	if s.cur == nil {
		if err := s.open(); err != nil {
			return nil, err
		}
	}
	if err := s.closeChunk(); err != nil {
		return nil, err
	}
	// The format's closing bytes and gzip's trailer come last.
	if s.maxTotal > 0 && s.bytes > s.maxTotal {
		return nil, errTooMuch
	}
	return s.files, nil
}

// resume continues after finished chunk files: the next chunk gets the
// next number, and the counters include what the files hold.
func (s *sink) resume(files []*exportv1.File, rows uint64) {
	s.files = files
	s.rows = rows
	for _, f := range files {
		s.bytes += f.GetSize()
	}
}

func (s *sink) closeChunk() error {
	c := s.cur
	var err error
	switch f, ok := c.r.(recordrender.Flusher); {
	case s.piece == nil || s.piece.last:
		err = c.r.End()
	case ok:
		err = f.Flush()
	}
	if err == nil {
		err = c.bw.Flush()
	}
	if err == nil && c.gz != nil {
		err = c.gz.Close()
	}
	if err != nil {
		return s.fail(err)
	}
	_ = c.pw.Close()
	res := <-c.done
	s.cur = nil
	if res.err != nil {
		return fmt.Errorf("upload %s: %w", c.key, res.err)
	}
	if uint64(res.info.Size) != c.stored.n {
		return fmt.Errorf("upload %s: stored %d bytes, wrote %d", c.key, res.info.Size, c.stored.n)
	}
	s.bytes += c.stored.n
	s.files = append(s.files, &exportv1.File{
		Name:           c.name,
		ObjectKey:      c.key,
		Size:           c.stored.n,
		Records:        c.rows,
		Sha256:         res.info.SHA256,
		ChecksumSha256: res.info.ChecksumSHA256,
		ContentType:    s.contentType(),
	})
	return nil
}

// fail aborts the open upload (no partial object appears) and returns err.
func (s *sink) fail(err error) error {
	s.abort(err)
	return err
}

// abort stops the open upload, if any.
func (s *sink) abort(cause error) {
	if s.cur == nil {
		return
	}
	if cause == nil {
		cause = errors.New("export aborted")
	}
	s.cur.pw.CloseWithError(cause)
	<-s.cur.done
	s.cur = nil
}

// fileNames derives the chunk stem and the single file's name. target is
// the gateway's file name (e.g. "4.payment.<hash>" for raw exports); when
// it already ends in the format's extension that is not repeated.
func fileNames(target, resource, ext string, gz bool) (base, single string) {
	target = cleanName(target)
	suffix := "." + ext
	if target == "" {
		base, single = resource, resource+suffix
	} else {
		base = strings.TrimSuffix(strings.TrimSuffix(target, ".gz"), suffix)
		single = target
		if !strings.HasSuffix(single, suffix) && !strings.HasSuffix(single, suffix+".gz") {
			single += suffix
		}
	}
	if gz && !strings.HasSuffix(single, ".gz") {
		single += ".gz"
	}
	return base, single
}

// cleanName keeps a file name to one path segment of printable characters.
func cleanName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < 0x20 || r == 0x7f {
			return '_'
		}
		return r
	}, strings.TrimSpace(s))
	if s == "." || s == ".." {
		return ""
	}
	return s
}
