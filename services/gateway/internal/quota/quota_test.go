package quota_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/quota"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

// clock is a settable fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// rig is a real embedded JetStream with the jobs store, a submitter and
// a limiter wired as the gateway wires them.
type rig struct {
	nats    *bustest.Server
	jobs    *jobstore.Store
	limiter *quota.Limiter
	sub     *submit.Submitter
	clock   *clock
	seq     atomic.Int64
}

func newRig(t *testing.T, opts quota.Options) *rig {
	t.Helper()
	r := &rig{nats: bustest.Start(t), clock: &clock{now: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)}}
	opts.Now = r.clock.Now
	opts.Jobs = quota.JobLookupFunc(func(ctx context.Context, id string) (*exportv1.Job, error) { return r.jobs.Get(ctx, id) })
	l, err := quota.Open(t.Context(), r.nats.JS, opts)
	require.NoError(t, err)
	r.limiter = l
	r.jobs, err = jobstore.Open(t.Context(), r.nats.JS, jobstore.WithOnTerminal(l.ReleaseTerminal))
	require.NoError(t, err)
	r.sub = submit.New(r.jobs, bus.NewPublisher(r.nats.JS, nil), bustest.TaskSigner(t), r.clock.Now, submit.WithAdmission(l))
	return r
}

// creator is a handler that creates a room job owned by X-Owner with the
// id in X-Job-Id (or a fresh one), as a dialect's create handler would:
// 201 on success, its own 500 on any error.
func (r *rig) creator(sub *submit.Submitter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		id := req.Header.Get("X-Job-Id")
		if id == "" {
			id = fmt.Sprintf("job%06d", r.seq.Add(1))
		}
		owner := req.Header.Get("X-Owner")
		job := &exportv1.Job{Id: id, OwnerId: owner, Kind: exportv1.JobKind_JOB_KIND_ROOM, Scope: &exportv1.Scope{UserId: owner},
			State: exportv1.JobState_JOB_STATE_PENDING, CreatedAt: timestamppb.New(r.clock.Now())}
		task := &exportv1.ExportTask{PartKind: exportv1.PartKind_PART_KIND_ROOM, Room: &exportv1.RoomScope{RoomId: "GENERAL"}}
		if err := sub.Submit(context.WithoutCancel(req.Context()), job, bus.TaskRoom, []*exportv1.ExportTask{task}); err != nil {
			w.Header().Set("Location", "/must-not-leak")
			http.Error(w, "internal error: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("X-Created", id)
		w.WriteHeader(http.StatusCreated)
	})
}

func send(t *testing.T, h http.Handler, method, path, owner, jobID string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader("{}"))
	req.Header.Set("X-Owner", owner)
	if jobID != "" {
		req.Header.Set("X-Job-Id", jobID)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

const roomsExport = "/api/v1/rooms.export"

func TestConcurrentCreatesNeverExceedTheLimit(t *testing.T) {
	r := newRig(t, quota.Options{MaxConcurrent: 3})
	h := r.limiter.Handler(r.creator(r.sub))

	const n = 20
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { codes[i] = send(t, h, http.MethodPost, roomsExport, "alice", "").Code })
	}
	wg.Wait()
	counts := map[int]int{}
	for _, c := range codes {
		counts[c]++
	}
	assert.Equal(t, map[int]int{http.StatusCreated: 3, http.StatusTooManyRequests: n - 3}, counts)
	active, err := r.limiter.Active(t.Context(), "user:alice")
	require.NoError(t, err)
	assert.Len(t, active, 3)
	assert.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "bob", "").Code, "principals have their own slots")
}

