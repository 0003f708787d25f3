package rebilly_test

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/nats-io/nats.go/jetstream"
)

type jetstreamKV = jetstream.KeyValue

func hexSHA(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
