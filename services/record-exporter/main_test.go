package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

func TestRunRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name, key, value string
	}{
		{"concurrency zero", "DATAPORT_EXPORTER_CONCURRENCY", "0"},
		{"concurrency too high", "DATAPORT_EXPORTER_CONCURRENCY", "65"},
		{"concurrency not a number", "DATAPORT_EXPORTER_CONCURRENCY", "four"},
		{"health address without port", "DATAPORT_HEALTH_ADDR", "localhost"},
		{"bad log level", "DATAPORT_LOG_LEVEL", "loud"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{tt.key: tt.value}
			var out bytes.Buffer
			err := run(t.Context(), func(k string) string { return env[k] }, &out)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.key, "the message names the variable")
			assert.Empty(t, out.String(), "nothing starts on bad config")
		})
	}
}

// TestRunExportsAndShutsDown starts the binary's run against real NATS and
// MinIO, checks its probes, has it export records, then stops it.
func TestRunExportsAndShutsDown(t *testing.T) {
	ns := bustest.Start(t)
	ms := blobtest.Start(t)
	addr := freeAddr(t)
	env := map[string]string{
		"DATAPORT_NATS_URL":         ns.URL,
		"DATAPORT_S3_ENDPOINT":      ms.Config.Endpoint,
		"DATAPORT_S3_ACCESS_KEY":    ms.Config.AccessKey,
		"DATAPORT_S3_SECRET_KEY":    ms.Config.SecretKey,
		"DATAPORT_HEALTH_ADDR":      addr,
		"DATAPORT_SHUTDOWN_TIMEOUT": "5s",
		"DATAPORT_TASK_SECRET":      "main-test-task-key-0123456789abcdef",
	}
	out := &syncBuffer{}
	ctx, stop := context.WithCancel(t.Context())
	var runErr error
	done := make(chan struct{})
	go func() {
		runErr = run(ctx, func(k string) string { return env[k] }, out)
		close(done)
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("run did not return after cancellation")
		}
	})

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if !assert.NoError(c, err) {
			return
		}
		resp.Body.Close()
		assert.Equal(c, http.StatusOK, resp.StatusCode)
	}, 30*time.Second, 50*time.Millisecond)
	assert.Contains(t, out.String(), "DATAPORT_EXPORTER_CONCURRENCY=4\n")
	assert.Contains(t, out.String(), "DATAPORT_S3_SECRET_KEY=****\n")
	assert.NotContains(t, out.String(), ms.Config.SecretKey)

	// One export through the running service: three transactions of acme,
	// exported by a member of acme.
	owner := &sourcev1.User{Id: "owner", Roles: []string{"admin"}}
	putKV(t, ns, bus.BucketUsers, "owner", owner)
	putKV(t, ns, bus.BucketOrgMembers, "owner.acme", &sourcev1.OrganizationMembership{UserId: "owner", OrganizationId: "acme"})
	putKV(t, ns, bus.BucketJobs, "job-main", &exportv1.Job{Id: "job-main", State: exportv1.JobState_JOB_STATE_PROCESSING, Kind: exportv1.JobKind_JOB_KIND_RECORDS})
	subject, err := bus.RecordSubject("transactions", "acme")
	require.NoError(t, err)
	for i := range 3 {
		data, err := proto.Marshal(&sourcev1.Record{Id: "t" + strconv.Itoa(i), Resource: "transactions", OrganizationId: "acme", CreatedTime: timestamppb.Now()})
		require.NoError(t, err)
		_, err = ns.JS.Publish(t.Context(), subject, data)
		require.NoError(t, err)
	}
	pub := bus.NewPublisher(ns.JS, nil)
	signer, err := bus.NewTaskSigner([]byte(env["DATAPORT_TASK_SECRET"]))
	require.NoError(t, err)
	task := &exportv1.ExportTask{
		JobId: "job-main", Kind: exportv1.JobKind_JOB_KIND_RECORDS, PartKind: exportv1.PartKind_PART_KIND_RECORDS,
		Format: exportv1.Format_FORMAT_CSV, PartsTotal: 1, Records: &exportv1.RecordsScope{Resource: "transactions"},
		OwnerId: "owner", Scope: access.ScopeFor(owner, "acme"),
	}
	require.NoError(t, pub.PublishTask(t.Context(), signer, "exports.tasks.records", "job-main.task.0", task))
	// A room task is not this service's: it stays in the work queue for
	// the room-exporter.
	roomTask := &exportv1.ExportTask{JobId: "job-room", Kind: exportv1.JobKind_JOB_KIND_ROOM, Format: exportv1.Format_FORMAT_JSON,
		PartsTotal: 1, Room: &exportv1.RoomScope{RoomId: "MAIN"}, OwnerId: "owner", Scope: access.ScopeFor(owner, "")}
	require.NoError(t, pub.PublishTask(t.Context(), signer, "exports.tasks.room", "job-room.task.0", roomTask))

	events, err := ns.JS.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	var raw *jetstream.RawStreamMsg
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		raw, err = events.GetLastMsgForSubject(t.Context(), "exports.status.part.job-main")
		assert.NoError(c, err)
	}, 30*time.Second, 20*time.Millisecond)
	var part exportv1.PartUploaded
	require.NoError(t, proto.Unmarshal(raw.Data, &part))
	assert.Equal(t, uint64(3), part.GetFile().GetRecords())
	_, err = ms.Store.Stat(t.Context(), "dataport-exports", part.GetFile().GetObjectKey())
	assert.NoError(t, err, "the part is in the default exports bucket")

	tasks, err := ns.JS.Stream(t.Context(), bus.StreamExportTasks)
	require.NoError(t, err)
	info, err := tasks.Info(t.Context(), jetstream.WithSubjectFilter("exports.tasks.>"))
	require.NoError(t, err)
	assert.Equal(t, map[string]uint64{"exports.tasks.room": 1}, info.State.Subjects, "the record task is done, the room task untouched")
	_, err = events.GetLastMsgForSubject(t.Context(), "exports.status.part.job-room")
	assert.ErrorIs(t, err, jetstream.ErrMsgNotFound, "the room task was not exported here")

	stop()
	select {
	case <-done:
		assert.NoError(t, runErr, "a signal-style stop is a clean exit")
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancellation")
	}
	_, err = http.Get("http://" + addr + "/healthz")
	assert.Error(t, err, "the health server is closed")
}

func putKV(t *testing.T, ns *bustest.Server, bucket, key string, m proto.Message) {
	t.Helper()
	kv, err := ns.JS.KeyValue(t.Context(), bucket)
	require.NoError(t, err)
	data, err := proto.Marshal(m)
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), key, data)
	require.NoError(t, err)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// syncBuffer collects run's output, written by its goroutines while the
// test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
