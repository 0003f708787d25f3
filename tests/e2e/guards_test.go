package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
)

// TestAPIGuards covers what protects the platform from its callers and
// from bad work: the per-user concurrency limit, Idempotency-Key, and
// poison tasks that must end failed without stopping the consumer.
func TestAPIGuards(t *testing.T) {
	t.Parallel()
	// Two deliveries per task, so that a task whose exporter dies twice
	// runs out of them.
	s := startStackWith(t, stackOptions{env: []string{"DATAPORT_MAX_CONCURRENT_EXPORTS_PER_USER=2", "DATAPORT_TASK_MAX_DELIVER=2"}})
	js := natsJS(t, s.natsURL)
	admin := s.user(t, "admin")
	var all []string
	body := `{"rid":"GENERAL","type":"file","format":"json"}`

	t.Run("per-user concurrency limit answers 429 with Retry-After", func(t *testing.T) {
		// With the exporter down, jobs stay unfinished.
		s.exporters[0].kill()
		all = append(all, createRoomExport(t, s, admin, "GENERAL", ""), createRoomExport(t, s, admin, "GENERAL", ""))
		var refused map[string]any
		status, h := post(t, s.gatewayURL+"/api/v1/rooms.export", admin, "", body, &refused)
		assert.Equal(t, http.StatusTooManyRequests, status)
		assert.NotEmpty(t, h.Get("Retry-After"))
		assert.Equal(t, false, refused["success"], "Rocket.Chat's error shape")
		assert.Contains(t, refused["error"], "at most 2")

		s.exporters[0].restart(t)
		waitAllCompleted(t, s, admin, all, 2*time.Minute)
		all = append(all, createRoomExport(t, s, admin, "GENERAL", ""))
		waitAllCompleted(t, s, admin, all, time.Minute)
	})

	t.Run("Idempotency-Key: same body same job, other body 422", func(t *testing.T) {
		first := createRoomExport(t, s, admin, "GENERAL", "e2e-key-1")
		all = append(all, first)
		assert.Equal(t, first, createRoomExport(t, s, admin, "GENERAL", "e2e-key-1"))

		// Concurrent retries of one request all get the one job.
		ids := make([]string, 5)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() { ids[i] = createRoomExport(t, s, admin, "GENERAL", "e2e-key-2") })
		}
		wg.Wait()
		all = append(all, ids[0])
		for _, id := range ids {
			assert.Equal(t, ids[0], id)
		}

		var refused map[string]any
		status, _ := post(t, s.gatewayURL+"/api/v1/rooms.export", admin, "e2e-key-1",
			`{"rid":"GENERAL","type":"file","format":"html"}`, &refused)
		assert.Equal(t, http.StatusUnprocessableEntity, status)
		assert.Equal(t, false, refused["success"])
		assert.Contains(t, refused["error"], "Idempotency-Key")
		waitAllCompleted(t, s, admin, all, 2*time.Minute)
	})

	t.Run("poison tasks end failed and the consumer keeps going", func(t *testing.T) {
		pub := bus.NewPublisher(js, nil)
		taskSubject, err := bus.TaskSubject(bus.TaskRoom)
		require.NoError(t, err)

		// Bytes that are no ExportTask at all.
		_, err = js.Publish(t.Context(), taskSubject, []byte("\xff\xfenot a task"))
		require.NoError(t, err)

		// A job whose room does not exist, as a buggy gateway could queue
		// (signed, with its owner's scope).
		id := fmt.Sprintf("PoisonJob%08d", time.Now().UnixNano()%1e8)
		now := timestamppb.Now()
		job := &exportv1.Job{Id: id, OwnerId: admin.UserID, Kind: exportv1.JobKind_JOB_KIND_ROOM,
			Format: exportv1.Format_FORMAT_JSON, State: exportv1.JobState_JOB_STATE_PENDING,
			PartsTotal: 1, CreatedAt: now, UpdatedAt: now}
		require.NoError(t, pub.PublishStatus(t.Context(), bus.EventRequested, id, "", &exportv1.ExportRequested{JobId: id, OccurredAt: now, Job: job}))
		task := &exportv1.ExportTask{JobId: id, OccurredAt: now, Kind: job.Kind, Format: job.Format, OwnerId: admin.UserID,
			PartsTotal: 1, Room: &exportv1.RoomScope{RoomId: "NoSuchRoom"},
			Scope: &exportv1.Scope{UserId: admin.UserID, Permissions: []string{"mail-messages"}}}
		signer, err := bus.NewTaskSigner([]byte(s.taskSecret))
		require.NoError(t, err)
		require.NoError(t, pub.PublishTask(t.Context(), signer, taskSubject, id+".task.0", task))

		var failed nativeJob
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			j, err := getJob(t.Context(), s, admin, id)
			if assert.NoError(ct, err) {
				failed = j
				assert.Contains(ct, []string{"failed", "rejected"}, j.State)
			}
		}, time.Minute, 100*time.Millisecond)
		assert.NotEmpty(t, failed.Error, "a failed job says why")
		t.Logf("poison job ended %s: %q", failed.State, failed.Error)

		// The consumer still takes work.
		next := createRoomExport(t, s, admin, "GENERAL", "")
		all = append(all, next)
		waitState(t, s, admin, next, "completed", time.Minute)
	})

	t.Run("a task whose exporter dies on every delivery ends failed", func(t *testing.T) {
		seedBigRoom(t, js, bigMessages, bigMessageSize)
		consumer, err := js.Consumer(t.Context(), bus.StreamExportTasks, bus.ConsumerRoomExporter)
		require.NoError(t, err)
		id := createRoomExport(t, s, admin, bigRoom, "")
		waitProcessing(t, s, admin, id)
		s.exporters[0].kill()
		s.exporters[0].restart(t)
		// Second delivery, to the restarted exporter: kill it there too.
		require.Eventually(t, func() bool {
			info, err := consumer.Info(t.Context())
			return err == nil && info.NumRedelivered > 0 && info.NumAckPending == 1
		}, time.Minute, 5*time.Millisecond)
		s.exporters[0].kill()
		s.exporters[0].restart(t)

		// The gateway's watchdog hears JetStream give up and fails the job.
		var failed nativeJob
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			j, err := getJob(t.Context(), s, admin, id)
			if assert.NoError(ct, err) {
				failed = j
				assert.Equal(ct, "failed", j.State)
			}
		}, time.Minute, 100*time.Millisecond)
		assert.Contains(t, failed.Error, "failed 2 times")
		t.Logf("crash-looping job ended %s: %q", failed.State, failed.Error)
		// The watchdog's failure is applied at once, so a poll can see it
		// a moment before the watchdog logs it.
		assert.EventuallyWithT(t, func(ct *assert.CollectT) {
			assert.Regexp(ct, `"msg":"job failed after max deliveries"[^\n]*"job_id":"`+id+`"`, s.gateway.logText(t))
		}, 10*time.Second, 50*time.Millisecond)

		next := createRoomExport(t, s, admin, "GENERAL", "")
		all = append(all, next)
		waitState(t, s, admin, next, "completed", time.Minute)
		stream, err := js.Stream(t.Context(), bus.StreamExportTasks)
		require.NoError(t, err)
		info, err := stream.Info(t.Context())
		require.NoError(t, err)
		assert.Zero(t, info.State.Msgs, "the given-up task left the work queue")
	})

	completed := completedEvents(t, js)
	for _, id := range all {
		assert.Equal(t, 1, completed[id], "exactly one completion event for %s", id)
	}
	// Faults: three exporter kills and two poison tasks; the poison job and
	// the crash-looping job are the jobs that must (and did) end failed.
	figures{faults: 5, jobs: len(all) + 2}.log(t, "api-guards")
}
