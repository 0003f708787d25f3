package jobstore_test

import (
	"fmt"
	"testing"

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
