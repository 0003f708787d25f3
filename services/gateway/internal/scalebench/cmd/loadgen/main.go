// Command loadgen measures the gateway among many jobs (issue 13, make
// bench-scale): it starts nats-server and MinIO from bin/ and the built
// gateway binary as separate processes on loopback, fills the projection
// through the job store's write path with completed jobs of 1,000 other
// owners plus 1,000 of each caller, and at each size restarts the gateway
// and sends each request kind at a fixed rate with vegeta, then reads the
// gateway's VmRSS and VmHWM. Last, it drops the job index and starts the
// gateway once more, which rebuilds it (the one-time migration), and
// reports that start. Everything it starts is stopped at the end and its
// state lives in a temporary directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"dataport.dev/services/gateway/internal/scalebench"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	var c scalebench.Config
	var sizes string
	fs.StringVar(&c.Bin, "bin", "bin", "directory holding nats-server, minio and dataport-gateway")
	fs.StringVar(&c.Gateway, "gateway", "", "the gateway binary to measure (default: dataport-gateway in -bin)")
	fs.StringVar(&sizes, "sizes", "10000,100000,1000000", "comma-separated numbers of other owners' jobs to measure at, ascending")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "how long each request kind is sent at its rate")
	fs.BoolVar(&c.Migrate, "migrate", true, "after the last size, drop the index and time the gateway's start that rebuilds it")
	var env string
	fs.StringVar(&env, "gateway-env", "", "comma-separated KEY=value settings of the gateway beyond the run's own, e.g. DATAPORT_AUTH_CACHE_SIZE=0")
	fs.StringVar(&c.Dir, "dir", "", "state and log directory (default: a new temporary one, removed at the end)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for kv := range strings.SplitSeq(env, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if k, _, ok := strings.Cut(kv, "="); !ok || !strings.HasPrefix(k, "DATAPORT_") {
			return fmt.Errorf("-gateway-env %q: want DATAPORT_NAME=value", kv)
		}
		c.GatewayEnv = append(c.GatewayEnv, kv)
	}
	for s := range strings.SplitSeq(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || (len(c.Sizes) > 0 && n < c.Sizes[len(c.Sizes)-1]) {
			return fmt.Errorf("-sizes %q: want ascending non-negative numbers", sizes)
		}
		c.Sizes = append(c.Sizes, n)
	}
	if c.Dir == "" {
		dir, err := os.MkdirTemp("", "dataport-scale-")
		if err != nil {
			return err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		c.Dir = dir
	}
	bin, err := filepath.Abs(c.Bin)
	if err != nil {
		return err
	}
	c.Bin = bin
	if c.Gateway != "" {
		if c.Gateway, err = filepath.Abs(c.Gateway); err != nil {
			return err
		}
	}
	report, err := scalebench.Run(ctx, c, stdout)
	if report != nil {
		report.Markdown(stdout)
	}
	if errors.Is(err, context.Canceled) {
		return errors.New("interrupted")
	}
	return err
}
