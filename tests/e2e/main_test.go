package e2e

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

// longFaultTests are the tests built only with -tags longfaults.
var longFaultTests = []string{"TestMinIODownFiveMinutesWithTheDefaults"}

// TestMain refuses a run that names a long fault test without the build
// tag that compiles it: `go test` would otherwise report "no tests to
// run" and pass, a skip that looks like a success.
func TestMain(m *testing.M) {
	flag.Parse()
	if run := flag.Lookup("test.run"); run != nil && !longFaults {
		for _, name := range longFaultTests {
			if strings.Contains(run.Value.String(), name) {
				fmt.Fprintf(os.Stderr, "%s is built only with -tags longfaults (make test-faults passes it)\n", name)
				os.Exit(2)
			}
		}
	}
	code := m.Run()
	// The services' binaries are built once per run into a temporary
	// directory (buildBinaries); 200 MB a run adds up on a developer's disk.
	if buildDir != "" {
		if err := os.RemoveAll(buildDir); err != nil {
			fmt.Fprintf(os.Stderr, "remove %s: %v\n", buildDir, err)
		}
	}
	os.Exit(code)
}
