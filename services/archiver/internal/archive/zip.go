package archive

import (
	"archive/zip"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"path"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/klauspost/compress/flate"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
)

// ManifestName is the archive's last entry, describing every other entry.
const ManifestName = "manifest.json"

// ManifestVersion is the manifest schema's version; it grows when a field
// changes meaning, not when one is added.
const ManifestVersion = 1

// zipEpoch stands in for an unknown job creation time: the earliest time
// an MS-DOS timestamp (and so every zip reader) can show.
var zipEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// Zip packages a job as one zip archive: every file of every part, in part
// order and then file order, under its (sanitised) name, followed by
// manifest.json. The archive is streamed from the parts' objects through
// the zip writer into a multipart upload, so neither memory nor local disk
// ever holds it; each part's bytes are hashed as they pass and checked
// against the recorded SHA-256 and size. Files listed by reference only
// (a room export's attachments, File.described_on_delivery) have no
// record to check: the manifest takes their size and SHA-256 from those
// bytes, and lists one whose object is not found as missing.
//
// The output is deterministic: fixed entry timestamps (the job's creation
// time), a stable order, stable names and a deterministic compressor, so
// packaging the same parts again writes a byte-identical object to the
// same key. The object appears only when the multipart upload completes;
// on any failure, a mismatch included, the upload is aborted and no
// (new) object is left.
type Zip struct {
	Objects Objects
	// Bucket is the exports bucket: the archive goes there, and so do
	// files whose own bucket is empty.
	Bucket string
	// Level is the deflate level (default flate.DefaultCompression).
	Level int
	// Logger names the attachments found missing while zipping; nil
	// discards.
	Logger *slog.Logger
}

// Manifest is the content of manifest.json: the last entry of an archive,
// describing every other entry, and the manifest every completed job
// carries beside its files (Job.manifest), which also lists the files as
// they are downloaded.
type Manifest struct {
	Version int    `json:"version"`
	JobID   string `json:"jobId"`
	// Kind is the job kind in lower case, e.g. "user_data".
	Kind string `json:"kind"`
	// Created is the job's creation time (RFC 3339, UTC), also the
	// timestamp of every entry; empty when unknown.
	Created string `json:"created,omitempty"`
	// Files are the job's files as its owner downloads them (by these
	// names), and Archive the zip of a room export with attachments; only
	// in a job's manifest, not in an archive's own.
	Files   []ManifestFile `json:"files,omitempty"`
	Archive *ManifestFile  `json:"archive,omitempty"`
	// Parts are what each part produced: the entries of the job's archive
	// when there is one, else the files.
	Parts  []ManifestPart `json:"parts"`
	Totals ManifestTotals `json:"totals"`
}

// ManifestPart lists one part's entries.
type ManifestPart struct {
	Part  uint32         `json:"part"`
	Files []ManifestFile `json:"files"`
}

// ManifestFile is one entry of the archive.
type ManifestFile struct {
	// Name is the entry's path inside the archive.
	Name    string `json:"name"`
	Size    uint64 `json:"size"`
	Records uint64 `json:"records"`
	// SHA256 is the lower-case hex SHA-256 of the entry's (uncompressed)
	// bytes, as the exporter recorded it and the archiver verified it, or
	// for a file listed by reference only (a room export's attachment,
	// File.described_on_delivery) as the archiver hashed it while
	// copying it; Size likewise.
	SHA256 string `json:"sha256"`
	// Missing says the file could not be delivered: its object is gone
	// (an attachment deleted since its message was sent), as the exporter
	// found or the archive's copy did. It has no entry, size or SHA-256;
	// it is listed so nothing links to it unannounced.
	Missing bool `json:"missing,omitempty"`
}

// ManifestTotals sums the entries, manifest excluded; Missing counts the
// files listed as missing, which Files does not.
type ManifestTotals struct {
	Files   int    `json:"files"`
	Size    uint64 `json:"size"`
	Records uint64 `json:"records"`
	Missing int    `json:"missing,omitempty"`
}

// manifestFile describes f as listed under name.
func manifestFile(name string, f *exportv1.File) ManifestFile {
	if f.GetMissing() {
		return ManifestFile{Name: name, Missing: true}
	}
	return ManifestFile{Name: name, Size: f.GetSize(), Records: f.GetRecords(), SHA256: f.GetSha256()}
}

