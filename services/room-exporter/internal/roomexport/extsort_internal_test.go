package roomexport

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSorterSortsAnyNumberOfRecords checks the sorter in memory, with one
// merge, and with merge passes first (more runs than sorterFanIn), against
// slices.SortFunc. Runs are 16 records, so every case is small.
func TestSorterSortsAnyNumberOfRecords(t *testing.T) {
	t.Parallel()
	const testRun = 16
	for _, tc := range []struct {
		name string
		n    int
	}{
		{"empty", 0},
		{"in-memory", testRun - 1},
		{"one-merge", 3*testRun + 7},
		{"merge-passes", (sorterFanIn+3)*testRun + 5},
		{"two-merge-passes", (sorterFanIn*sorterFanIn+1)*testRun + 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(7, uint64(tc.n)))
			s := newSorter(t.TempDir())
			s.run = testRun
			defer s.close()
			want := make([]record, tc.n)
			for i := range want {
				// Few distinct first words, so later words decide too.
				want[i] = record{rng.Uint64N(64), rng.Uint64(), uint64(i), rng.Uint64()}
				require.NoError(t, s.add(want[i]))
			}
			slices.SortFunc(want, compareRecords)
			it, err := s.sorted()
			require.NoError(t, err)
			got := make([]record, 0, tc.n)
			for {
				r, ok, err := it.next()
				require.NoError(t, err)
				if !ok {
					break
				}
				got = append(got, r)
			}
			assert.Equal(t, len(want), len(got))
			assert.True(t, slices.Equal(want, got), "records out of order or lost")
			assert.LessOrEqual(t, len(s.runs), sorterFanIn, "the final merge reads at most sorterFanIn runs")
		})
	}
}

// BenchmarkSorterIDRecords sorts as many random id records (hash, seq,
// offset) as a room of 1,000,000 and one of 10,000,000 versions has, as
// the spool of a room too big for its Bloom filters does, and reads them
// back in order: ns/record is what such a room's plan costs per version
// after the read (its runs are sorted during the read, included here).
func BenchmarkSorterIDRecords(b *testing.B) {
	for _, n := range []int{1_000_000, 10_000_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(3, 4))
			for b.Loop() {
				s := newSorter(b.TempDir())
				for i := range n {
					if err := s.add(record{rng.Uint64(), rng.Uint64(), uint64(i), uint64(i) * 300}); err != nil {
						b.Fatal(err)
					}
				}
				it, err := s.sorted()
				if err != nil {
					b.Fatal(err)
				}
				for {
					_, ok, err := it.next()
					if err != nil {
						b.Fatal(err)
					}
					if !ok {
						break
					}
				}
				s.close()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
		})
	}
}

// TestPartSizeFitsTheBiggestDocument checks that blob.MaxParts parts of
// the default size hold what the doc says, and that parts only grow past
// the first partsAtBase.
func TestPartSizeFitsTheBiggestDocument(t *testing.T) {
	t.Parallel()
	var total int64
	for n := 1; n <= 10_000; n++ {
		size := partSize(DefaultPartSize, n)
		if n <= partsAtBase {
			require.Equal(t, DefaultPartSize, size, "part %d", n)
		}
		require.GreaterOrEqual(t, size, partSize(DefaultPartSize, max(n-1, 1)), "part %d shrinks", n)
		total += int64(size)
	}
	assert.Greater(t, total, int64(327)<<30, "10,000 parts hold at least 327 GiB")
}
