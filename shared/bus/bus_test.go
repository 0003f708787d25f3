package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

func TestTokenRejectsSubjectSyntax(t *testing.T) {
	for _, tok := range []string{"", "a.b", "a*", ">", "a b", "a\tb", "a\nb", "\x7f"} {
		assert.ErrorIs(t, bus.Token(tok), bus.ErrBadToken, "token %q", tok)
	}
	for _, tok := range []string{"GENERAL", "abc-DEF_123", "ünïcode"} {
		assert.NoError(t, bus.Token(tok), "token %q", tok)
	}
}

func TestSubjectBuilders(t *testing.T) {
	s, err := bus.StatusSubject(bus.EventCompleted, "J1")
	require.NoError(t, err)
	assert.Equal(t, "exports.status.completed.J1", s)
	ev, id, err := bus.ParseStatusSubject(s)
	require.NoError(t, err)
	assert.Equal(t, bus.EventCompleted, ev)
	assert.Equal(t, "J1", id)

	_, err = bus.StatusSubject(bus.EventCompleted, "J1.>")
	assert.ErrorIs(t, err, bus.ErrBadToken)
	_, err = bus.ChatSubject("room 1")
	assert.ErrorIs(t, err, bus.ErrBadToken)
	_, _, err = bus.ParseStatusSubject("exports.tasks.room")
	assert.Error(t, err)

	c, err := bus.ChatSubject("GENERAL")
	require.NoError(t, err)
	assert.Equal(t, "chat.messages.GENERAL", c)
	r, err := bus.RecordSubject("transactions", "acme")
	require.NoError(t, err)
	assert.Equal(t, "records.transactions.acme", r)
	task, err := bus.TaskSubject(bus.TaskRoom)
	require.NoError(t, err)
	assert.Equal(t, "exports.tasks.room", task)
}

func TestEveryDeclaredConsumerIsValid(t *testing.T) {
	srv := bustest.Start(t)
	topo := bustest.Topology()
	for _, name := range bus.Consumers() {
		t.Run(name, func(t *testing.T) {
			spec, err := topo.Consumer(name)
			require.NoError(t, err)
			assert.Positive(t, spec.Config.MaxDeliver, "MaxDeliver must be explicit")
			assert.Positive(t, spec.Config.AckWait, "AckWait must be explicit")
			c, err := bus.EnsureConsumer(t.Context(), srv.JS, topo, name)
			require.NoError(t, err)
			assert.Equal(t, name, c.CachedInfo().Name)
		})
	}
	_, err := topo.Consumer("nobody")
	assert.Error(t, err)
	require.NoError(t, bus.CheckTopology(t.Context(), srv.JS, topo))
}

// TestEachTaskHasOneExporter publishes a task of every kind and checks that
// exactly the consumer of its kind gets it: room-exporter the room kinds,
// record-exporter the record tasks, each task once.
func TestEachTaskHasOneExporter(t *testing.T) {
	srv := bustest.Start(t)
	topo := bustest.Topology()
	want := map[bus.TaskKind]string{
		bus.TaskRoom:     bus.ConsumerRoomExporter,
		bus.TaskUserData: bus.ConsumerRoomExporter,
		bus.TaskMail:     bus.ConsumerRoomExporter,
		bus.TaskRecords:  bus.ConsumerRecordExporter,
	}
	consumers := map[string]jetstream.Consumer{}
	for _, name := range []string{bus.ConsumerRoomExporter, bus.ConsumerRecordExporter} {
		c, err := bus.EnsureConsumer(t.Context(), srv.JS, topo, name)
		require.NoError(t, err)
		consumers[name] = c
	}
	for kind := range want {
		subject, err := bus.TaskSubject(kind)
		require.NoError(t, err)
		_, err = srv.JS.Publish(t.Context(), subject, []byte(kind))
		require.NoError(t, err)
	}
	got := map[bus.TaskKind]string{}
	for name, c := range consumers {
		batch, err := c.Fetch(len(want), jetstream.FetchMaxWait(500*time.Millisecond))
		require.NoError(t, err)
		for msg := range batch.Messages() {
			kind := bus.TaskKind(msg.Data())
			assert.NotContains(t, got, kind, "%s delivered twice", kind)
			got[kind] = name
			require.NoError(t, msg.Ack())
		}
		require.NoError(t, batch.Error())
	}
	assert.Equal(t, want, got)
}

