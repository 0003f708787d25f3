package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
)

// jobManifest describes what job d delivers: its files under the names
// they are downloaded by, its archive, and what each part produced (the
// archive's entries when d has them).
func jobManifest(job Job, parts []*exportv1.PartUploaded, d Delivery) *Manifest {
	m := &Manifest{Version: ManifestVersion, JobID: job.ID, Kind: kindName(job.Kind), Files: []ManifestFile{}}
	if !job.Created.IsZero() && job.Created.After(zipEpoch) {
		m.Created = job.Created.UTC().Truncate(time.Second).Format(time.RFC3339)
	}
	for _, f := range d.Files {
		m.Files = append(m.Files, manifestFile(f.GetName(), f))
	}
	if d.Archive != nil {
		af := manifestFile(d.Archive.GetName(), d.Archive)
		m.Archive = &af
	}
	m.Parts = d.Parts
	if m.Parts == nil {
		var delivered map[string]*exportv1.File
		for _, p := range parts {
			mp := ManifestPart{Part: p.GetPart(), Files: []ManifestFile{}}
			for _, f := range partFiles(p) {
				mf := manifestFile(f.GetName(), f)
				if f.GetDescribedOnDelivery() && !f.GetMissing() {
					// Its size and SHA-256 are those of the file as
					// delivered (PartsAsFiles read it); not delivered,
					// its object was not found.
					if delivered == nil {
						delivered = deliveredByObject(d.Files)
					}
					mf = ManifestFile{Name: f.GetName(), Missing: true}
					if df, ok := delivered[objectID(f)]; ok {
						mf = manifestFile(f.GetName(), df)
					}
				}
				mp.Files = append(mp.Files, mf)
			}
			m.Parts = append(m.Parts, mp)
		}
	}
	for _, p := range m.Parts {
		for _, f := range p.Files {
			m.Totals.add(f)
		}
	}
	return m
}

// deliveredByObject indexes files by the object each was delivered from.
func deliveredByObject(files []*exportv1.File) map[string]*exportv1.File {
	out := make(map[string]*exportv1.File, len(files))
	for _, f := range files {
		out[objectID(f)] = f
	}
	return out
}

func objectID(f *exportv1.File) string { return f.GetBucket() + "/" + f.GetObjectKey() }

// writeManifest stores the job's manifest next to its files and returns
// it as a file. The bytes depend only on the job and its parts, so a
// second finalisation overwrites the object with the same bytes.
//
// The manifest is a file of its own (Job.manifest), downloadable through
// the same signed links as the job's files but not one of them: every
// dialect promises its clients a number of files (Rebilly one,
// Rocket.Chat's zip, myTracker's chunks), which a manifest among them
// would break. Its object lives under the job's prefix, so retention and
// Rebilly's DELETE remove it with the files.
func (a *Archiver) writeManifest(ctx context.Context, job Job, parts []*exportv1.PartUploaded, d Delivery) (*exportv1.File, error) {
	data, err := json.MarshalIndent(jobManifest(job, parts, d), "", "  ")
	if err != nil {
		return nil, bus.Permanent(bus.Worded("Building the export's manifest failed; please try again.", fmt.Errorf("manifest: %w", err)))
	}
	data = append(data, '\n')
	name := ManifestName
	for _, f := range append(d.Files, d.Archive) {
		if strings.EqualFold(f.GetName(), name) {
			name = "dataport-" + job.ID + "-" + ManifestName
			break
		}
	}
	key := objects.FileKey(job.ID, ManifestName)
	if _, err := a.objects.Upload(ctx, a.bucket, key, bytes.NewReader(data), "application/json"); err != nil {
		return nil, fmt.Errorf("upload manifest of job %s: %w", job.ID, err)
	}
	sum := sha256.Sum256(data)
	return &exportv1.File{
		Name:        name,
		ObjectKey:   key,
		Size:        uint64(len(data)),
		Sha256:      hex.EncodeToString(sum[:]),
		ContentType: "application/json",
	}, nil
}
