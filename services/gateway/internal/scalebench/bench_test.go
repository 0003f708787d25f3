package scalebench_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/procstat"
)

// ownJobs is how many jobs the callers have, in each of two dialects.
const ownJobs = 1000

func otherJobs(tb testing.TB) int {
	n := 10_000
	if v := os.Getenv("DATAPORT_BENCH_JOBS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(tb, err, "DATAPORT_BENCH_JOBS")
	}
	return n
}

// fill creates jobs through the one write path (so each is indexed as in
// production), a few at a time.
func fill(tb testing.TB, jobs *jobstore.Store, n int, mk func(i int) *exportv1.Job) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				j := mk(i)
				if _, err := jobs.Create(tb.Context(), &exportv1.ExportRequested{JobId: j.GetId(), OccurredAt: j.GetCreatedAt(), Job: j}); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		require.NoError(tb, err)
	default:
	}
}

// percentiles reports the 50th and 99th percentile of ds as metrics.
func percentiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(p float64) float64 {
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
}

// timed runs op b.N times and reports its latency percentiles. With
// DATAPORT_BENCH_PROFILE=<dir> it writes the CPU profile of the timed
// requests alone (not the fill) to <dir>/<benchmark>.cpu.pprof; the
// NATS server runs in this process, so its share is in it, under its
// own package.
func timed(b *testing.B, op func(b *testing.B)) {
	if dir := os.Getenv("DATAPORT_BENCH_PROFILE"); dir != "" {
		f, err := os.Create(filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "-")+".cpu.pprof"))
		require.NoError(b, err)
		require.NoError(b, pprof.StartCPUProfile(f))
		defer func() {
			pprof.StopCPUProfile()
			require.NoError(b, f.Close())
		}()
	}
	var ds []time.Duration
	for b.Loop() {
		start := time.Now()
		op(b)
		ds = append(ds, time.Since(start))
	}
	percentiles(b, ds)
}