// TestEnsureConsumerNarrowsTheOldTaskFilter starts from a server where
// room-exporter's durable still filters every task (as deployments before
// record-exporter left it) and ensures the two exporter consumers in
// either order: the durable keeps its name and pending tasks and takes
// only the room kinds, and record-exporter is created beside it.
func TestEnsureConsumerNarrowsTheOldTaskFilter(t *testing.T) {
	for _, order := range [][]string{
		{bus.ConsumerRoomExporter, bus.ConsumerRecordExporter},
		{bus.ConsumerRecordExporter, bus.ConsumerRoomExporter},
	} {
		t.Run("first "+order[0], func(t *testing.T) {
			t.Parallel()
			srv := bustest.Start(t)
			topo := bustest.Topology()
			old, err := topo.Consumer(bus.ConsumerRoomExporter)
			require.NoError(t, err)
			old.Config.FilterSubjects = nil
			old.Config.FilterSubject = "exports.tasks.>"
			_, err = srv.JS.CreateConsumer(t.Context(), old.Stream, old.Config)
			require.NoError(t, err)
			room, err := bus.TaskSubject(bus.TaskRoom)
			require.NoError(t, err)
			_, err = srv.JS.Publish(t.Context(), room, []byte("waiting"))
			require.NoError(t, err)

			for _, name := range order {
				_, err := bus.EnsureConsumer(t.Context(), srv.JS, topo, name)
				require.NoError(t, err, name)
			}
			for _, name := range []string{bus.ConsumerRoomExporter, bus.ConsumerRecordExporter} {
				spec, err := topo.Consumer(name)
				require.NoError(t, err)
				c, err := srv.JS.Consumer(t.Context(), bus.StreamExportTasks, name)
				require.NoError(t, err)
				info, err := c.Info(t.Context())
				require.NoError(t, err)
				assert.Empty(t, info.Config.FilterSubject, name)
				assert.Equal(t, spec.Config.FilterSubjects, info.Config.FilterSubjects, name)
				if name == bus.ConsumerRoomExporter {
					assert.EqualValues(t, 1, info.NumPending, "the durable keeps the task waiting for it")
				}
			}
		})
	}
}

func TestPublishDeduplicatesAndCarriesTraceContext(t *testing.T) {
	srv := bustest.Start(t)
	pub := bus.NewPublisher(srv.JS, propagation.TraceContext{})
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(t.Context(), sc)
	ev := &exportv1.ExportQueued{JobId: "J1", OccurredAt: timestamppb.Now()}
	require.NoError(t, pub.PublishStatus(ctx, bus.EventQueued, "J1", "", ev))
	require.NoError(t, pub.PublishStatus(ctx, bus.EventQueued, "J1", "", ev))

	stream, err := srv.JS.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	info, err := stream.Info(t.Context())
	require.NoError(t, err)
	assert.EqualValues(t, 1, info.State.Msgs, "the second publish with the same id must be dropped")

	msg, err := stream.GetLastMsgForSubject(t.Context(), "exports.status.queued.J1")
	require.NoError(t, err)
	assert.Equal(t, "J1.queued", msg.Header.Get(bus.HeaderMsgID))
	tp := msg.Header.Get(bus.HeaderTraceParent)
	assert.Contains(t, tp, sc.TraceID().String())

	got := bus.ExtractTrace(context.Background(), propagation.TraceContext{}, msg.Header)
	assert.Equal(t, sc.TraceID(), trace.SpanContextFromContext(got).TraceID())
}

// newStream makes an isolated work-queue stream and consumer for one test.
func newStream(t *testing.T, js jetstream.JetStream, name string, ackWait time.Duration, maxDeliver int) jetstream.Consumer {
	t.Helper()
	_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	c, err := js.CreateOrUpdateConsumer(t.Context(), name, jetstream.ConsumerConfig{
		Durable: "w", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: maxDeliver,
	})
	require.NoError(t, err)
	return c
}