// add counts mf into the totals.
func (t *ManifestTotals) add(mf ManifestFile) {
	if mf.Missing {
		t.Missing++
		return
	}
	t.Files++
	t.Size += mf.Size
	t.Records += mf.Records
}

// errUploadStopped tells the zip writer that the upload quit reading.
var errUploadStopped = errors.New("archive upload stopped reading")

// Package streams the job's archive into the exports bucket and returns it
// as the job's one file.
func (z *Zip) Package(ctx context.Context, job Job, parts []*exportv1.PartUploaded) ([]*exportv1.File, error) {
	d, err := z.Deliver(ctx, job, parts)
	return d.Files, err
}

// Deliver is Package with the archive's entries, which the job's manifest
// lists by part.
func (z *Zip) Deliver(ctx context.Context, job Job, parts []*exportv1.PartUploaded) (Delivery, error) {
	f, m, err := z.pack(ctx, job, parts, archiveName(job))
	if err != nil {
		return Delivery{}, err
	}
	return Delivery{Files: []*exportv1.File{f}, Parts: m.Parts}, nil
}

// pack streams the archive of parts, named name, to the job's archive key
// and returns it with its manifest.
func (z *Zip) pack(ctx context.Context, job Job, parts []*exportv1.PartUploaded, name string) (*exportv1.File, *Manifest, error) {
	key := objects.ArchiveKey(job.ID)
	pr, pw := io.Pipe()
	out := &digestWriter{w: pw, h: sha256.New()}
	type result struct {
		m   *Manifest
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := z.write(ctx, out, job, parts)
		// An error here makes Upload's next read fail, which aborts the
		// multipart upload: a half-written archive never becomes visible.
		pw.CloseWithError(err)
		done <- result{m, err}
	}()
	info, upErr := z.Objects.Upload(ctx, z.Bucket, key, pr, "application/zip")
	// Unblocks the writer if Upload gave up before reading everything.
	pr.CloseWithError(errUploadStopped)
	res := <-done
	switch {
	case res.err != nil && (upErr == nil || bus.IsPermanent(res.err)):
		return nil, nil, res.err
	case upErr != nil:
		return nil, nil, fmt.Errorf("upload archive of job %s: %w", job.ID, upErr)
	case info.Size != out.n:
		// Upload read less than was written: never expected, but an
		// archive of another length than its digest must not be offered.
		return nil, nil, fmt.Errorf("archive of job %s: stored %d bytes, wrote %d", job.ID, info.Size, out.n)
	}
	return &exportv1.File{
		Name:        name,
		ObjectKey:   key,
		Size:        uint64(out.n),
		Records:     res.m.Totals.Records,
		Sha256:      hex.EncodeToString(out.h.Sum(nil)),
		ContentType: "application/zip",
	}, res.m, nil
}

// archiveName is the zip's name as its owner sees it. A data download is
// named as Rocket.Chat names one, "YYYY-MM-DD-<display name>[-data].zip"
// (the day it was requested, "-data" for a full export), so tools that
// read Rocket.Chat's downloads find what they expect; other archives, and
// a download whose record names no one, keep "dataport-<job>.zip". The
// object key stays derived from the job id either way.
func archiveName(job Job) string {
	if job.Kind != exportv1.JobKind_JOB_KIND_USER_DATA || job.Name == "" || job.Created.IsZero() {
		return objects.ArchiveName(job.ID)
	}
	name := job.Created.UTC().Format("2006-01-02") + "-" + job.Name
	if job.FullExport {
		name += "-data"
	}
	return objects.CleanFileName(name+".zip", objects.ArchiveName(job.ID))
}

