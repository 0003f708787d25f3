//go:build longfaults

package e2e

import (
	"testing"
	"time"
)

// longFaults tells TestMain that the long fault tests are built in.
const longFaults = true

// TestMinIODownFiveMinutesWithTheDefaults is TestMinIOOutageWithTheDefaults
// with an outage of five minutes, long for `make test`: it is built only
// with -tags longfaults, which `make test-faults` passes.
func TestMinIODownFiveMinutesWithTheDefaults(t *testing.T) {
	t.Parallel()
	minioOutageWithTheDefaults(t, 5*time.Minute, "minio-down-5min-defaults")
}
