package jobstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// Keys of the earlier index layouts (see the index notes in index.go).
const (
	// purgedKey marks that PurgeOldLayout finished on this deployment.
	purgedKey = "meta.purged.v3"
	// oldOwnerEntries are v1's owner entries: seven tokens, where this
	// layout's owner keys have three, four or nine.
	oldOwnerEntries = famOwner + ".*.*.*.*.*.*"
	// oldOrgEntries are v1's and v2's organization entries: five tokens,
	// where this layout's have six.
	oldOrgEntries = famOrg + ".*.*.*.*"
)

// oldMarkers are the earlier layouts' built markers.
var oldMarkers = []string{"meta.built", "meta.built.v2"}

// LayoutGrace is how long after this layout's build PurgeOldLayout waits
// before it removes the earlier layouts: longer than a rolling update
// takes, so that no replica of the previous code, which still reads its
// own layout, is left serving when its entries go.
const LayoutGrace = time.Hour

// PurgeOldLayout removes the entries of the index's earlier layouts,
// which no read of this layout matches and nothing else would ever
// remove, once grace has passed since BuildIndex built this layout. It
// reports how long to wait before calling it again when the grace has not
// passed yet, else 0 (done now or before).
//
// The old code's replicas read their own layout, so the purge must not
// run while any may still serve: hence the grace (LayoutGrace in the
// gateway). Then, in order:
//
//  1. The earlier layouts' built markers go first, so that a replica of
//     the old code that starts from now on (a rollback) builds its own
//     layout again rather than serving from a half-purged one.
//  2. Every job is indexed once more (BuildIndex's pass, idempotent): a
//     job that an old replica created during the rolling update has this
//     layout's owner entry (unchanged since v2) but no organization entry
//     unless a later event reached a replica of this code.
//  3. The old entries are streamed, headers only, from the index's stream
//     and purged, at most fetchers at once: memory is bounded by the
//     consumer's buffer, whatever the index holds.
//  4. The purged marker is written; until then a restart does it all
//     again, which finds less to purge each time.
//
// It is safe to run on several replicas at once: every step is a put, a
// create that may find its entry, or a purge.
func (s *Store) PurgeOldLayout(ctx context.Context, grace time.Duration) (wait time.Duration, err error) {
	if _, err := s.index.Get(ctx, purgedKey); err == nil {
		return 0, nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, fmt.Errorf("purge old index layout: %w", err)
	}
	e, err := s.index.Get(ctx, builtKey)
	if err != nil {
		return 0, fmt.Errorf("purge old index layout: this layout is not built: %w", err)
	}
	built, err := time.Parse(time.RFC3339Nano, string(e.Value()))
	if err != nil {
		return 0, fmt.Errorf("purge old index layout: marker %s: %w", builtKey, err)
	}
	if left := built.Add(grace).Sub(s.now()); left > 0 {
		return left, nil
	}
	for _, k := range oldMarkers {
		if err := s.index.Purge(ctx, k, jetstream.PurgeTTL(markerTTL)); err != nil {
			return 0, fmt.Errorf("purge old index layout: %w", err)
		}
	}
	if err := s.build(ctx); err != nil {
		return 0, fmt.Errorf("purge old index layout: %w", err)
	}
	prefix := "$KV." + s.index.Bucket() + "."
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fetchers)
	err = s.scanStream(ctx, "KV_"+s.index.Bucket(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{prefix + oldOwnerEntries, prefix + oldOrgEntries}, HeadersOnly: true,
	}, func(msg jetstream.Msg, _ uint64) error {
		key := strings.TrimPrefix(msg.Subject(), prefix)
		g.Go(func() error {
			if err := s.index.Purge(gctx, key, jetstream.PurgeTTL(markerTTL)); err != nil {
				return fmt.Errorf("purge %s: %w", key, err)
			}
			return nil
		})
		return nil
	})
	if werr := g.Wait(); err == nil {
		err = werr
	}
	if err != nil {
		return 0, fmt.Errorf("purge old index layout: %w", err)
	}
	if _, err := s.index.Put(ctx, purgedKey, []byte(s.now().UTC().Format(time.RFC3339Nano))); err != nil {
		return 0, fmt.Errorf("purge old index layout: %w", err)
	}
	return 0, nil
}