// write writes the whole archive to w and returns its manifest.
func (z *Zip) write(ctx context.Context, w io.Writer, job Job, parts []*exportv1.PartUploaded) (*Manifest, error) {
	level := z.Level
	if level == 0 {
		level = flate.DefaultCompression
	}
	zw := zip.NewWriter(w)
	// klauspost's deflate is several times faster than the standard
	// library's and, single-threaded, just as deterministic.
	zw.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(out, level)
	})
	modified := zipEpoch
	m := &Manifest{Version: ManifestVersion, JobID: job.ID, Kind: kindName(job.Kind)}
	if !job.Created.IsZero() && job.Created.After(zipEpoch) {
		modified = job.Created.UTC().Truncate(time.Second)
		m.Created = modified.Format(time.RFC3339)
	}
	names := newNamer(ManifestName)
	gone := missingLog{log: z.Logger, jobID: job.ID}
	for _, p := range parts {
		mp := ManifestPart{Part: p.GetPart(), Files: []ManifestFile{}}
		for _, f := range partFiles(p) {
			name := names.unique(SanitizeName(f.GetName()))
			mf := manifestFile(name, f)
			// A missing file gets no entry: the manifest says it is
			// missing, where an entry would have to pretend.
			if !f.GetMissing() {
				got, err := z.copyEntry(ctx, zw, p, f, name, modified)
				if err != nil {
					return nil, err
				}
				switch {
				case got.missing:
					mf = ManifestFile{Name: name, Missing: true}
					gone.add(ctx, f)
				case f.GetDescribedOnDelivery():
					mf.Size, mf.SHA256 = got.size, got.sha256
				}
			}
			mp.Files = append(mp.Files, mf)
			m.Totals.add(mf)
		}
		m.Parts = append(m.Parts, mp)
	}
	gone.done(ctx)
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, bus.Permanent(bus.Worded("Building the archive failed; please try again.", fmt.Errorf("manifest: %w", err)))
	}
	ew, err := zw.CreateHeader(&zip.FileHeader{Name: ManifestName, Method: zip.Deflate, Modified: modified})
	if err != nil {
		return nil, fmt.Errorf("archive entry %s: %w", ManifestName, err)
	}
	if _, err := ew.Write(append(data, '\n')); err != nil {
		return nil, fmt.Errorf("archive entry %s: %w", ManifestName, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("finish archive: %w", err)
	}
	return m, nil
}

// copied is what copyEntry took from an object's bytes.
type copied struct {
	size   uint64
	sha256 string
	// missing: the file was listed by reference only and its object is
	// not there; it has no entry.
	missing bool
}

// copyEntry streams one part file into the archive as entry name, hashing
// its bytes on the way. A file the exporter described fails permanently
// when they are not what it recorded; one it listed by reference only
// (described_on_delivery) is described by them, and is missing when its
// object is not found.
func (z *Zip) copyEntry(ctx context.Context, zw *zip.Writer, p *exportv1.PartUploaded, f *exportv1.File, name string, modified time.Time) (copied, error) {
	bucket, key := objects.Bucket(f, z.Bucket), f.GetObjectKey()
	body, info, err := z.Objects.Open(ctx, bucket, key)
	if problem, err := openProblem(err); problem != "" {
		if f.GetDescribedOnDelivery() {
			// Nothing vouched for this object: an attachment deleted
			// since its message was sent, not a part that changed.
			return copied{missing: true}, nil
		}
		return copied{}, verifyFailed(p, f, problem)
	} else if err != nil {
		return copied{}, fmt.Errorf("open part %d (%s): %w", p.GetPart(), f.GetName(), err)
	}
	defer body.Close()
	ct := f.GetContentType()
	if f.GetDescribedOnDelivery() {
		// The exporter listed the attachment's content type as its
		// message gave it, if at all; the store's is the object's own.
		ct = cmp.Or(ct, info.ContentType)
	}
	method := zip.Deflate
	if storedAsIs(name, ct) {
		method = zip.Store
	}
	ew, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method, Modified: modified})
	if err != nil {
		return copied{}, fmt.Errorf("archive entry %s: %w", name, err)
	}
	h := sha256.New()
	n, err := io.Copy(ew, io.TeeReader(body, h))
	if err != nil {
		return copied{}, fmt.Errorf("copy part %d (%s) into the archive: %w", p.GetPart(), f.GetName(), err)
	}
	sum := h.Sum(nil)
	if !f.GetDescribedOnDelivery() {
		if problem := compare(f, n, sum); problem != "" {
			return copied{}, verifyFailed(p, f, problem)
		}
	}
	return copied{size: uint64(n), sha256: hex.EncodeToString(sum)}, nil
}

// missingLogged is how many attachments found missing an archive names in
// the log one by one: a store that lost a room's files by the thousand
// says so in one record with the count, not in a record per file.
const missingLogged = 10

