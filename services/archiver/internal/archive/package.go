package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
)

// Job is what a Packager knows of the job whose parts it packages.
type Job struct {
	ID      string
	Kind    exportv1.JobKind
	OwnerID string
	// Created is when the job was created, zero when the job record was
	// not found. Archives use it as every entry's timestamp, so packaging
	// the same parts twice gives the same bytes.
	Created time.Time
	// Name is the job's name (for a data download, its owner's display
	// name) and FullExport its Rocket.Chat fullExport flag; from the job
	// record, empty without one. They name a data download's zip.
	Name       string
	FullExport bool
}

// Packager turns a job's parts into the files its owner downloads, and
// checks every part's object against the size and SHA-256 the exporter
// recorded on the way.
//
// Package receives every part of one job, in part order. It may be called
// more than once for the same job (a redelivered last part, two replicas
// racing), so whatever it writes must go under keys derived from the job id
// and overwrite a previous attempt with the same bytes. A bus.Permanent
// error fails the job with its message (which names the offending file);
// any other error is retried.
type Packager interface {
	Package(ctx context.Context, job Job, parts []*exportv1.PartUploaded) ([]*exportv1.File, error)
}

// Delivery is what packaging a job delivers: its files, for a room export
// with attachments the archive of the room document and its assets, and
// what each part produced as the job's manifest lists it (nil: each part's
// files under their own names).
type Delivery struct {
	Files   []*exportv1.File
	Archive *exportv1.File
	Parts   []ManifestPart
}

// Deliverer is a Packager that says more than the files: an archive
// beside them, or the names its parts' files have in the job's archive.
// The Archiver uses Deliver when the packager has it, Package otherwise;
// both follow the contract of Package.
type Deliverer interface {
	Deliver(ctx context.Context, job Job, parts []*exportv1.PartUploaded) (Delivery, error)
}

// deliver runs p's Deliver, or its Package.
func deliver(ctx context.Context, p Packager, job Job, parts []*exportv1.PartUploaded) (Delivery, error) {
	if d, ok := p.(Deliverer); ok {
		return d.Deliver(ctx, job, parts)
	}
	files, err := p.Package(ctx, job, parts)
	return Delivery{Files: files}, err
}

// ByKind packages each job with the packager registered for its kind, or
// with Default.
type ByKind struct {
	Kinds   map[exportv1.JobKind]Packager
	Default Packager
}

// Package hands the job to the packager of its kind.
func (b ByKind) Package(ctx context.Context, job Job, parts []*exportv1.PartUploaded) ([]*exportv1.File, error) {
	if p, ok := b.Kinds[job.Kind]; ok {
		return p.Package(ctx, job, parts)
	}
	return b.Default.Package(ctx, job, parts)
}

// Deliver hands the job to the packager of its kind.
func (b ByKind) Deliver(ctx context.Context, job Job, parts []*exportv1.PartUploaded) (Delivery, error) {
	if p, ok := b.Kinds[job.Kind]; ok {
		return deliver(ctx, p, job, parts)
	}
	return deliver(ctx, b.Default, job, parts)
}

// Clean hands the job to the packager of its kind when it is a Cleaner.
func (b ByKind) Clean(ctx context.Context, job Job, parts []*exportv1.PartUploaded) {
	p, ok := b.Kinds[job.Kind]
	if !ok {
		p = b.Default
	}
	if c, ok := p.(Cleaner); ok {
		c.Clean(ctx, job, parts)
	}
}

// NewDefaultPackager returns the packaging Dataport uses: a user-data
// download becomes one zip archive with a manifest; a room export delivers
// its room document, and bundles it with the room's attachments in a zip
// when it has any (RoomArchive); records and room-mail jobs deliver their
// parts' files as they are, but for the pieces of a split record export,
// which are joined into one file.
func NewDefaultPackager(objects Objects, bucket string) Packager {
	return newDefaultPackager(objects, bucket, nil)
}

