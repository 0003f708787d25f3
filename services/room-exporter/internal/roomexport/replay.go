package roomexport

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protowire"

	"dataport.dev/shared/bus"
)

// replayBatch is how many messages an ordered consumer keeps buffered,
// which bounds the replay's memory (chat messages are small). No byte limit
// on purpose: with one, nats.go v1.55 lets the server's pull-status
// messages overflow the iterator's channel ("slow consumer, messages
// dropped"), and the ordered consumer then restarts to refetch the gap.
const replayBatch = 1024

// history is what the exporter learns about a room's subject before it
// streams it.
type history struct {
	subject string
	// count is the number of messages stored on the subject when the task
	// started; percentages are computed against it.
	count uint64
	// lastSeq is the stream sequence of the subject's last message when the
	// task started. Replays stop there, so they end even while people keep
	// chatting, and two replays of one task see the same messages.
	lastSeq uint64
	// emitted holds the ids a resumed attempt's checkpoint says were
	// rendered already and have versions still to come (see spool.go).
	emitted map[string]struct{}
	// spool is the history read, once, onto local disk.
	spool *spool
	// firstSeq, when not zero, is where a split export's range starts
	// (split.go): replays start there at the earliest.
	firstSeq uint64
	// onVersion, when not nil, sees every version a replay reads, before
	// the replay's callback (a range's id table, split.go).
	onVersion func(seq uint64, data []byte) error
}

// close releases the spool.
func (h *history) close() {
	if h != nil {
		h.spool.close()
	}
}

// lookupHistory reads the subject's size and last sequence. A subject with
// no messages has lastSeq 0.
func (e *Exporter) lookupHistory(ctx context.Context, subject string) (*history, error) {
	info, err := e.chat.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, fmt.Errorf("stream info %s: %w", subject, err)
	}
	h := &history{subject: subject, count: info.State.Subjects[subject]}
	if h.count == 0 {
		return h, nil
	}
	last, err := e.chat.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// Purged between the two calls: nothing to export.
		h.count = 0
		return h, nil
	}
	if err != nil {
		return nil, fmt.Errorf("last message of %s: %w", subject, err)
	}
	h.lastSeq = last.Sequence
	return h, nil
}

// replay delivers the subject's messages in stream order, from the first up
// to h.lastSeq, through an ordered consumer (no acks, no server-side state
// beyond an ephemeral consumer removed afterwards). f may stop the replay
// early by returning false.
func (e *Exporter) replay(ctx context.Context, h *history, f func(seq uint64, data []byte) (bool, error)) error {
	return e.replayFrom(ctx, h, 0, f)
}

// replayFrom is replay starting at stream sequence start (0 for the
// subject's first message): a resumed export skips what its checkpoint
// covers without reading it.
func (e *Exporter) replayFrom(ctx context.Context, h *history, start uint64, f func(seq uint64, data []byte) (bool, error)) error {
	start = max(start, h.firstSeq)
	if h.lastSeq == 0 || start > h.lastSeq {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{h.subject},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// A crashed exporter's consumer goes away by itself soon.
		InactiveThreshold: time.Minute,
	}
	if start > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	cons, err := e.chat.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("ordered consumer on %s: %w", h.subject, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(replayBatch))
	if err != nil {
		return fmt.Errorf("replay %s: %w", h.subject, err)
	}
	// Stopping the iterator on cancellation, rather than passing ctx to
	// every Next, saves an allocation per message.
	stopOnCancel := context.AfterFunc(ctx, it.Stop)
	defer func() {
		stopOnCancel()
		it.Stop()
		e.deleteConsumer(ctx, cons)
	}()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("replay %s: %w", h.subject, err)
		}
		seq, pending, ok := ackPosition(msg.Reply())
		if !ok {
			return fmt.Errorf("replay %s: message without a JetStream position (reply %q)", h.subject, msg.Reply())
		}
		if e.opts.onReplay != nil {
			e.opts.onReplay(seq)
		}
		if seq > h.lastSeq {
			// The last message seen at start was removed meanwhile and a
			// newer one arrived: the history as of the start is complete.
			return nil
		}
		if h.onVersion != nil {
			if err := h.onVersion(seq, msg.Data()); err != nil {
				return err
			}
		}
		more, err := f(seq, msg.Data())
		if err != nil || !more {
			return err
		}
		// NumPending guards against a lastSeq that was deleted meanwhile
		// with nothing newer behind it: the replay would wait forever.
		if seq == h.lastSeq || pending == 0 {
			return nil
		}
	}
}