// missingLog logs the attachments an archive found missing.
type missingLog struct {
	log   *slog.Logger
	jobID string
	n     int
}

func (m *missingLog) add(ctx context.Context, f *exportv1.File) {
	if m.n < missingLogged && m.log != nil {
		m.log.WarnContext(ctx, "attachment object missing; listed as missing", "job_id", m.jobID,
			"name", f.GetName(), "object_key", f.GetObjectKey())
	}
	m.n++
}

// done logs how many went unnamed.
func (m *missingLog) done(ctx context.Context) {
	if m.n > missingLogged && m.log != nil {
		m.log.WarnContext(ctx, "attachments listed as missing; more than logged one by one", "job_id", m.jobID,
			"missing", m.n, "logged", missingLogged)
	}
}

// digestWriter hashes and counts what it passes on.
type digestWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (d *digestWriter) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	d.h.Write(p[:n])
	d.n += int64(n)
	return n, err
}

// compressedExts are formats that deflate cannot shrink; storing them
// saves the CPU.
var compressedExts = map[string]bool{
	".png": true, ".jpg": true, ".jpeg": true, ".gif": true, ".webp": true, ".heic": true, ".avif": true,
	".gz": true, ".tgz": true, ".zip": true, ".bz2": true, ".xz": true, ".zst": true, ".7z": true, ".rar": true,
	".mp3": true, ".mp4": true, ".m4a": true, ".ogg": true, ".opus": true, ".mov": true, ".webm": true, ".mkv": true,
	".woff2": true,
}

func storedAsIs(name, contentType string) bool {
	if compressedExts[strings.ToLower(path.Ext(name))] {
		return true
	}
	ct, _, _ := strings.Cut(strings.ToLower(contentType), ";")
	switch strings.TrimSpace(ct) {
	case "image/png", "image/jpeg", "image/gif", "image/webp", "application/gzip", "application/zip", "application/x-gzip":
		return true
	}
	return false
}

// SanitizeName turns a file name chosen upstream (room names, uploaded file
// names) into a safe relative entry path: backslashes become slashes;
// empty, "." and ".." segments are dropped, so the path can neither be
// absolute nor climb out of the extraction folder; control, bidi-override
// and Windows-reserved characters become "_"; segments lose trailing dots
// and spaces. A name with nothing left becomes "file".
func SanitizeName(name string) string {
	name = strings.ToValidUTF8(name, "_")
	name = strings.ReplaceAll(name, `\`, "/")
	var segs []string
	for seg := range strings.SplitSeq(name, "/") {
		seg = strings.Map(func(r rune) rune {
			switch {
			case unicode.IsControl(r), r == utf8.RuneError,
				r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x2028, r == 0x2029:
				return '_'
			case strings.ContainsRune(`:*?"<>|`, r):
				return '_'
			}
			return r
		}, seg)
		seg = strings.TrimRight(strings.TrimSpace(seg), ". ")
		if seg == "" {
			// Also what "." and ".." trim to.
			continue
		}
		segs = append(segs, seg)
	}
	if len(segs) == 0 {
		return "file"
	}
	return strings.Join(segs, "/")
}

// namer hands out entry names, renaming collisions deterministically:
// "general.html", "general (2).html", "general (3).html". Names compare
// case-insensitively, since case-insensitive file systems (Windows, macOS)
// would otherwise let one entry overwrite another on extraction.
type namer struct{ used map[string]bool }

func newNamer(reserved ...string) *namer {
	n := &namer{used: map[string]bool{}}
	for _, r := range reserved {
		n.used[strings.ToLower(r)] = true
	}
	return n
}

func (n *namer) unique(name string) string {
	cand := name
	dir, base := path.Split(name)
	stem, ext := base, ""
	// The first dot after the first character: "x.csv.gz" -> "x (2).csv.gz".
	if i := strings.IndexByte(base[1:], '.'); i >= 0 {
		stem, ext = base[:i+1], base[i+1:]
	}
	for i := 2; n.used[strings.ToLower(cand)]; i++ {
		cand = fmt.Sprintf("%s%s (%d)%s", dir, stem, i, ext)
	}
	n.used[strings.ToLower(cand)] = true
	return cand
}

// kindName is the manifest's spelling of a job kind: "user_data".
func kindName(k exportv1.JobKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "JOB_KIND_"))
}
