package archive

import (
	"context"

	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// Packager turns a job's verified parts into the files its owner
// downloads. It is the seam where multi-part user-data downloads will be
// bundled into a zip with a manifest.json of sizes and SHA-256 sums.
//
// Package receives every part of one job, in part order, after each part's
// object has been verified. It may be called more than once for the same
// job (a redelivered last part, two replicas racing), so whatever it writes
// must go under keys derived from the job id and overwrite a previous
// attempt. A bus.Permanent error fails the job with its message; any other
// error is retried.
type Packager interface {
	Package(ctx context.Context, parts []*exportv1.PartUploaded) ([]*exportv1.File, error)
}

// PartsAsFiles delivers the parts as they are, one file per part: a
// one-part room export is its part's object, and a chunked export is its
// chunks.
type PartsAsFiles struct{}

// Package returns a copy of each part's File record, in part order.
func (PartsAsFiles) Package(_ context.Context, parts []*exportv1.PartUploaded) ([]*exportv1.File, error) {
	files := make([]*exportv1.File, 0, len(parts))
	for _, p := range parts {
		files = append(files, proto.CloneOf(p.GetFile()))
	}
	return files, nil
}