func BenchmarkRequestsAmongManyJobs(b *testing.B) {
	e := filled(b)
	get := func(b *testing.B, path string, c gatewaytest.Creds) {
		r := e.Do(b, http.MethodGet, path, c, "")
		if r.Status != http.StatusOK {
			b.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
	}
	b.Run("native-list", func(b *testing.B) {
		timed(b, func(b *testing.B) { get(b, "/v1/exports?limit=100", gatewaytest.AsAdmin) })
	})
	b.Run("rebilly-list-filter-sort", func(b *testing.B) {
		timed(b, func(b *testing.B) {
			get(b, "/data-exports?filter=status:completed&sort=-createdTime&limit=100", gatewaytest.APIKey(gatewaytest.UserAPIKey))
		})
	})
	b.Run("poll", func(b *testing.B) {
		timed(b, func(b *testing.B) { get(b, "/v1/exports/admin-0500", gatewaytest.AsAdmin) })
	})
	b.Run("create", func(b *testing.B) {
		timed(b, func(b *testing.B) {
			r := e.Do(b, http.MethodPost, "/api/v1/rooms.export", gatewaytest.AsAdmin, `{"rid": "`+gatewaytest.RoomGeneral+`", "type": "file", "format": "json"}`)
			if r.Status != http.StatusOK {
				b.Fatalf("create: %d %s", r.Status, r.Body)
			}
		})
	})
	b.Run("rocketchat-data-download-poll", func(b *testing.B) {
		timed(b, func(b *testing.B) { get(b, "/api/v1/users.requestDataDownload", gatewaytest.AsUser) })
	})
}

// filled is the in-process gateway over a projection of
// DATAPORT_BENCH_JOBS jobs of other owners and ownJobs of the admin
// (Rocket.Chat room exports) and of alice (Rebilly exports).
func filled(b *testing.B) *gatewaytest.Env {
	e := gatewaytest.New(b, gatewaytest.Options{})
	t0 := time.Now().Add(-24 * time.Hour).UTC()
	n := otherJobs(b)
	fill(b, e.Jobs, n, func(i int) *exportv1.Job {
		return &exportv1.Job{Id: fmt.Sprintf("other-%07d", i), OwnerId: fmt.Sprintf("owner-%04d", i%1000),
			Kind: exportv1.JobKind_JOB_KIND_RECORDS, Dialect: "rebilly", OrganizationId: gatewaytest.Org,
			State: exportv1.JobState_JOB_STATE_COMPLETED, CreatedAt: timestamppb.New(t0.Add(time.Duration(i) * time.Millisecond))}
	})
	fill(b, e.Jobs, ownJobs, func(i int) *exportv1.Job {
		return &exportv1.Job{Id: fmt.Sprintf("admin-%04d", i), OwnerId: gatewaytest.AdminID,
			Kind: exportv1.JobKind_JOB_KIND_ROOM, Dialect: "rocketchat", Room: &exportv1.RoomScope{RoomId: gatewaytest.RoomGeneral},
			State: exportv1.JobState_JOB_STATE_COMPLETED, CreatedAt: timestamppb.New(t0.Add(time.Duration(i) * time.Second))}
	})
	fill(b, e.Jobs, ownJobs, func(i int) *exportv1.Job {
		state := exportv1.JobState_JOB_STATE_COMPLETED
		if i%2 == 0 {
			state = exportv1.JobState_JOB_STATE_FAILED
		}
		return &exportv1.Job{Id: fmt.Sprintf("alice-%04d", i), OwnerId: gatewaytest.UserID,
			Kind: exportv1.JobKind_JOB_KIND_RECORDS, Dialect: "rebilly", OrganizationId: gatewaytest.Org,
			State: state, CreatedAt: timestamppb.New(t0.Add(time.Duration(i) * time.Second))}
	})
	b.Logf("projection: %d jobs of other owners, %d of each caller", n, ownJobs)
	return e
}

// BenchmarkListBurst sends burst lists at once, as a loaded machine's
// queue releases them, and reports the most the live heap grew above its
// size before the burst (peak-live-MiB): what lists in flight hold at
// once, which a gateway's RSS follows. Bodies are read and dropped, so
// the client holds none.
//
//	go test -run '^$' -bench BenchmarkListBurst -benchtime 10x ./internal/scalebench/
func BenchmarkListBurst(b *testing.B) {
	const burst = 100
	e := filled(b)
	for _, tc := range []struct {
		name, path string
		c          gatewaytest.Creds
	}{
		{"native-list", "/v1/exports?limit=100", gatewaytest.AsAdmin},
		{"rebilly-list-filter-sort", "/data-exports?filter=status:completed&sort=-createdTime&limit=100", gatewaytest.APIKey(gatewaytest.UserAPIKey)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: burst}}
			defer client.CloseIdleConnections()
			list := func() error {
				req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, e.URL+tc.path, nil)
				if err != nil {
					return err
				}
				for k, v := range map[string]string{"X-User-Id": tc.c.User, "X-Auth-Token": tc.c.Token, "REB-APIKEY": tc.c.APIKey} {
					if v != "" {
						req.Header.Set(k, v)
					}
				}
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				defer func() { _ = resp.Body.Close() }()
				if _, err := io.Copy(io.Discard, resp.Body); err != nil {
					return err
				}
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("GET %s: %d", tc.path, resp.StatusCode)
				}
				return nil
			}
			require.NoError(b, list())
			var peak uint64
			var ds []time.Duration
			for b.Loop() {
				runtime.GC()
				stop := procstat.SampleHeap()
				start := time.Now()
				var wg sync.WaitGroup
				errs := make(chan error, burst)
				for range burst {
					wg.Go(func() { errs <- list() })
				}
				wg.Wait()
				ds = append(ds, time.Since(start))
				idle, top := stop()
				peak = max(peak, top-min(idle, top))
				close(errs)
				for err := range errs {
					require.NoError(b, err)
				}
			}
			percentiles(b, ds)
			b.ReportMetric(float64(peak)/(1<<20), "peak-live-MiB")
		})
	}
}