// ackPosition reads a delivered message's stream sequence and the
// consumer's pending count from its reply subject, the JetStream ack
// subject:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//	$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>]
//
// The replay needs only these two numbers; Msg.Metadata parses every
// field into a new struct (names, a timestamp) per message, a tenth of
// the replay's own CPU on a room of a million versions.
func ackPosition(reply string) (seq, pending uint64, ok bool) {
	rest, ok := strings.CutPrefix(reply, "$JS.ACK.")
	if !ok {
		return 0, 0, false
	}
	var tokens [9]string
	count := strings.Count(rest, ".") + 1
	for i := range min(count, len(tokens)) {
		tokens[i], rest, _ = strings.Cut(rest, ".")
	}
	var seqTok, pendingTok string
	switch {
	case count == 7:
		seqTok, pendingTok = tokens[3], tokens[6]
	case count >= 9:
		seqTok, pendingTok = tokens[5], tokens[8]
	default:
		return 0, 0, false
	}
	seq, ok1 := parseDecimal(seqTok)
	pending, ok2 := parseDecimal(pendingTok)
	return seq, pending, ok1 && ok2
}

// parseDecimal parses the unsigned decimal s, false for anything else.
func parseDecimal(s string) (uint64, bool) {
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// deleteConsumer removes a finished replay's ephemeral consumer at once
// rather than leaving it to the inactivity threshold.
func (e *Exporter) deleteConsumer(ctx context.Context, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := e.js.DeleteConsumer(ctx, bus.StreamChatMessages, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		e.log.DebugContext(ctx, "delete replay consumer", "consumer", info.Name, "error", err)
	}
}

// chatMessageIDField is ChatMessage.id's field number.
const chatMessageIDField protowire.Number = 1

// messageID returns the id field of an encoded ChatMessage without decoding
// the rest, and false when data is not valid protobuf.
func messageID(data []byte) ([]byte, bool) {
	var id []byte
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return nil, false
		}
		data = data[n:]
		if num == chatMessageIDField && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return nil, false
			}
			id, data = v, data[n:] // the last occurrence wins, as in proto3
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return nil, false
		}
		data = data[n:]
	}
	return id, true
}

// bloom is a fixed-size Bloom filter over id hashes.
type bloom struct {
	bits []uint64
	m    uint64
}

// A filter gets bloomBitsPerItem bits per id up to a cap (spool.go picks
// it); past the cap its false hits grow, and each one only costs its
// id's records a place in the exact check's sort (spool.planRepeats),
// down to three bits an id, past which the spool keeps no filter
// (bloomMaxIDs). Four hashes are close to the best there, where false hits
// matter (8.9% of the ids read falsely seen, 8.4% with the best, three),
// and touch fewer cache lines per id than the seven that are best at ten
// bits.
const (
	bloomBitsPerItem = 10 // about 1.2% false positives with bloomHashes
	bloomHashes      = 4
	bloomMinBits     = 1 << 16
)

func newBloom(items, maxBits uint64) *bloom {
	m := min(max(items*bloomBitsPerItem, bloomMinBits), max(maxBits, bloomMinBits))
	m = (m + 63) &^ 63
	return &bloom{bits: make([]uint64, m/64), m: m}
}

// testAndAdd adds h and reports whether it may have been added before.
func (f *bloom) testAndAdd(h idHash) bool {
	// Double hashing (Kirsch–Mitzenmacher): k indexes from two hashes.
	present := true
	for i := range uint64(bloomHashes) {
		bit := (h.a + i*(h.b|1)) % f.m
		w, mask := bit/64, uint64(1)<<(bit%64)
		if f.bits[w]&mask == 0 {
			present = false
			f.bits[w] |= mask
		}
	}
	return present
}

// test reports whether h may have been added.
func (f *bloom) test(h idHash) bool {
	for i := range uint64(bloomHashes) {
		bit := (h.a + i*(h.b|1)) % f.m
		if f.bits[bit/64]&(uint64(1)<<(bit%64)) == 0 {
			return false
		}
	}
	return true
}
