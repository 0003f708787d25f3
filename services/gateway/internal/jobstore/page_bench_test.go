package jobstore_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
)

// BenchmarkOwnerPage reads the first three pages of 100 (the native
// list's GET /v1/exports?limit=100, then its next pages) of an owner's
// 1,000 jobs, three created a second (about 180 a minute, so a page
// spans one or two minute buckets), and reports what a page costs NATS:
// requests sent and messages received per page. Time per page is
// reported too, but the NATS server runs in process:
//
//	go test -run '^$' -bench BenchmarkOwnerPage -benchtime 20x ./internal/jobstore/
func BenchmarkOwnerPage(b *testing.B) {
	store, _, srv := newStore(b)
	ctx := b.Context()
	for i := range 1000 {
		j := scoped(fmt.Sprintf("a-%04d", i), "alice", "rocketchat", "", exportv1.JobKind_JOB_KIND_ROOM, i/3)
		require.NoError(b, create(ctx, store, j))
	}
	cursors := []string{""}
	for range 2 {
		page, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, After: cursors[len(cursors)-1], Limit: 100})
		require.NoError(b, err)
		cursors = append(cursors, page.Next)
	}
	for n, after := range cursors {
		b.Run(fmt.Sprintf("page-%d", n+1), func(b *testing.B) {
			nc := srv.JS.Conn()
			before := nc.Stats()
			for b.Loop() {
				page, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, After: after, Limit: 100})
				if err != nil || len(page.Jobs) != 100 {
					b.Fatalf("%d jobs, %v", len(page.Jobs), err)
				}
			}
			st := nc.Stats()
			b.ReportMetric(float64(st.OutMsgs-before.OutMsgs)/float64(b.N), "requests/op")
			b.ReportMetric(float64(st.InMsgs-before.InMsgs)/float64(b.N), "msgs-in/op")
		})
	}
}

// BenchmarkOwnerPageBurst is BenchmarkOwnerPage for an owner whose
// newest 800 of 1,000 jobs were created within one minute (a burst of
// creates, as make bench-scale's create scenario leaves the caller it
// then lists): the first three pages of 100 all lie in that minute.
// Besides NATS requests and messages it reports the process's CPU per
// page (the gateway's and the in-process NATS server's together):
//
//	go test -run '^$' -bench BenchmarkOwnerPageBurst -benchtime 200x ./internal/jobstore/
func BenchmarkOwnerPageBurst(b *testing.B) {
	store, _, srv := newStore(b)
	ctx := b.Context()
	for i := range 1000 {
		sec := i / 3
		if i >= 200 {
			// 800 jobs in the minute 3600 s to 3659 s after t0.
			sec = 3600 + (i-200)*59/800
		}
		j := scoped(fmt.Sprintf("a-%04d", i), "alice", "rocketchat", "", exportv1.JobKind_JOB_KIND_ROOM, sec)
		require.NoError(b, create(ctx, store, j))
	}
	cursors := []string{""}
	for range 2 {
		page, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, After: cursors[len(cursors)-1], Limit: 100})
		require.NoError(b, err)
		cursors = append(cursors, page.Next)
	}
	for n, after := range cursors {
		b.Run(fmt.Sprintf("page-%d", n+1), func(b *testing.B) {
			nc := srv.JS.Conn()
			before, cpu := nc.Stats(), processCPU(b)
			for b.Loop() {
				page, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, After: after, Limit: 100})
				if err != nil || len(page.Jobs) != 100 {
					b.Fatalf("%d jobs, %v", len(page.Jobs), err)
				}
			}
			st := nc.Stats()
			b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(st.OutMsgs-before.OutMsgs)/float64(b.N), "requests/op")
			b.ReportMetric(float64(st.InMsgs-before.InMsgs)/float64(b.N), "msgs-in/op")
		})
	}
}

// processCPU is the CPU time this process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