// newDefaultPackager is NewDefaultPackager logging to log. Parts that are
// pieces of one file (a split record export) are joined (Joiner).
func newDefaultPackager(objects Objects, bucket string, log *slog.Logger) Packager {
	return ByKind{
		Kinds: map[exportv1.JobKind]Packager{
			exportv1.JobKind_JOB_KIND_USER_DATA: &Zip{Objects: objects, Bucket: bucket, Logger: log},
			exportv1.JobKind_JOB_KIND_ROOM:      &RoomArchive{Objects: objects, Bucket: bucket, Logger: log},
		},
		Default: &Joiner{Objects: objects, Bucket: bucket, Logger: log, Then: &PartsAsFiles{Objects: objects, Bucket: bucket}},
	}
}

// RoomArchive packages a room export. Its room part announces the room
// document (PartUploaded.file) and beside it the attachments its messages
// link to (PartUploaded.files: by reference into the assets bucket, their
// sizes and SHA-256s left to the archive's copy, or described by an
// exporter from before File.described_on_delivery). The document is
// delivered as it is, as PartsAsFiles would: clients that download
// "general.json" keep getting it. When there are attachments, the
// document and they also go into a zip with assets/, the way Rocket.Chat
// delivers a room export of type file (its document links to
// assets/<file>), as the job's archive; an attachment whose object is
// missing has no entry and is listed as missing in the archive's and the
// job's manifests. A room without attachments is its document alone.
type RoomArchive struct {
	Objects Objects
	// Bucket is the exports bucket, where the archive goes.
	Bucket string
	// Logger logs the joins of split room exports and the attachments
	// found missing; nil discards.
	Logger *slog.Logger
}

// joinedRoomPart is the one room part a split room export's pieces make:
// the joined document and the pieces' attachments, each once.
func joinedRoomPart(parts []*exportv1.PartUploaded, doc *exportv1.File) *exportv1.PartUploaded {
	joined := &exportv1.PartUploaded{JobId: parts[0].GetJobId(), Part: 0, PartsTotal: 1, Kind: parts[0].GetKind(),
		OwnerId: parts[0].GetOwnerId(), PartKind: parts[0].GetPartKind(), File: doc}
	seen := map[string]bool{}
	for _, part := range parts {
		for _, f := range part.GetFiles() {
			k := f.GetBucket() + "/" + f.GetObjectKey() + "/" + f.GetName()
			if !seen[k] {
				seen[k] = true
				joined.Files = append(joined.Files, f)
			}
		}
	}
	return joined
}

// Package delivers the room document; Deliver says what else there is.
func (p *RoomArchive) Package(ctx context.Context, job Job, parts []*exportv1.PartUploaded) ([]*exportv1.File, error) {
	d, err := p.Deliver(ctx, job, parts)
	return d.Files, err
}

// Deliver verifies the room document, and builds the archive when there
// are attachments. The parts of a split room export are pieces of the
// document, joined first (Joiner); the archive then holds the joined
// document and every piece's attachments, each once, in part order (the
// order one exporter lists them in: first link first).
func (p *RoomArchive) Deliver(ctx context.Context, job Job, parts []*exportv1.PartUploaded) (Delivery, error) {
	docs := make([]*exportv1.PartUploaded, len(parts))
	attachments := 0
	split := false
	for i, part := range parts {
		docs[i] = part
		split = split || part.GetPiece() != nil
		if part.GetFile() != nil && len(part.GetFiles()) > 0 {
			doc := proto.CloneOf(part)
			doc.Files = nil
			docs[i] = doc
			attachments += len(part.GetFiles())
		}
	}
	var files []*exportv1.File
	var err error
	if split {
		files, err = (&Joiner{Objects: p.Objects, Bucket: p.Bucket, Logger: p.Logger, ClosingLead: true}).Package(ctx, job, docs)
		if err == nil && attachments > 0 {
			parts = []*exportv1.PartUploaded{joinedRoomPart(parts, files[0])}
		}
	} else {
		files, err = (&PartsAsFiles{Objects: p.Objects, Bucket: p.Bucket}).Package(ctx, job, docs)
	}
	if err != nil || attachments == 0 {
		return Delivery{Files: files}, err
	}
	name := objects.ArchiveName(job.ID)
	if len(files) > 0 {
		stem := strings.TrimSuffix(files[0].GetName(), path.Ext(files[0].GetName()))
		name = objects.CleanFileName(stem+".zip", name)
	}
	archive, m, err := (&Zip{Objects: p.Objects, Bucket: p.Bucket, Logger: p.Logger}).pack(ctx, job, parts, name)
	if err != nil {
		return Delivery{}, err
	}
	return Delivery{Files: files, Archive: archive, Parts: m.Parts}, nil
}