// TestTwoReplicasShareTheLimits runs two limiters, each on its own NATS
// connection, over one bucket, as two gateway replicas would.
func TestTwoReplicasShareTheLimits(t *testing.T) {
	r := newRig(t, quota.Options{MaxConcurrent: 4, RatePerMinute: 6})
	nc, err := nats.Connect(r.nats.URL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js2, err := jetstream.New(nc)
	require.NoError(t, err)
	jobs2, err := jobstore.Open(t.Context(), js2)
	require.NoError(t, err)
	l2, err := quota.Open(t.Context(), js2, quota.Options{MaxConcurrent: 4, RatePerMinute: 6, Now: r.clock.Now, Jobs: jobs2})
	require.NoError(t, err)
	replicas := []http.Handler{
		r.limiter.Handler(r.creator(r.sub)),
		l2.Handler(r.creator(submit.New(jobs2, bus.NewPublisher(js2, nil), bustest.TaskSigner(t), r.clock.Now, submit.WithAdmission(l2)))),
	}

	// Concurrency: 10 creates spread over both replicas, 4 get through.
	codes := make([]int, 10)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Go(func() { codes[i] = send(t, replicas[i%2], http.MethodPost, roomsExport, "alice", "").Code })
	}
	wg.Wait()
	created := 0
	for _, c := range codes {
		if c == http.StatusCreated {
			created++
		}
	}
	assert.Equal(t, 4, created, "%v", codes)

	// Rate: the first 6 creates were counted (4 got slots, 2 found them
	// taken), the other 4 were refused by the rate. Ending every job frees
	// the slots, not the minute's count.
	list, err := r.jobs.List(t.Context(), "alice")
	require.NoError(t, err)
	for _, j := range list {
		_, err := r.jobs.Apply(t.Context(), &exportv1.ExportCompleted{JobId: j.GetId(), OccurredAt: timestamppb.New(r.clock.Now())})
		require.NoError(t, err)
	}
	active, err := l2.Active(t.Context(), "user:alice")
	require.NoError(t, err)
	assert.Empty(t, active, "a job's end released its slot, seen from the other replica")
	rec := send(t, replicas[1], http.MethodPost, roomsExport, "alice", "")
	assert.Equal(t, http.StatusTooManyRequests, rec.Code, "the minute's creates were counted on both replicas")
	assert.Contains(t, rec.Body.String(), "6 per minute")

	r.clock.Add(time.Minute)
	assert.Equal(t, http.StatusCreated, send(t, replicas[1], http.MethodPost, roomsExport, "alice", "").Code)
	assert.Equal(t, http.StatusCreated, send(t, replicas[0], http.MethodPost, roomsExport, "alice", "").Code)
}

func TestRateWindow(t *testing.T) {
	r := newRig(t, quota.Options{RatePerMinute: 3})
	r.clock.Add(15 * time.Second) // 10:00:15
	h := r.limiter.Handler(r.creator(r.sub))
	for i := range 3 {
		require.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "alice", "").Code, "create %d", i)
	}
	rec := send(t, h, http.MethodPost, roomsExport, "alice", "")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, "45", rec.Header().Get("Retry-After"), "the window ends at 10:01:00")
	assert.Empty(t, rec.Header().Get("Location"), "nothing of the handler's own answer leaks")
	var body map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	assert.Equal(t, false, body["success"], "Rocket.Chat's error shape")
	assert.Contains(t, body["error"], "3 per minute")

	assert.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "bob", "").Code, "principals have their own windows")
	r.clock.Add(45 * time.Second)
	assert.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "alice", "").Code, "a new minute")
}

func TestRefusalsInEachDialectsShape(t *testing.T) {
	r := newRig(t, quota.Options{MaxConcurrent: 1})
	h := r.limiter.Handler(r.creator(r.sub))
	require.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "alice", "").Code)
	cases := []struct {
		name, method, path string
		shape              func(t *testing.T, b map[string]any)
	}{
		{"rocket.chat", http.MethodPost, roomsExport, func(t *testing.T, b map[string]any) {
			assert.Equal(t, false, b["success"])
			assert.Contains(t, b["error"], "at most 1")
		}},
		{"rebilly", http.MethodPost, "/experimental/organizations/acme/data-exports", func(t *testing.T, b map[string]any) {
			assert.EqualValues(t, 429, b["status"])
			assert.Contains(t, b["detail"], "at most 1")
		}},
		{"mytracker", http.MethodPost, "/api/raw/v1/export/create.json", func(t *testing.T, b map[string]any) {
			assert.EqualValues(t, 429, b["code"])
			assert.Contains(t, b["data"].(map[string]any)["error"].(map[string]any)["detail"], "at most 1")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := send(t, h, c.method, c.path, "alice", "")
			require.Equal(t, http.StatusTooManyRequests, rec.Code)
			assert.Equal(t, "30", rec.Header().Get("Retry-After"))
			var b map[string]any
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &b))
			c.shape(t, b)
		})
	}
}