func publishN(t *testing.T, js jetstream.JetStream, subject string, n int) {
	t.Helper()
	for i := range n {
		_, err := js.Publish(t.Context(), subject, []byte{byte(i)})
		require.NoError(t, err)
	}
}

func runConsume(t *testing.T, c jetstream.Consumer, h bus.Handler, o bus.ConsumeOptions) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- bus.Consume(ctx, c, h, o) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(20 * time.Second):
				t.Error("Consume did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func pending(t *testing.T, c jetstream.Consumer) (numPending uint64, ackPending int) {
	t.Helper()
	info, err := c.Info(t.Context())
	require.NoError(t, err)
	return info.NumPending, info.NumAckPending
}

func TestConsumeAcksRetriesAndTerminates(t *testing.T) {
	srv := bustest.StartBare(t)
	c := newStream(t, srv.JS, "T1", 5*time.Second, 5)

	var ok, flaky, poison, panicky atomic.Int32
	var terminated sync.Map
	h := func(_ context.Context, msg jetstream.Msg) error {
		switch msg.Subject() {
		case "T1.ok":
			ok.Add(1)
			return nil
		case "T1.flaky":
			if flaky.Add(1) < 3 {
				return errors.New("transient")
			}
			return nil
		case "T1.poison":
			poison.Add(1)
			return bus.Permanent(errors.New("cannot parse"))
		default:
			panicky.Add(1)
			panic("boom")
		}
	}
	runConsume(t, c, h, bus.ConsumeOptions{
		Concurrency:  2,
		NakDelay:     func(uint64) time.Duration { return 50 * time.Millisecond },
		OnTerminated: func(_ context.Context, msg jetstream.Msg, err error) { terminated.Store(msg.Subject(), err) },
	})
	publishN(t, srv.JS, "T1.ok", 3)
	publishN(t, srv.JS, "T1.flaky", 1)
	publishN(t, srv.JS, "T1.poison", 1)
	publishN(t, srv.JS, "T1.panic", 1)

	require.Eventually(t, func() bool {
		np, ap := pending(t, c)
		return np == 0 && ap == 0
	}, 10*time.Second, 20*time.Millisecond)
	assert.EqualValues(t, 3, ok.Load())
	assert.EqualValues(t, 3, flaky.Load(), "nak'ed twice, then acked")
	assert.EqualValues(t, 1, poison.Load(), "a permanent error is never retried")
	assert.EqualValues(t, 1, panicky.Load(), "a panic is treated as permanent")
	_, poisonSeen := terminated.Load("T1.poison")
	_, panicSeen := terminated.Load("T1.panic")
	assert.True(t, poisonSeen && panicSeen, "OnTerminated sees every terminated message")
}

func TestConsumeHeartbeatKeepsLongWorkFromRedelivery(t *testing.T) {
	srv := bustest.StartBare(t)
	c := newStream(t, srv.JS, "T2", time.Second, 5)
	var deliveries atomic.Int32
	h := func(ctx context.Context, _ jetstream.Msg) error {
		deliveries.Add(1)
		select {
		case <-time.After(3 * time.Second): // three ack waits
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	runConsume(t, c, h, bus.ConsumeOptions{Concurrency: 2, Heartbeat: 200 * time.Millisecond})
	publishN(t, srv.JS, "T2.long", 1)
	require.Eventually(t, func() bool {
		np, ap := pending(t, c)
		return np == 0 && ap == 0 && deliveries.Load() > 0
	}, 10*time.Second, 50*time.Millisecond)
	assert.EqualValues(t, 1, deliveries.Load(), "in-progress acks must prevent a redelivery")
}

func TestConsumeShutdownHandsWorkBack(t *testing.T) {
	srv := bustest.StartBare(t)
	c := newStream(t, srv.JS, "T3", 30*time.Second, 5)
	started := make(chan struct{}, 1)
	blocking := func(ctx context.Context, _ jetstream.Msg) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}
	stop := runConsume(t, c, blocking, bus.ConsumeOptions{Grace: 100 * time.Millisecond})
	publishN(t, srv.JS, "T3.job", 1)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("handler never started")
	}
	stop()

	// A second worker gets the message long before the 30 s ack wait, which
	// proves the first one handed it back instead of sitting on it.
	var done atomic.Bool
	runConsume(t, c, func(context.Context, jetstream.Msg) error { done.Store(true); return nil }, bus.ConsumeOptions{})
	require.Eventually(t, done.Load, 10*time.Second, 20*time.Millisecond)
}

