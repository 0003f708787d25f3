package bus

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// HeaderTaskSignature carries the HMAC-SHA256 of an export task's bytes.
const HeaderTaskSignature = "Dataport-Task-Signature"

// ErrBadSignature means a task is unsigned or its signature does not match
// its bytes under any known key: it was not published by the gateway, or
// was altered on the way.
var ErrBadSignature = errors.New("bus: task signature missing or invalid")

// TaskSigner signs export tasks for the exporters, which act only on tasks
// whose bytes carry a valid signature. Anyone who can publish on the bus
// could otherwise hand an exporter a task whose scope names someone else's
// data. It is safe for concurrent use.
type TaskSigner struct {
	keys [][]byte
}

// NewTaskSigner signs with the first key and accepts signatures made with
// any of them, so a key can be rotated without failing tasks in flight.
func NewTaskSigner(keys ...[]byte) (*TaskSigner, error) {
	if len(keys) == 0 {
		return nil, errors.New("bus: a task signer needs at least one key")
	}
	for _, k := range keys {
		if len(k) == 0 {
			return nil, errors.New("bus: empty task signing key")
		}
	}
	return &TaskSigner{keys: keys}, nil
}

func mac(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// Sign returns the signature of data with the newest key.
func (s *TaskSigner) Sign(data []byte) string {
	return base64.RawURLEncoding.EncodeToString(mac(s.keys[0], data))
}

// Verify reports whether sig is a signature of data under one of the keys.
func (s *TaskSigner) Verify(data []byte, sig string) bool {
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	for _, k := range s.keys {
		if hmac.Equal(got, mac(k, data)) {
			return true
		}
	}
	return false
}

// VerifyMsg checks msg's signature header; ErrBadSignature (permanent: no
// redelivery makes a forged task genuine) when it does not hold.
func (s *TaskSigner) VerifyMsg(msg jetstream.Msg) error {
	var sig string
	if h := msg.Headers(); h != nil {
		sig = h.Get(HeaderTaskSignature)
	}
	if !s.Verify(msg.Data(), sig) {
		return Permanent(fmt.Errorf("task on %s: %w", msg.Subject(), ErrBadSignature))
	}
	return nil
}

// PublishTask publishes an export task signed with signer.
func (p *Publisher) PublishTask(ctx context.Context, signer *TaskSigner, subject, msgID string, m proto.Message) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %T: %w", m, err)
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(HeaderTaskSignature, signer.Sign(data))
	return p.publishMsg(ctx, msg, msgID)
}
