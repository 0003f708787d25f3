//go:build !longfaults

package e2e

// longFaults tells TestMain that the long fault tests are not built in.
const longFaults = false
