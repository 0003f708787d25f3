package kvbatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/kvbatch"
)

// TestLastReadsAsKVGetDoes: a key's current value and revision, and
// not-found for a key never written, deleted or purged, exactly as
// kv.Get answers them; with or without a deadline in the context.
func TestLastReadsAsKVGetDoes(t *testing.T) {
	srv := bustest.Start(t)
	ctx := t.Context()
	kv, err := srv.JS.KeyValue(ctx, bus.BucketJobs)
	require.NoError(t, err)
	for _, k := range []string{"kept", "deleted", "purged", "other"} {
		_, err := kv.Put(ctx, k, []byte("v1-"+k))
		require.NoError(t, err)
	}
	_, err = kv.Put(ctx, "kept", []byte("v2"))
	require.NoError(t, err)
	require.NoError(t, kv.Delete(ctx, "deleted"))
	require.NoError(t, kv.Purge(ctx, "purged"))

	keys := kvbatch.NewKeys(srv.JS, kv)
	withDeadline, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, c := range []context.Context{ctx, withDeadline} {
		for _, k := range []string{"kept", "other", "deleted", "purged", "missing"} {
			want, wantErr := kv.Get(ctx, k)
			value, rev, err := keys.Last(c, k)
			if wantErr != nil {
				require.ErrorIs(t, wantErr, jetstream.ErrKeyNotFound)
				assert.ErrorIs(t, err, jetstream.ErrKeyNotFound, k)
				continue
			}
			require.NoError(t, err, k)
			assert.Equal(t, string(want.Value()), string(value), k)
			assert.Equal(t, want.Revision(), rev, k)
		}
	}

	ended, stop := context.WithCancel(ctx)
	stop()
	_, _, err = keys.Last(ended, "kept")
	assert.ErrorIs(t, err, context.Canceled, "a read for a caller that left fails")
}
