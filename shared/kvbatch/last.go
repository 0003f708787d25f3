package kvbatch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// lastTimeout bounds one Last when the caller's context has no deadline:
// jetstream.New's default request timeout, which kv.Get had.
const lastTimeout = 5 * time.Second

// Keys reads single keys of one bucket, each with one direct get of its
// last message, as kv.Get does. What nats.go's Get spends besides the
// request itself (a JSON request body the direct get does not send, the
// subject formatted, the key matched against a regular expression, the
// timestamp parsed, the context wrapped in a timeout) was about a fifth
// of what a poll's handler cost the gateway, so the request is spelled
// out here, beside the batched ones. It is safe for concurrent use.
type Keys struct {
	nc *nats.Conn
	// subject is the direct get of the bucket's last message on a key,
	// with the key to append: $JS.API.DIRECT.GET.KV_<b>.$KV.<b>.
	subject string
}

// NewKeys reads keys of kv over js's connection.
func NewKeys(js jetstream.JetStream, kv jetstream.KeyValue) *Keys {
	return &Keys{nc: js.Conn(), subject: "$JS.API.DIRECT.GET.KV_" + kv.Bucket() + ".$KV." + kv.Bucket() + "."}
}

// Last returns the current value of key and its revision. A key that was
// never written, or was deleted or purged (or expired), is
// jetstream.ErrKeyNotFound. key must be a literal key the caller has
// checked: no wildcards, whitespace or empty tokens.
//
// Without a deadline in ctx the read is bounded by lastTimeout instead,
// and a ctx that ends meanwhile fails it once the answer is in: the
// read of a poll whose client left takes well under a millisecond,
// cheaper to finish than a timer per read to cut it short.
func (k *Keys) Last(ctx context.Context, key string) ([]byte, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	var msg *nats.Msg
	var err error
	if _, ok := ctx.Deadline(); ok {
		msg, err = k.nc.RequestWithContext(ctx, k.subject+key, nil)
	} else {
		msg, err = k.nc.Request(k.subject+key, nil, lastTimeout)
		if err == nil {
			err = ctx.Err()
		}
	}
	if err != nil {
		return nil, 0, err
	}
	switch status := msg.Header.Get("Status"); status {
	case "":
	case "404":
		return nil, 0, jetstream.ErrKeyNotFound
	default:
		return nil, 0, errors.New("kvbatch: status " + status + " " + msg.Header.Get("Description"))
	}
	if op := msg.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" || msg.Header.Get("Nats-Marker-Reason") != "" {
		return nil, 0, jetstream.ErrKeyNotFound
	}
	rev, err := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("kvbatch: direct get of %s: bad %s: %w", key, jetstream.SequenceHeader, err)
	}
	return msg.Data, rev, nil
}
