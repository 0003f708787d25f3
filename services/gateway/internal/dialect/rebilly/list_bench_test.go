package rebilly_test

import (
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/procstat"
)

// BenchmarkAdminOrgList measures an administrator's organization-wide
// list (GET /data-exports as the SDK asks it) over 100,000 exports of
// 1,000 owners in the organization, created one a second (spread) or one
// a millisecond (burst, every minute bucket larger than one direct get).
// The jobs are written straight into the projection and indexed by
// BuildIndex, as a migrated deployment's are, so the same benchmark runs
// against any layout:
//
//	go test -run '^$' -bench BenchmarkAdminOrgList -benchtime 5x -benchmem ./internal/dialect/rebilly/
//
// Besides time and allocations per list it reports peak-live-MiB: the
// most the process's live heap grew above its size before the lists,
// which is what lists hold at once.
func BenchmarkAdminOrgList(b *testing.B) {
	const jobs = 100_000
	for _, tc := range []struct {
		name string
		gap  time.Duration
	}{{"spread", time.Second}, {"burst", time.Millisecond}} {
		b.Run(tc.name, func(b *testing.B) {
			e := newEnv(b)
			ctx := b.Context()
			fillOrg(b, e, jobs, tc.gap)
			_, err := e.jobs.BuildIndex(ctx)
			require.NoError(b, err)
			path := base + "?limit=5&sort=-createdTime,name&filter=status:completed"
			r := e.do(b, http.MethodGet, path, key(adminKey), "")
			require.Equal(b, http.StatusOK, r.status, "%s", r.body)
			require.Equal(b, fmt.Sprint(jobs/2), r.header.Get("Pagination-Total"))
			b.ReportAllocs()
			runtime.GC()
			stop := procstat.SampleHeap()
			b.ResetTimer()
			for b.Loop() {
				if r := e.do(b, http.MethodGet, path, key(adminKey), ""); r.status != http.StatusOK {
					b.Fatalf("%d %s", r.status, r.body)
				}
			}
			b.StopTimer()
			idle, peak := stop()
			b.ReportMetric(float64(peak-idle)/(1<<20), "peak-live-MiB")
		})
	}
}

// fillOrg writes n Rebilly exports of acme, half of them completed, into
// the jobs bucket with asynchronous publishes: export i is org-<i>,
// created at now - (n-i)*gap, completed when i is even (else failed),
// named "Export <i mod 7>" and owned by owner-<i mod 1000>.
func fillOrg(b testing.TB, e *env, n int, gap time.Duration) {
	fillOrgOwned(b, e, n, gap, func(i int) string { return fmt.Sprintf("owner-%04d", i%1000) })
}

// orgExport is the organization's export i of n created gap apart from
// t0, owned by owner: every other one completed, the rest failed.
func orgExport(t0 time.Time, gap time.Duration, i int, owner string) *exportv1.Job {
	state := exportv1.JobState_JOB_STATE_COMPLETED
	if i%2 == 1 {
		state = exportv1.JobState_JOB_STATE_FAILED
	}
	created := timestamppb.New(t0.Add(time.Duration(i) * gap))
	return &exportv1.Job{Id: fmt.Sprintf("org-%07d", i), OwnerId: owner,
		Kind: exportv1.JobKind_JOB_KIND_RECORDS, Dialect: "rebilly", OrganizationId: "acme", Name: fmt.Sprintf("Export %d", i%7),
		Format: exportv1.Format_FORMAT_CSV, Records: &exportv1.RecordsScope{Resource: "transactions"},
		State: state, CreatedAt: created, UpdatedAt: created}
}

// fillOrgOwned is fillOrg with export i owned by owner(i); an export
// whose owner is "" is left out.
func fillOrgOwned(b testing.TB, e *env, n int, gap time.Duration, owner func(i int) string) {
	b.Helper()
	t0 := now.Add(-time.Duration(n) * gap)
	var futures []jetstream.PubAckFuture
	for i := range n {
		if owner(i) == "" {
			continue
		}
		j := orgExport(t0, gap, i, owner(i))
		data, err := proto.Marshal(j)
		require.NoError(b, err)
		f, err := e.nats.JS.PublishAsync("$KV."+e.jobsKV.Bucket()+"."+j.GetId(), data)
		require.NoError(b, err)
		futures = append(futures, f)
		if len(futures) == 1000 {
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					b.Fatal(err)
				}
			}
			futures = futures[:0]
		}
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
}

// BenchmarkOwnerList measures one owner's list as the control-plane
// bench asks it (filter, sort and Pagination-Total over every one of the
// owner's exports): alice owns 1,000 of the organization's 20,000
// exports (the first two of every forty), half of them completed. What a list costs is
// decoding, filtering and ordering the owner's summaries; the others'
// are never read. Alice's exports are created through the store, as a
// running gateway writes them (their entries as every create leaves
// them); the others are put into the bucket and indexed by BuildIndex,
// which is faster.
//
//	go test -run '^$' -bench BenchmarkOwnerList -benchmem -count 5 ./internal/dialect/rebilly/
func BenchmarkOwnerList(b *testing.B) {
	const jobs, own = 20_000, 1000
	e := newEnv(b)
	alice := func(i int) bool { return i%40 < 2 }
	fillOrgOwned(b, e, jobs, time.Second, func(i int) string {
		if alice(i) {
			return ""
		}
		return fmt.Sprintf("owner-%04d", i%1000)
	})
	_, err := e.jobs.BuildIndex(b.Context())
	require.NoError(b, err)
	t0 := now.Add(-jobs * time.Second)
	var g errgroup.Group
	g.SetLimit(8)
	for i := range jobs {
		if !alice(i) {
			continue
		}
		g.Go(func() error {
			j := orgExport(t0, time.Second, i, "alice")
			_, err := e.jobs.Create(b.Context(), &exportv1.ExportRequested{JobId: j.GetId(), OccurredAt: j.GetCreatedAt(), Job: j})
			return err
		})
	}
	require.NoError(b, g.Wait())
	path := base + "?filter=status:completed&sort=-createdTime&limit=100"
	r := e.do(b, http.MethodGet, path, key(aliceKey), "")
	require.Equal(b, http.StatusOK, r.status, "%s", r.body)
	require.Equal(b, fmt.Sprint(own/2), r.header.Get("Pagination-Total"))
	b.ReportAllocs()
	for b.Loop() {
		if r := e.do(b, http.MethodGet, path, key(aliceKey), ""); r.status != http.StatusOK {
			b.Fatalf("%d %s", r.status, r.body)
		}
	}
}