// Clean deletes what a split room export's ranges left (Joiner.Clean);
// the parts of an unsplit one are its delivery.
func (p *RoomArchive) Clean(ctx context.Context, job Job, parts []*exportv1.PartUploaded) {
	(&Joiner{Objects: p.Objects, Bucket: p.Bucket, Logger: p.Logger}).Clean(ctx, job, parts)
}

// PartsAsFiles delivers the parts as they are: a one-part room export is
// its part's object, a chunked records part is its chunks in order, and a
// room-mail part is mail.html and mail.txt for the notifier to send.
type PartsAsFiles struct {
	Objects Objects
	// Bucket is the exports bucket, for files whose own bucket is empty.
	Bucket string
}

// Package verifies every file of every part against the checksum the
// object store keeps for it, reading only files whose checksum cannot
// decide (verifyObject), and returns a copy of each File record, in part
// order and then file order. A file listed by reference only
// (described_on_delivery) has no record to verify: it is read to take its
// size and SHA-256, and is not delivered when its object is not found.
func (p *PartsAsFiles) Package(ctx context.Context, _ Job, parts []*exportv1.PartUploaded) ([]*exportv1.File, error) {
	var files []*exportv1.File
	for _, part := range parts {
		for _, f := range partFiles(part) {
			if f.GetMissing() {
				// Listed by the job's manifest, never delivered.
				continue
			}
			if f.GetDescribedOnDelivery() {
				// Only room parts list files so, and RoomArchive zips
				// their attachments; should one be delivered as it is,
				// it is described as the archive's copy would.
				d, err := describeObject(ctx, p.Objects, objects.Bucket(f, p.Bucket), f)
				if err != nil {
					return nil, fmt.Errorf("describe part %d (%s): %w", part.GetPart(), f.GetName(), err)
				}
				if d != nil {
					files = append(files, d)
				}
				continue
			}
			problem, err := verifyObject(ctx, p.Objects, objects.Bucket(f, p.Bucket), f)
			if err != nil {
				return nil, fmt.Errorf("verify part %d (%s): %w", part.GetPart(), f.GetName(), err)
			}
			if problem != "" {
				return nil, verifyFailed(part, f, problem)
			}
			files = append(files, proto.CloneOf(f))
		}
	}
	return files, nil
}

// partFiles returns the files of a part: its files when it produced
// several, else its single file followed by the files it links to (a
// room export's attachments).
func partFiles(p *exportv1.PartUploaded) []*exportv1.File {
	if p.GetFile() != nil {
		return append([]*exportv1.File{p.GetFile()}, p.GetFiles()...)
	}
	return p.GetFiles()
}

// verifyFailed is the permanent error of a file that does not match its
// record. Its reason (bus.Reason) is the job's, naming the part and the
// file as the user knows it; the object key is for the logs.
func verifyFailed(p *exportv1.PartUploaded, f *exportv1.File, problem string) error {
	return bus.Permanent(bus.Worded(fmt.Sprintf("part %d (%s) failed verification: %s", p.GetPart(), f.GetName(), problem),
		fmt.Errorf("object %s", f.GetObjectKey())))
}

