package recordexport_test

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// keptAsPartial asserts that what a failed or canceled job left in the
// bucket is exactly its partial results, files, and that each file is
// what its record says (size, SHA-256, the store's checksum): the
// finished chunks stay downloadable, nothing else is left.
func (e *env) keptAsPartial(t *testing.T, jobID string, files []*exportv1.File) {
	t.Helper()
	var keys []string
	for _, f := range files {
		keys = append(keys, f.GetObjectKey())
		e.download(t, f)
		assert.Positive(t, f.GetRecords(), "%s counts its rows", f.GetName())
	}
	left := e.objects(t, "jobs/"+jobID+"/")
	slices.Sort(keys)
	slices.Sort(left)
	assert.Equal(t, keys, left, "the objects left are the partial results")
}
