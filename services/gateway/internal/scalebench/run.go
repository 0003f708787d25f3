package scalebench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bus"
)

// Config is one run of the load generator.
type Config struct {
	// Bin holds nats-server, minio and dataport-gateway.
	Bin string
	// Gateway is the gateway binary to measure ("": dataport-gateway in
	// Bin), so that a build of other code can be measured beside it.
	Gateway string
	// Dir holds the servers' state and logs.
	Dir string
	// Sizes are the numbers of other owners' jobs to measure at,
	// ascending; the projection grows from one to the next.
	Sizes []int
	// Duration is how long each scenario runs.
	Duration time.Duration
	// Migrate drops the index after the last size and measures the start
	// that rebuilds it.
	Migrate bool
	// GatewayEnv are more KEY=value settings of the gateway, after the
	// run's own (so they win), such as DATAPORT_AUTH_CACHE_SIZE=0 to
	// measure without the credential cache.
	GatewayEnv []string
}

// Size is what was measured with one projection size.
type Size struct {
	Jobs int
	// Fill is how long adding this size's jobs took, and how many were
	// added.
	Fill  time.Duration
	Added int
	// Start is from the gateway's exec to its first 200 on /readyz.
	Start time.Duration
	// Idle is the gateway's memory once ready, before the load; Memory
	// is after the load.
	Idle    Memory
	Memory  Memory
	Results []Result
	// Load and LoadAfter are /proc/loadavg before and after the load:
	// other processes on the machine share its cores with the servers.
	Load, LoadAfter string
}

// Report is every size's figures, and the migration's.
type Report struct {
	Sizes []Size
	// Migration is the start that rebuilt the index over the last size
	// (nil unless Config.Migrate).
	Migration *Size
}

