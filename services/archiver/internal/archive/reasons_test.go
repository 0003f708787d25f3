package archive_test

import (
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
)

var portInReason = regexp.MustCompile(`:\d+`)

// assertWorded checks a job's failure reason for what must stay in the
// logs: addresses, ports, bucket names, object keys of the job and the
// "permanent:" marker of the consume loop.
func assertWorded(t *testing.T, reason, jobID string) {
	t.Helper()
	assert.NotEmpty(t, reason)
	for _, s := range []string{"http", "dial tcp", bucket, assetBucket, "jobs/" + jobID, "uploadId", "permanent:"} {
		assert.NotContains(t, reason, s)
	}
	assert.False(t, portInReason.MatchString(reason), "no port in %q", reason)
}
