// Command healthcheck is the container healthcheck of Dataport's images.
// The runtime images are distroless (no shell, no curl), so compose probes a
// service by running this static binary inside its container: it GETs the
// URL it is given (a service's /readyz) and exits 0 on a 2xx answer and 1
// otherwise. Kubernetes does not need it: it probes /healthz and /readyz
// with httpGet.
//
// It imports only the standard library, so an image build compiles it
// without downloading the deploy module's test dependencies.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// timeout bounds one probe. /readyz answers within two seconds (infra's
// own bound), so three leave room for the connection.
const timeout = 3 * time.Second

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: healthcheck URL (for example http://127.0.0.1:8080/readyz)")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	// The body is {"status":"ready"} or {"status":"not ready"} (the cause
	// is in the service's log); show it in `docker inspect`.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("healthcheck: %s answered %s: %s", args[0], resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s %s", resp.Status, body)
	return nil
}