// verifyObject checks the object of f against its recorded size and
// SHA-256. It returns a description of what does not match, or an error
// when the check itself could not be made (a transient storage failure).
//
// The object is not read when the store's checksum decides (storedProblem):
// the store verified that checksum against the bytes as it received them,
// and the exporter computed it and the SHA-256 in the same pass, so a
// matching checksum is the recorded object. Only objects whose checksum
// cannot be tied to the record (stored without one, or multipart with no
// recorded checksum) are streamed through SHA-256.
func verifyObject(ctx context.Context, objects Objects, bucket string, f *exportv1.File) (problem string, err error) {
	key := f.GetObjectKey()
	info, err := objects.Stat(ctx, bucket, key)
	if problem, err := openProblem(err); problem != "" || err != nil {
		return problem, err
	}
	if info.Size < 0 || uint64(info.Size) != f.GetSize() {
		return fmt.Sprintf("object is %d bytes, %d recorded", info.Size, f.GetSize()), nil
	}
	if problem, decided := storedProblem(info, f); decided {
		return problem, nil
	}
	body, _, err := objects.Open(ctx, bucket, key)
	if problem, err := openProblem(err); problem != "" || err != nil {
		return problem, err
	}
	defer body.Close()
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	return compare(f, n, h.Sum(nil)), nil
}

// describeObject reads the object of f, a file listed by reference only,
// and returns a copy of f with the size and SHA-256 of its bytes, or nil
// when the object is not found (or its key cannot name one).
func describeObject(ctx context.Context, objects Objects, bucket string, f *exportv1.File) (*exportv1.File, error) {
	body, _, err := objects.Open(ctx, bucket, f.GetObjectKey())
	if problem, err := openProblem(err); problem != "" {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	defer body.Close()
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.GetObjectKey(), err)
	}
	d := proto.CloneOf(f)
	d.Size, d.Sha256, d.DescribedOnDelivery = uint64(n), hex.EncodeToString(h.Sum(nil)), false
	return d, nil
}

// storedProblem compares the checksum the store keeps for the object
// (info from Stat) with f's record: the recorded checksum when the
// exporter reported one, else the recorded SHA-256 when the store's
// checksum is one it determines (a whole-object or one-part checksum).
// decided is false when neither applies and the object must be read.
func storedProblem(info blob.Info, f *exportv1.File) (problem string, decided bool) {
	stored := info.ChecksumSHA256
	if want := f.GetChecksumSha256(); want != "" && stored != "" {
		if stored != want {
			return fmt.Sprintf("stored checksum is %s, %s recorded", stored, want), true
		}
		return "", true
	}
	match, decided := info.HasSHA256(f.GetSha256())
	switch {
	case !decided:
		return "", false
	case !match:
		return fmt.Sprintf("stored checksum %s is not the one of sha256 %s recorded", stored, f.GetSha256()), true
	}
	return "", true
}

// openProblem sorts an error of Stat or Open into a verification problem
// (the object is not there, or cannot be) or a transient error. The
// problem is worded for the job's owner: bucket and key are not theirs.
func openProblem(err error) (string, error) {
	switch {
	case err == nil:
		return "", nil
	case errors.Is(err, blob.ErrNotFound):
		return "the file is missing", nil
	case errors.Is(err, blob.ErrInvalidArgument):
		return "the file's stored location is not valid", nil
	}
	return "", err
}

// compare says how n bytes with digest sum differ from f's record, or "".
func compare(f *exportv1.File, n int64, sum []byte) string {
	if n < 0 || uint64(n) != f.GetSize() {
		return fmt.Sprintf("read %d bytes of object, %d recorded", n, f.GetSize())
	}
	if got := hex.EncodeToString(sum); got != f.GetSha256() {
		return fmt.Sprintf("sha256 is %s, %s recorded", got, f.GetSha256())
	}
	return ""
}