func TestOnlyCreatedJobsCount(t *testing.T) {
	r := newRig(t, quota.Options{MaxConcurrent: 1, RatePerMinute: 2})
	polled := 0
	// A poll goes through the limiter but creates nothing.
	poll := r.limiter.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		polled++
		w.WriteHeader(http.StatusOK)
	}))
	for range 10 {
		require.Equal(t, http.StatusOK, send(t, poll, http.MethodGet, "/api/v1/users.requestDataDownload", "alice", "").Code)
	}
	assert.Equal(t, 10, polled)

	h := r.limiter.Handler(r.creator(r.sub))
	assert.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "alice", "").Code, "ten polls spent nothing")
	for range 5 {
		assert.Equal(t, http.StatusOK, send(t, poll, http.MethodGet, "/api/v1/users.requestDataDownload", "alice", "").Code, "at the limit, polls still pass")
	}

	// A job created outside a request (a scheduled run) is not charged.
	run := &exportv1.Job{Id: "sched-1", OwnerId: "alice", Scope: &exportv1.Scope{UserId: "alice"}, State: exportv1.JobState_JOB_STATE_PENDING}
	require.NoError(t, r.sub.Submit(t.Context(), run, bus.TaskRoom, []*exportv1.ExportTask{{PartKind: exportv1.PartKind_PART_KIND_ROOM}}))
	stored, err := r.jobs.Get(t.Context(), "sched-1")
	require.NoError(t, err)
	assert.Empty(t, stored.GetQuotaPrincipal())
}

func TestFailedCreateGivesTheSlotBack(t *testing.T) {
	r := newRig(t, quota.Options{MaxConcurrent: 1})
	h := r.limiter.Handler(r.creator(r.sub))
	// Someone else's job has the id already: Submit fails with ErrExists.
	create(t, r.jobs, &exportv1.Job{Id: "taken", OwnerId: "bob", State: exportv1.JobState_JOB_STATE_PENDING})
	assert.Equal(t, http.StatusInternalServerError, send(t, h, http.MethodPost, roomsExport, "alice", "taken").Code)
	active, err := r.limiter.Active(t.Context(), "user:alice")
	require.NoError(t, err)
	assert.Empty(t, active)
	assert.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "alice", "").Code)
}

func TestTerminalJobReleasesItsSlot(t *testing.T) {
	for _, ev := range []jobstore.Event{
		&exportv1.ExportCompleted{JobId: "x", OccurredAt: timestamppb.Now()},
		&exportv1.ExportFailed{JobId: "x", OccurredAt: timestamppb.Now(), Reason: "boom"},
		&exportv1.ExportCanceled{JobId: "x", OccurredAt: timestamppb.Now()},
	} {
		t.Run(fmt.Sprintf("%T", ev), func(t *testing.T) {
			r := newRig(t, quota.Options{MaxConcurrent: 1})
			h := r.limiter.Handler(r.creator(r.sub))
			require.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "alice", "x").Code)
			job, err := r.jobs.Get(t.Context(), "x")
			require.NoError(t, err)
			assert.Equal(t, "user:alice", job.GetQuotaPrincipal(), "the job names who holds its slot")
			require.Equal(t, http.StatusTooManyRequests, send(t, h, http.MethodPost, roomsExport, "alice", "").Code)
			_, err = r.jobs.Apply(t.Context(), ev)
			require.NoError(t, err)
			assert.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "alice", "").Code)
		})
	}
}

