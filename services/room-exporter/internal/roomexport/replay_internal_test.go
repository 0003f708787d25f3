package roomexport

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// ackSubjects are reply subjects in both layouts the server sends.
var ackSubjects = []string{
	"$JS.ACK.CHAT.ord_1.1.4711.12.1733222400000000000.99",
	"$JS.ACK._.ACCHASH.CHAT.ord_1.1.4711.12.1733222400000000000.99.rnd",
	"$JS.ACK.hub.ACCHASH.CHAT.ord_1.1.4711.12.1733222400000000000.99",
	"$JS.ACK.hub.ACCHASH.CHAT.ord_1.1.4711.12.1733222400000000000.99.rnd.more",
}

func TestAckPositionReadsBothLayouts(t *testing.T) {
	for _, s := range ackSubjects {
		seq, pending, ok := ackPosition(s)
		require.True(t, ok, s)
		require.Equal(t, uint64(4711), seq, s)
		require.Equal(t, uint64(99), pending, s)
	}
	for _, s := range []string{
		"", "_INBOX.abc", "$JS.ACK.CHAT.ord_1.1.4711.12.1733222400000000000",
		"$JS.ACK.hub.ACCHASH.CHAT.ord_1.1.4711.12.1733222400000000000",
		"$JS.ACK.CHAT.ord_1.1.x.12.1733222400000000000.99",
		"$JS.ACK.CHAT.ord_1.1.4711.12.1733222400000000000.-1",
	} {
		_, _, ok := ackPosition(s)
		require.False(t, ok, s)
	}
}

// FuzzAckPosition holds ackPosition to the client library's own parse of
// the same subject: wherever both read a position, they read the same.
func FuzzAckPosition(f *testing.F) {
	for _, s := range ackSubjects {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, reply string) {
		seq, pending, ok := ackPosition(reply)
		// The library parses only a message that came from a subscription.
		md, err := (&nats.Msg{Reply: reply, Sub: &nats.Subscription{}}).Metadata()
		if !ok {
			if err == nil && decimal(reply) {
				t.Fatalf("%q: the library reads stream sequence %d, pending %d; ackPosition reads nothing", reply, md.Sequence.Stream, md.NumPending)
			}
			return
		}
		require.NoError(t, err, reply)
		require.Equal(t, md.Sequence.Stream, seq, reply)
		require.Equal(t, md.NumPending, pending, reply)
	})
}

// decimal reports whether reply's stream sequence and pending tokens
// (by the layout, v1 with 9 tokens or v2 with 11 or more) are plain
// decimals: the library reads anything else as 0; ackPosition refuses it.
func decimal(reply string) bool {
	tokens := strings.Split(reply, ".")
	seq, pending := 5, 8
	if len(tokens) > 9 {
		seq, pending = 7, 10
	}
	for _, i := range []int{seq, pending} {
		if _, err := strconv.ParseUint(tokens[i], 10, 64); err != nil {
			return false
		}
	}
	return true
}

// TestOpenIDsPopInOrderOfLatest checks the hand-written heap against a
// sort: ids leave in order of their last version, whatever order they
// were placed in.
func TestOpenIDsPopInOrderOfLatest(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h openIDs
	var want []uint64
	for i := range 500 {
		latest := rng.Uint64N(200)
		h.push(openID{id: strconv.Itoa(i), latest: latest})
		want = append(want, latest)
	}
	slices.Sort(want)
	var got []uint64
	for len(h) > 0 {
		got = append(got, h[0].latest)
		h.popMin()
	}
	require.Equal(t, want, got)
}
