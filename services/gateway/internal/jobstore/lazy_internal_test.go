package jobstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// TestLazySummaryReadsWhatDecodingGives pins LazySummary's reading of a
// block's summary protobuf, field by field, to the decoded summary's:
// the listing filters, counts and orders by what it reads, and renders
// what it decodes, so the two must agree for every job, with and without
// each optional field, at times outside what a timestamp holds, and for
// protobuf proto.Unmarshal reads in its own way (a field repeated, a
// known field of another wire type).
func TestLazySummaryReadsWhatDecodingGives(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 9, 0, 0, 123, time.UTC)
	var values [][]byte
	for i := range 24 {
		j := &exportv1.Job{Id: fmt.Sprintf("job-%02d", i), OwnerId: []string{"u1", "u2", ""}[i%3],
			Dialect: []string{"rebilly", "rocketchat"}[i%2], OrganizationId: []string{"acme", ""}[i/2%2],
			Kind: exportv1.JobKind(i % 4), State: exportv1.JobState(i % 9), Name: "n"}
		if i%4 != 3 {
			j.CreatedAt = timestamppb.New(t0.Add(time.Duration(i) * time.Hour))
			j.UpdatedAt = timestamppb.New(t0.Add(time.Duration(i) * time.Minute))
		}
		if i%5 == 0 {
			j.ParentId, j.ClientId = "sched-1", fmt.Sprintf("client-%d", i)
		}
		if i == 7 {
			j.CreatedAt = &timestamppb.Timestamp{Seconds: -1 << 40}
			j.UpdatedAt = &timestamppb.Timestamp{Seconds: 1, Nanos: -5}
		}
		data, err := proto.Marshal(Summary(j))
		require.NoError(t, err)
		values = append(values, data)
	}
	odd, err := proto.Marshal(&exportv1.Job{Id: "job-odd", OwnerId: "u1", State: exportv1.JobState_JOB_STATE_QUEUED,
		CreatedAt: &timestamppb.Timestamp{Seconds: 100, Nanos: 7}})
	require.NoError(t, err)
	odd = protowire.AppendTag(odd, 5, protowire.VarintType)
	odd = protowire.AppendVarint(odd, uint64(exportv1.JobState_JOB_STATE_COMPLETED))
	odd = protowire.AppendTag(odd, 2, protowire.VarintType) // owner_id as a varint: unknown
	odd = protowire.AppendVarint(odd, 9)
	odd = protowire.AppendTag(odd, 9, protowire.BytesType) // created_at again: merged
	odd = protowire.AppendBytes(odd, protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 200))
	values = append(values, odd)

	for _, v := range values {
		want := &exportv1.Job{}
		require.NoError(t, proto.Unmarshal(v, want))
		lz := &LazySummary{raw: v, id: want.GetId()}
		require.True(t, lz.scan(), want.GetId())
		dec := LazyOf(want)
		assert.Equal(t, want.GetId(), string(lz.f.id))
		assert.Equal(t, dec.State(), lz.State(), want.GetId())
		assert.Equal(t, dec.OwnerID(), lz.OwnerID(), want.GetId())
		for _, o := range []string{"u1", "u2", ""} {
			assert.Equal(t, dec.Owned(o), lz.Owned(o), want.GetId())
		}
		for _, d := range []string{"rebilly", "rocketchat"} {
			for _, o := range []string{"acme", ""} {
				assert.Equal(t, dec.In(d, o), lz.In(d, o), want.GetId())
			}
		}
		assert.Equal(t, dec.HasParent(), lz.HasParent(), want.GetId())
		assert.Equal(t, dec.ClientIDOr("x"), lz.ClientIDOr("x"), want.GetId())
		assert.Equal(t, dec.CreatedAt(), lz.CreatedAt(), want.GetId())
		assert.Equal(t, dec.UpdatedAt(), lz.UpdatedAt(), want.GetId())
		assert.Equal(t, dec.stamp(), lz.stamp(), want.GetId())
		for _, sc := range []Scope{{Owner: "u1"}, {Owner: "u1", Dialect: "rebilly", Organization: "acme"}, {Parent: "sched-1"},
			{Dialect: "rocketchat"}, {Kind: exportv1.JobKind_JOB_KIND_RECORDS}} {
			assert.Equal(t, sc.matches(want), sc.matchesLazy(lz), "%s %+v", want.GetId(), sc)
		}
		assert.True(t, proto.Equal(want, lz.Job()), want.GetId())
	}
	assert.Equal(t, exportv1.JobState_JOB_STATE_COMPLETED, (&LazySummary{raw: odd, id: "job-odd"}).Job().GetState(), "the last state wins")

	for _, bad := range [][]byte{{0x0a, 0x05, 'a'}, {0x4a, 0x02, 0x08}, {0x28}, {0xff}} {
		lz := &LazySummary{raw: bad}
		assert.False(t, lz.scan(), "%x", bad)
		assert.Error(t, proto.Unmarshal(bad, &exportv1.Job{}), "%x", bad)
	}
}