// TestLostReleasesAreRepaired: a slot whose job ended without a release
// (a crash between the two writes), or whose job was never written, is
// dropped once the set is full.
func TestLostReleasesAreRepaired(t *testing.T) {
	r := newRig(t, quota.Options{MaxConcurrent: 2})
	// A store without the release hook plays the crashed replica.
	forgetful, err := jobstore.Open(t.Context(), r.nats.JS)
	require.NoError(t, err)
	lossy := submit.New(forgetful, bus.NewPublisher(r.nats.JS, nil), bustest.TaskSigner(t), r.clock.Now, submit.WithAdmission(r.limiter))
	h := r.limiter.Handler(r.creator(lossy))
	require.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "alice", "ended").Code)
	_, err = forgetful.Apply(t.Context(), &exportv1.ExportCompleted{JobId: "ended", OccurredAt: timestamppb.Now()})
	require.NoError(t, err)

	// A slot taken by a create whose job never got written.
	never := r.limiter.Handler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, err := r.limiter.Admit(req.Context(), &exportv1.Job{Id: "never", OwnerId: "alice"})
		require.NoError(t, err)
		w.WriteHeader(http.StatusAccepted)
	}))
	require.Equal(t, http.StatusAccepted, send(t, never, http.MethodPost, roomsExport, "alice", "").Code)

	h = r.limiter.Handler(r.creator(r.sub))
	assert.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "alice", "new1").Code, "the ended job's slot was repaired")
	assert.Equal(t, http.StatusTooManyRequests, send(t, h, http.MethodPost, roomsExport, "alice", "").Code, "a fresh slot of an unwritten job is kept")
	r.clock.Add(3 * time.Minute)
	assert.Equal(t, http.StatusCreated, send(t, h, http.MethodPost, roomsExport, "alice", "new2").Code, "an old slot of an unwritten job is repaired")
	active, err := r.limiter.Active(t.Context(), "user:alice")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"new1", "new2"}, active)
}

func TestAdmitRefusalIsErrLimited(t *testing.T) {
	r := newRig(t, quota.Options{RatePerMinute: 1})
	var got error
	h := r.limiter.Handler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		for i := range 2 {
			_, got = r.limiter.Admit(req.Context(), &exportv1.Job{Id: fmt.Sprintf("a%d", i), OwnerId: "alice"})
		}
		// Writes nothing: the refusal is still answered.
	}))
	rec := send(t, h, http.MethodPost, roomsExport, "alice", "")
	assert.NoError(t, got, "one request is charged once, however many ids it tries")
	assert.Equal(t, http.StatusOK, rec.Code)

	h = r.limiter.Handler(http.HandlerFunc(func(_ http.ResponseWriter, req *http.Request) {
		_, got = r.limiter.Admit(req.Context(), &exportv1.Job{Id: "b", OwnerId: "alice"})
	}))
	rec = send(t, h, http.MethodPost, roomsExport, "alice", "")
	assert.True(t, errors.Is(got, quota.ErrLimited))
	var le *quota.LimitError
	require.ErrorAs(t, got, &le)
	assert.Equal(t, http.StatusTooManyRequests, rec.Code)
}

func TestActiveJobsCountsEveryUnfinishedJob(t *testing.T) {
	r := newRig(t, quota.Options{})
	for id, st := range map[string]exportv1.JobState{
		"a1": exportv1.JobState_JOB_STATE_PENDING, "a2": exportv1.JobState_JOB_STATE_PROCESSING,
		"a3": exportv1.JobState_JOB_STATE_COMPLETED, "a4": exportv1.JobState_JOB_STATE_CANCELED,
	} {
		create(t, r.jobs, &exportv1.Job{Id: id, OwnerId: "alice", State: st})
	}
	create(t, r.jobs, &exportv1.Job{Id: "b1", OwnerId: "bob", State: exportv1.JobState_JOB_STATE_PENDING})
	n, err := quota.ActiveJobs(r.jobs).CountActive(t.Context(), "alice")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
}

// create writes job as the gateway does: by applying its request.
func create(t *testing.T, jobs *jobstore.Store, job *exportv1.Job) {
	t.Helper()
	_, err := jobs.Apply(t.Context(), &exportv1.ExportRequested{JobId: job.GetId(), OccurredAt: job.GetCreatedAt(), Job: job})
	require.NoError(t, err)
}