func TestDefaultNakDelayGrowsAndCaps(t *testing.T) {
	assert.Equal(t, time.Second, bus.DefaultNakDelay(1))
	assert.Equal(t, 2*time.Second, bus.DefaultNakDelay(2))
	assert.Equal(t, 8*time.Second, bus.DefaultNakDelay(4))
	assert.Equal(t, time.Minute, bus.DefaultNakDelay(50))
}

func TestGiveUpOnLastDeliveryTerminatesWithTheReason(t *testing.T) {
	srv := bustest.StartBare(t)
	const maxDeliver = 3
	c := newStream(t, srv.JS, "T4", 5*time.Second, maxDeliver)
	var deliveries atomic.Int32
	terminated := make(chan error, 1)
	runConsume(t, c, func(ctx context.Context, msg jetstream.Msg) error {
		deliveries.Add(1)
		return bus.GiveUpOnLastDelivery(ctx, msg, maxDeliver, errors.New("storage unavailable"))
	}, bus.ConsumeOptions{
		NakDelay:     func(uint64) time.Duration { return 20 * time.Millisecond },
		OnTerminated: func(_ context.Context, _ jetstream.Msg, err error) { terminated <- err },
	})
	publishN(t, srv.JS, "T4.job", 1)
	select {
	case err := <-terminated:
		assert.ErrorContains(t, err, "giving up after 3 attempts: storage unavailable")
	case <-time.After(10 * time.Second):
		t.Fatal("the last delivery was not terminated")
	}
	assert.EqualValues(t, maxDeliver, deliveries.Load(), "retried until the last allowed delivery, then no more")
}

func TestReasonDropsThePermanentMarker(t *testing.T) {
	assert.Equal(t, "Room X not found.", bus.Reason(fmt.Errorf("export: %w", bus.Permanent(bus.Worded("Room X not found.", nil)))))
	// Error text names internals; only worded errors reach people.
	assert.Equal(t, bus.DefaultReason, bus.Reason(errors.New("timeout")))
}

// TestFetchWhenFreePullsNothingAhead: with every slot busy for longer
// than the ack wait, messages behind the running one must not be pulled
// ahead (they would get no in-progress acks and be delivered again).
func TestFetchWhenFreePullsNothingAhead(t *testing.T) {
	for _, whenFree := range []bool{false, true} {
		t.Run(map[bool]string{false: "buffered", true: "when free"}[whenFree], func(t *testing.T) {
			srv := bustest.StartBare(t)
			c := newStream(t, srv.JS, "T9", time.Second, 5)
			var runs, redelivered atomic.Int32
			h := func(ctx context.Context, msg jetstream.Msg) error {
				runs.Add(1)
				if md, err := msg.Metadata(); err == nil && md.NumDelivered > 1 {
					redelivered.Add(1)
				}
				select {
				case <-time.After(1500 * time.Millisecond): // longer than the ack wait
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			runConsume(t, c, h, bus.ConsumeOptions{Concurrency: 1, Heartbeat: 200 * time.Millisecond, FetchWhenFree: whenFree})
			publishN(t, srv.JS, "T9.task", 3)
			require.Eventually(t, func() bool {
				np, ap := pending(t, c)
				return np == 0 && ap == 0 && runs.Load() >= 3
			}, 30*time.Second, 50*time.Millisecond)
			if whenFree {
				assert.EqualValues(t, 3, runs.Load(), "each message runs once")
				assert.Zero(t, redelivered.Load(), "no message waited past its ack wait")
			} else {
				// The buffered loop is kept for quick handlers; this shows
				// what FetchWhenFree is for.
				assert.Positive(t, redelivered.Load(), "a message pulled ahead outlives its ack wait")
			}
		})
	}
}