// Run starts the servers, fills and measures at each size, and stops
// everything it started. The report holds whatever was measured before
// an error.
func Run(ctx context.Context, c Config, log io.Writer) (*Report, error) {
	logs := filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}
	natsAddr, monAddr, s3Addr, consoleAddr, httpAddr := mustAddr(), mustAddr(), mustAddr(), mustAddr(), mustAddr()
	if natsAddr == "" || monAddr == "" || s3Addr == "" || consoleAddr == "" || httpAddr == "" {
		return nil, errors.New("no free loopback port")
	}
	port := func(a string) string { return a[strings.LastIndexByte(a, ':')+1:] }
	ns, err := Start("nats", logs, nil, filepath.Join(c.Bin, "nats-server"),
		"-js", "-a", "127.0.0.1", "-p", port(natsAddr), "-m", port(monAddr), "-sd", filepath.Join(c.Dir, "nats"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = ns.Stop(30 * time.Second) }()
	minio, err := Start("minio", logs, []string{"MINIO_ROOT_USER=minioadmin", "MINIO_ROOT_PASSWORD=minioadmin", "MINIO_BROWSER=off"},
		filepath.Join(c.Bin, "minio"), "server", "--quiet", "--address", s3Addr, "--console-address", consoleAddr, filepath.Join(c.Dir, "minio"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = minio.Stop(30 * time.Second) }()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := WaitHTTP(wctx, ns, "http://"+monAddr+"/healthz"); err != nil {
		return nil, err
	}
	if err := WaitHTTP(wctx, minio, "http://"+s3Addr+"/minio/health/live"); err != nil {
		return nil, err
	}

	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if err := bus.EnsureTopology(ctx, js, bus.DefaultTopology()); err != nil {
		return nil, err
	}
	if err := Seed(ctx, js); err != nil {
		return nil, err
	}
	jobs, err := jobstore.Open(ctx, js)
	if err != nil {
		return nil, err
	}

	gw := c.Gateway
	if gw == "" {
		gw = filepath.Join(c.Bin, "dataport-gateway")
	}
	g := gateway{bin: gw, logs: logs, addr: httpAddr, env: []string{
		"DATAPORT_ENV=development",
		"DATAPORT_NATS_URL=nats://" + natsAddr,
		"DATAPORT_S3_ENDPOINT=" + s3Addr,
		"DATAPORT_HTTP_ADDR=" + httpAddr,
		"DATAPORT_PUBLIC_URL=http://" + httpAddr,
		// Creates never finish here (no exporter runs), so the
		// concurrency limit is off; the rate limit is on and high, so
		// every create pays for its quota check and none is refused.
		"DATAPORT_MAX_CONCURRENT_EXPORTS_PER_USER=0",
		"DATAPORT_CREATE_RATE_PER_MINUTE=100000",
	}}
	g.env = append(g.env, c.GatewayEnv...)
	// A first start over the empty projection marks the index built, as
	// on a deployment that had the index from its first job.
	if _, err := g.cycle(ctx, nil); err != nil {
		return nil, err
	}
	t0 := time.Now().Add(-24 * time.Hour).UTC()
	mk := Jobs{T0: t0}
	for _, own := range []func(int) *exportv1.Job{mk.Admin, mk.User} {
		if err := Fill(ctx, jobs, 0, OwnJobs, fillWorkers, own, nil); err != nil {
			return nil, err
		}
	}

	report := &Report{}
	have := 0
	for _, n := range c.Sizes {
		fmt.Fprintf(log, "== filling to %d jobs of other owners\n", n)
		start := time.Now()
		if err := Fill(ctx, jobs, have, n, fillWorkers, mk.Other, func(done int) {
			fmt.Fprintf(log, "   %d jobs, %s\n", done, time.Since(start).Round(time.Second))
		}); err != nil {
			return report, err
		}
		sz := Size{Jobs: n, Fill: time.Since(start), Added: n - have}
		have = n
		fmt.Fprintf(log, "   filled %d in %s; waiting for NATS to settle, starting the gateway\n", sz.Added, sz.Fill.Round(time.Millisecond))
		if err := ns.Settle(ctx, time.Minute); err != nil {
			return report, err
		}
		m, err := g.cycle(ctx, func(p *Process, started time.Duration) error {
			sz.Start = started
			sz.Load = loadavg()
			idle, err := p.Memory()
			if err != nil {
				return err
			}
			sz.Idle = idle
			defer func() { sz.LoadAfter = loadavg() }()
			for _, s := range Scenarios("http://" + httpAddr) {
				// A few seconds first, not counted: the figures are of
				// the steady state, not of the first connections.
				Attack(s, warmUp)
				if err := ns.Settle(ctx, 20*time.Second); err != nil {
					return err
				}
				stop := samplePeaks(ctx, p, portOf(httpAddr), 100*time.Millisecond)
				gw0, err1 := p.cpuTime()
				ns0, err2 := ns.cpuTime()
				r := Attack(s, c.Duration)
				r.Peak = stop()
				gw1, err3 := p.cpuTime()
				ns1, err4 := ns.cpuTime()
				if err := errors.Join(err1, err2, err3, err4); err != nil {
					return err
				}
				if r.Requests > 0 {
					r.GatewayCPU, r.NATSCPU = (gw1-gw0)/time.Duration(r.Requests), (ns1-ns0)/time.Duration(r.Requests)
				}
				fmt.Fprintln(log, "  ", r)
				sz.Results = append(sz.Results, r)
			}
			return nil
		})
		sz.Memory = m
		report.Sizes = append(report.Sizes, sz)
		if err != nil {
			return report, err
		}
		fmt.Fprintf(log, "   gateway started in %s, VmRSS %s MiB, VmHWM %s MiB\n", sz.Start.Round(time.Millisecond), MiB(m.RSS), MiB(m.HWM))
	}
	if c.Migrate && have > 0 {
		fmt.Fprintf(log, "== dropping the job index; the next start rebuilds it over %d jobs\n", have+2*OwnJobs)
		st, err := js.Stream(ctx, "KV_"+bus.BucketJobIndex)
		if err != nil {
			return report, err
		}
		if err := st.Purge(ctx); err != nil {
			return report, err
		}
		mig := Size{Jobs: have, Load: loadavg()}
		m, err := g.cycle(ctx, func(p *Process, started time.Duration) error {
			mig.Start = started
			return checkList("http://" + httpAddr)
		})
		mig.Memory = m
		if err != nil {
			return report, err
		}
		report.Migration = &mig
		fmt.Fprintf(log, "   rebuilt and started in %s, VmHWM %s MiB; the admin's list answers from the new index\n", mig.Start.Round(time.Millisecond), MiB(m.HWM))
	}
	return report, nil
}

// warmUp is how long each scenario runs before it is measured.
const warmUp = 3 * time.Second

// fillWorkers is how many creates the fill keeps in flight.
const fillWorkers = 256

func mustAddr() string {
	a, err := FreeAddr()
	if err != nil {
		return ""
	}
	return a
}

type gateway struct {
	bin, logs, addr string
	env             []string
	n               int
}

// cycle starts the gateway, waits until it is ready, calls during (if
// any) with how long the start took, reads its memory and stops it.
func (g *gateway) cycle(ctx context.Context, during func(*Process, time.Duration) error) (Memory, error) {
	g.n++
	begin := time.Now()
	p, err := Start(fmt.Sprintf("gateway-%d", g.n), g.logs, g.env, g.bin)
	if err != nil {
		return Memory{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := WaitHTTP(wctx, p, "http://"+g.addr+"/readyz"); err != nil {
		_ = p.Stop(30 * time.Second)
		return Memory{}, err
	}
	started := time.Since(begin)
	if during != nil {
		err = during(p, started)
	}
	m, merr := p.Memory()
	return m, errors.Join(err, merr, p.Stop(30*time.Second))
}

// checkList asks for the admin's newest 100 jobs and expects 100.
func checkList(base string) error {
	req, err := http.NewRequest(http.MethodGet, base+"/v1/exports?limit=100", nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-User-Id", AdminID)
	req.Header.Set("X-Auth-Token", AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	var body struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("list after the rebuild: %d %v", resp.StatusCode, err)
	}
	if len(body.Items) != 100 {
		return fmt.Errorf("list after the rebuild: %d jobs, want 100", len(body.Items))
	}
	return nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
