package roomexport

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"golang.org/x/sync/errgroup"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/objects"
)

// objectSpec is one object a part writes.
type objectSpec struct {
	name        string
	contentType string
}

// sink is one object being written: the writer a renderer gets and what
// it learns about the bytes.
type sink struct {
	spec  objectSpec
	key   string
	pw    *io.PipeWriter
	bw    *bufio.Writer
	count countingWriter
	info  blob.Info
}

// uploadObjects streams what write produces into one object per spec, all
// uploaded at once, each through the same pipeline as a room document:
// buffer → (byte counter, pipe) → upload, which hashes the bytes once as
// they go up and has the store check them (blob.Upload), so the archiver
// verifies the part by its stored checksum without reading it again. write gets
// one writer per spec, in order. On any error every upload is aborted.
// The returned files carry name, key, size, SHA-256 and content type.
func (e *Exporter) uploadObjects(ctx context.Context, task *exportv1.ExportTask, specs []objectSpec,
	write func(ctx context.Context, ws []io.Writer) error,
) ([]*exportv1.File, error) {
	g, gctx := errgroup.WithContext(ctx)
	sinks := make([]*sink, len(specs))
	ws := make([]io.Writer, len(specs))
	for i, spec := range specs {
		pr, pw := io.Pipe()
		s := &sink{spec: spec, key: objects.PartKey(task.GetJobId(), task.GetPart(), spec.name), pw: pw}
		s.bw = bufio.NewWriterSize(io.MultiWriter(pw, &s.count), 64<<10)
		sinks[i], ws[i] = s, s.bw
		g.Go(func() error {
			var err error
			s.info, err = e.store.Upload(gctx, e.bucket, s.key, pr, spec.contentType)
			pr.CloseWithError(err)
			return err
		})
	}
	g.Go(func() error {
		err := write(gctx, ws)
		for _, s := range sinks {
			if err == nil {
				err = s.bw.Flush()
			}
		}
		for _, s := range sinks {
			s.pw.CloseWithError(err)
		}
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("export part %d: %w", task.GetPart(), err)
	}
	files := make([]*exportv1.File, len(sinks))
	for i, s := range sinks {
		size := s.count.n.Load()
		if uint64(s.info.Size) != size {
			return nil, fmt.Errorf("export part %d: %s: stored %d bytes, wrote %d", task.GetPart(), s.spec.name, s.info.Size, size)
		}
		files[i] = &exportv1.File{
			Name:           s.spec.name,
			ObjectKey:      s.key,
			Size:           size,
			Sha256:         s.info.SHA256,
			ChecksumSha256: s.info.ChecksumSHA256,
			ContentType:    s.spec.contentType,
		}
	}
	return files, nil
}

// partsAtBase parts of the base size come before parts grow
// (blob.PartSizeAt).
const partsAtBase = blob.PartsAtBase

// partSize is the size at which part n (from 1) of a document is cut,
// given the base part size: a function of n alone, so a resumed upload
// cuts its next parts where the first attempt would have.
func partSize(base, n int) int { return blob.PartSizeAt(base, n) }

// partFile holds one part of a room document on local disk, beside the
// spool, from its first byte until MinIO has acknowledged it
// (blob.PartFile): page cache, not heap. A file is reused for the
// document's every other part, so local disk holds at most two parts per
// task.
type partFile struct{ *blob.PartFile }

func newPartFile(dir string) (*partFile, error) {
	p, err := blob.NewPartFile(dir)
	if err != nil {
		return nil, err
	}
	return &partFile{p}, nil
}

func (p *partFile) len() int { return p.Len() }

// contents returns the part's bytes to upload; the reader seeks, so
// minio-go can retry a failed request without a copy. The part is not
// written to until reset.
func (p *partFile) contents() (*io.SectionReader, error) { return p.Contents() }

func (p *partFile) reset() { p.Reset() }

func (p *partFile) close() { p.Close() }
