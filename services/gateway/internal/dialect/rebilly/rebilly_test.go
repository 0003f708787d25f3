package rebilly_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/dialect"
	"dataport.dev/services/gateway/internal/dialect/rebilly"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/services/gateway/internal/quota"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/links"
)

const (
	aliceKey  = "sk_live_alice_0123456789"
	bobKey    = "sk_live_bob_0123456789"
	adminKey  = "sk_live_admin_0123456789"
	hsSecret  = "test-hs256-key-0123456789abcdefghij"
	publicURL = "http://gw.test"
)

var now = time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)

type env struct {
	srv     *httptest.Server
	jobs    *jobstore.Store
	sched   *schedule.Store
	d       *rebilly.API
	orgs    jetstreamKV
	nats    *bustest.Server
	jobsKV  jetstreamKV
	store   *blob.Store // nil unless envOptions.minio
	rsaPriv *rsa.PrivateKey
	rsaPEM  string
}

func sha(s string) string {
	return strings.ToLower(hexSHA(s))
}

func newEnv(t testing.TB) *env { return newEnvWith(t, plan.Limits{}) }

// newEnvWith is newEnv with the dialect's limits and the schedule store's
// options.
func newEnvWith(t testing.TB, lim plan.Limits, opts ...schedule.StoreOption) *env {
	t.Helper()
	return newEnvQuota(t, lim, nil, opts...)
}

// newEnvQuota is newEnvWith with, when q is set, the quota middleware and
// admission wired as in the gateway.
func newEnvQuota(t testing.TB, lim plan.Limits, q *quota.Options, opts ...schedule.StoreOption) *env {
	t.Helper()
	return newEnvOpts(t, envOptions{limits: lim, quota: q, sched: opts})
}

// Buckets of the MinIO server newEnvOpts starts on request.
const (
	exportBucket = "dataport-exports"
	assetBucket  = "dataport-assets"
)

// envOptions configures newEnvOpts; the zero value is newEnv.
type envOptions struct {
	limits plan.Limits
	// quota, when set, wires the quota middleware and admission as in
	// the gateway.
	quota *quota.Options
	// minio starts MinIO with the exports and assets buckets and hands
	// the dialect its store; without it deleted exports keep their files.
	minio bool
	sched []schedule.StoreOption
}

func newEnvOpts(t testing.TB, o envOptions) *env {
	t.Helper()
	ctx := t.Context()
	lim, q, opts := o.limits, o.quota, o.sched
	nats := bustest.Start(t)
	kv := func(name string) jetstreamKV {
		b, err := nats.JS.KeyValue(ctx, name)
		require.NoError(t, err)
		return b
	}
	users := kv(bus.BucketUsers)
	for _, u := range []*sourcev1.User{
		{Id: "alice", Username: "alice", Name: "Alice Example", Email: "alice@example.com", Roles: []string{"user"}, ApiKeySha256: sha(aliceKey)},
		{Id: "bob", Username: "bob", Name: "Bob Example", Email: "bob@example.com", Roles: []string{"user"}, ApiKeySha256: sha(bobKey)},
		{Id: "root", Username: "root", Name: "Root Admin", Email: "root@example.com", Roles: []string{"admin"}, ApiKeySha256: sha(adminKey)},
	} {
		b, err := proto.Marshal(u)
		require.NoError(t, err)
		_, err = users.Put(ctx, u.GetId(), b)
		require.NoError(t, err)
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	require.NoError(t, err)
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	clock := func() time.Time { return now }
	a, err := auth.NewKeyAuthenticator(users, kv(bus.BucketUserIndex), auth.KeyConfig{HS256Secret: hsSecret, RS256PublicKeyPEM: pemKey, Now: clock})
	require.NoError(t, err)
	_, err = a.IndexUsers(ctx)
	require.NoError(t, err)
	jobsKV := kv(bus.BucketJobs)
	var (
		jobs      *jobstore.Store
		limiter   *quota.Limiter
		admission []submit.Option
		storeOpts []jobstore.Option
	)
	if q != nil {
		o := *q
		o.Now = clock
		o.Jobs = quota.JobLookupFunc(func(ctx context.Context, id string) (*exportv1.Job, error) { return jobs.Get(ctx, id) })
		limiter = quota.New(kv(bus.BucketQuotas), o)
		admission = append(admission, submit.WithAdmission(limiter))
		storeOpts = append(storeOpts, jobstore.WithOnTerminal(limiter.ReleaseTerminal))
	}
	jobs = jobstore.New(nats.JS, jobsKV, kv(bus.BucketJobIndex), storeOpts...)
	// Batch reads as the gateway does.
	sched := schedule.NewStore(kv(bus.BucketSchedules), append([]schedule.StoreOption{schedule.WithBatchReads(nats.JS)}, opts...)...)
	// Everyone works for acme, where root administers exports; bob also
	// for globex.
	orgs := kv(bus.BucketOrgMembers)
	for _, m := range []*sourcev1.OrganizationMembership{
		{UserId: "alice", OrganizationId: "acme", Default: true},
		{UserId: "bob", OrganizationId: "acme", Default: true},
		{UserId: "bob", OrganizationId: "globex"},
		{UserId: "root", OrganizationId: "acme", Roles: []string{"admin"}, Default: true},
	} {
		b, err := proto.Marshal(m)
		require.NoError(t, err)
		_, err = orgs.Put(ctx, m.GetUserId()+"."+m.GetOrganizationId(), b)
		require.NoError(t, err)
	}
	dir := access.NewDirectory(nats.JS, users, kv(bus.BucketRooms), kv(bus.BucketMemberships), orgs, kv(bus.BucketUserIndex))
	var store *blob.Store
	if o.minio {
		store = blobtest.Start(t).Store
		require.NoError(t, store.EnsureBucket(ctx, exportBucket))
		require.NoError(t, store.EnsureBucket(ctx, assetBucket))
	}
	d := rebilly.New(rebilly.Config{
		Directory: dir, Jobs: jobs, Schedules: sched, Limits: lim,
		Submitter: submit.New(jobs, bus.NewPublisher(nats.JS, nil), bustest.TaskSigner(t), clock, admission...),
		Links:     links.New(publicURL, []byte("secret"), time.Hour, clock),
		Blob:      store, ExportBucket: exportBucket,
		PublicURL: publicURL, Now: clock,
	})
	r := chi.NewRouter()
	// As in the gateway: callers are authenticated once, before quotas.
	r.Use(dialect.Authenticate(nil, a))
	if limiter != nil {
		r.Use(limiter.Handler)
	}
	d.Routes(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return &env{srv: srv, jobs: jobs, sched: sched, d: d, orgs: orgs, nats: nats, jobsKV: jobsKV, store: store, rsaPriv: priv, rsaPEM: pemKey}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "%s", r.body)
	return m
}

func (r resp) list(t *testing.T) []map[string]any {
	t.Helper()
	var m []map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "%s", r.body)
	return m
}

func (e *env) do(t testing.TB, method, path string, hdr map[string]string, body string) resp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, e.srv.URL+path, rd)
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func key(k string) map[string]string { return map[string]string{"REB-APIKEY": k} }

const base = "/experimental/data-exports"

const csvBody = `{"name":"July transactions","resource":"transactions","format":"csv",
 "fields":["id","amount","currency"],"arguments":{"filter":"status:approved","sort":"-createdTime","q":"USD"},
 "emailNotification":["ops@example.com"],"dateRange":{"start":"-7 days","end":"today"}}`

func TestCreateGetDelete(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, http.MethodPost, base+"/", key(aliceKey), csvBody)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	it := r.obj(t)
	id := it["id"].(string)
	assert.Equal(t, publicURL+base+"/"+id, r.header.Get("Location"))
	assert.Equal(t, "July transactions", it["name"])
	assert.Equal(t, "csv", it["format"])
	assert.Equal(t, "transactions", it["resource"])
	assert.Equal(t, map[string]any{"filter": "status:approved", "sort": "-createdTime", "q": "USD"}, it["arguments"])
	assert.Equal(t, []any{"ops@example.com"}, it["emailNotification"])
	assert.Equal(t, []any{"id", "amount", "currency"}, it["fields"])
	assert.Nil(t, it["recurring"])
	assert.Equal(t, "alice", it["userId"])
	assert.EqualValues(t, 0, it["recordCount"])
	assert.Equal(t, "2026-06-15T12:00:00Z", it["createdTime"])
	assert.Equal(t, "2026-06-15T12:00:00Z", it["scheduledTime"])
	assert.Equal(t, "pending", it["status"])
	assert.Equal(t, map[string]any{"start": "-7 days", "end": "today", "field": "createdTime"}, it["dateRange"])
	assert.Equal(t, []any{
		map[string]any{"rel": "self", "href": publicURL + base + "/" + id},
	}, it["_links"], "no user link: Dataport serves no users route")

	job, err := e.jobs.Get(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, exportv1.JobKind_JOB_KIND_RECORDS, job.GetKind())
	assert.Equal(t, exportv1.Format_FORMAT_CSV, job.GetFormat())
	assert.Equal(t, []string{"ops@example.com"}, job.GetNotifyEmails())
	sc := job.GetRecords()
	assert.Equal(t, "transactions", sc.GetResource())
	assert.Equal(t, "status:approved", sc.GetFilter())
	assert.Equal(t, time.Date(2026, 6, 8, 12, 0, 0, 0, time.UTC), sc.GetDateRange().GetFrom().AsTime(), "-7 days from now, UTC")

	// Completed: the file links appear, signed with a visible expiry.
	_, err = e.jobs.Apply(t.Context(), &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.New(now.Add(time.Minute)),
		Files: []*exportv1.File{{Name: "export.csv", ObjectKey: "jobs/" + id + "/export.csv", Records: 42}}})
	require.NoError(t, err)
	it = e.do(t, http.MethodGet, base+"/"+id+"?expand=user", key(aliceKey), "").obj(t)
	assert.Equal(t, "completed", it["status"])
	assert.EqualValues(t, 42, it["recordCount"])
	ls := it["_links"].([]any)
	require.Len(t, ls, 3)
	assert.Equal(t, map[string]any{"rel": "fileDownload", "href": publicURL + base + "/" + id + "/download"}, ls[1])
	signed := ls[2].(map[string]any)
	assert.Equal(t, "signedLink", signed["rel"])
	assert.Contains(t, signed["href"], "/v1/exports/"+id+"/files/export.csv?exp=")
	assert.Equal(t, "2026-06-15T13:00:00Z", signed["expiredTime"])
	assert.Equal(t, map[string]any{"user": map[string]any{"id": "alice", "email": "alice@example.com", "username": "alice", "firstName": "Alice", "lastName": "Example"}}, it["_embedded"])
	dl := e.do(t, http.MethodGet, base+"/"+id+"/download", key(aliceKey), "")
	assert.Equal(t, http.StatusFound, dl.status)
	assert.Contains(t, dl.header.Get("Location"), "/files/export.csv?exp=")

	// Bob cannot see it; root (admin) can; another organization cannot.
	assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, base+"/"+id, key(bobKey), "").status)
	assert.Equal(t, http.StatusOK, e.do(t, http.MethodGet, base+"/"+id, key(adminKey), "").status)
	assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, "/experimental/organizations/org2/data-exports/"+id, key(aliceKey), "").status)

	assert.Equal(t, http.StatusNoContent, e.do(t, http.MethodDelete, base+"/"+id, key(aliceKey), "").status)
	assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, base+"/"+id, key(aliceKey), "").status)
	assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodDelete, base+"/"+id, key(aliceKey), "").status)
	assert.Empty(t, e.do(t, http.MethodGet, base, key(aliceKey), "").list(t))
}

// TestDeleteRemovesObjects: deleting a completed export removes every
// object it stored in the exports bucket, including files recorded with
// an empty bucket (which means the exports bucket), and nothing else: not
// another job's objects, not the asset source files a File points to.
func TestDeleteRemovesObjects(t *testing.T) {
	e := newEnvOpts(t, envOptions{minio: true})
	ctx := t.Context()
	r := e.do(t, http.MethodPost, base+"/", key(aliceKey), csvBody)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	id := r.obj(t)["id"].(string)

	put := func(bucket, key string) {
		_, err := e.store.Upload(ctx, bucket, key, strings.NewReader("id,amount\n"), "text/csv")
		require.NoError(t, err)
	}
	// The layout is spelled out: these are the keys exporters and the
	// archiver write today.
	file := "jobs/" + id + "/parts/0/transactions.csv"
	chunk := "jobs/" + id + "/parts/1/transactions.0.csv"
	archive := "jobs/" + id + "/files/dataport-" + id + ".zip"
	otherJob := "jobs/" + id + "x/parts/0/transactions.csv"
	asset := "assets/F1/logo.png"
	for _, k := range []string{file, chunk, archive, otherJob} {
		put(exportBucket, k)
	}
	put(assetBucket, asset)
	_, err := e.jobs.Apply(ctx, &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.New(now.Add(time.Minute)),
		Files: []*exportv1.File{
			{Name: "transactions.csv", ObjectKey: file, Records: 42},
			{Name: "logo.png", ObjectKey: asset, Bucket: assetBucket},
		}})
	require.NoError(t, err)

	require.Equal(t, http.StatusNoContent, e.do(t, http.MethodDelete, base+"/"+id, key(aliceKey), "").status)

	left, err := e.store.List(ctx, exportBucket, "jobs/"+id+"/")
	require.NoError(t, err)
	assert.Empty(t, left, "the deleted export's objects")
	_, err = e.store.Stat(ctx, exportBucket, otherJob)
	assert.NoError(t, err, "another job's object stays")
	_, err = e.store.Stat(ctx, assetBucket, asset)
	assert.NoError(t, err, "the asset's source file stays")
}

func TestDeleteCancelsRunning(t *testing.T) {
	e := newEnv(t)
	id := e.do(t, http.MethodPost, base, key(aliceKey), csvBody).obj(t)["id"].(string)
	assert.Equal(t, http.StatusNoContent, e.do(t, http.MethodDelete, base+"/"+id, key(aliceKey), "").status)
	job, err := e.jobs.Get(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, exportv1.JobState_JOB_STATE_CANCELED, job.GetState())

	// The DELETE changed the job once: the projection consumer, applying
	// everything the job published (its request, queued and the cancel),
	// writes nothing more.
	canceled, err := e.jobsKV.Get(t.Context(), id)
	require.NoError(t, err)
	project(t, e.nats, e.jobs)
	after, err := e.jobsKV.Get(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, canceled.Revision(), after.Revision())
	assert.Equal(t, canceled.Value(), after.Value())
}

// project runs the gateway's projection consumer until it has applied
// every status event published so far.
func project(t *testing.T, nats *bustest.Server, jobs *jobstore.Store) {
	t.Helper()
	ctx := t.Context()
	consumer, err := bus.EnsureConsumer(ctx, nats.JS, bustest.Topology(), bus.ConsumerGatewayProjection)
	require.NoError(t, err)
	stream, err := nats.JS.Stream(ctx, bus.StreamExportEvents)
	require.NoError(t, err)
	last := stream.CachedInfo().State.LastSeq
	require.NotZero(t, last, "nothing was published")
	consumeCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bus.Consume(consumeCtx, consumer, jobs.Projection(slog.New(slog.DiscardHandler)), bus.ConsumeOptions{})
	}()
	defer func() { stop(); <-done }()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		info, err := consumer.Info(ctx)
		if assert.NoError(c, err) {
			assert.GreaterOrEqual(c, info.AckFloor.Stream, last)
			assert.Zero(c, info.NumAckPending)
		}
	}, 10*time.Second, 20*time.Millisecond)
}

// storedJob returns the job whose client id is clientID and owner owner,
// leaving out the jobs an update replaced.
func (e *env) storedJob(t *testing.T, owner, clientID string) *exportv1.Job {
	t.Helper()
	page, err := e.jobs.Find(t.Context(), jobstore.Query{
		Scope: jobstore.Scope{Owner: owner},
		Keep: func(j *exportv1.Job) bool {
			return j.GetClientId() == clientID && j.GetError() != "replaced by an update"
		},
	})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 1, "jobs of %s with client id %s", owner, clientID)
	return page.Jobs[0]
}

// getJob reads a job from the projection.
func (e *env) getJob(t *testing.T, id string) *exportv1.Job {
	t.Helper()
	j, err := e.jobs.Get(t.Context(), id)
	require.NoError(t, err)
	return j
}

func TestPutWithClientID(t *testing.T) {
	e := newEnv(t)
	org := "/experimental/organizations/acme/data-exports/"
	r := e.do(t, http.MethodPut, org+"my-export-1", key(aliceKey), csvBody)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	it := r.obj(t)
	assert.Equal(t, "my-export-1", it["id"])
	assert.Equal(t, publicURL+org+"my-export-1", r.header.Get("Location"))
	assert.Equal(t, publicURL+org+"my-export-1", it["_links"].([]any)[0].(map[string]any)["href"])
	job := e.storedJob(t, "alice", "my-export-1")
	assert.Equal(t, "acme", job.GetOrganizationId())
	assert.Regexp(t, `^c[a-z2-7]{26}$`, job.GetId(), "stored under a key derived from the client id")

	assert.Equal(t, http.StatusOK, e.do(t, http.MethodPut, org+"my-export-1", key(aliceKey), csvBody).status, "repeating the PUT is harmless")
	changed := strings.Replace(csvBody, `"csv"`, `"json"`, 1)
	upd := e.do(t, http.MethodPut, org+"my-export-1", key(aliceKey), changed)
	require.Equal(t, http.StatusOK, upd.status, "an export that has not started is updated: %s", upd.body)
	assert.Equal(t, "json", upd.obj(t)["format"])
	assert.Equal(t, "my-export-1", upd.obj(t)["id"])
	current := e.storedJob(t, "alice", "my-export-1")
	_, err := e.jobs.Apply(t.Context(), &exportv1.ExportProgress{JobId: current.GetId(), OccurredAt: timestamppb.New(now),
		PartsTotal: 1, Progress: &exportv1.Progress{Records: 1}})
	require.NoError(t, err)
	require.Equal(t, exportv1.JobState_JOB_STATE_PROCESSING, e.getJob(t, current.GetId()).GetState())
	assert.Equal(t, http.StatusConflict, e.do(t, http.MethodPut, org+"my-export-1", key(aliceKey), csvBody).status, "her own export has started")
	assert.Equal(t, http.StatusOK, e.do(t, http.MethodPut, org+"my-export-1", key(aliceKey), changed).status, "repeating the update is harmless")
	assert.Equal(t, http.StatusConflict, e.do(t, http.MethodPost, org, key(aliceKey), `{"id":"my-export-1",`+csvBody[1:]).status)
	assert.Equal(t, http.StatusUnprocessableEntity, e.do(t, http.MethodPut, org+strings.Repeat("x", 51), key(aliceKey), csvBody).status)
	got := e.do(t, http.MethodGet, org+"my-export-1", key(aliceKey), "")
	require.Equal(t, http.StatusOK, got.status)
	assert.Equal(t, "my-export-1", got.obj(t)["id"])

	// Organizations are tenants: the export is listed only in acme, which
	// is also alice's default organization; one she is not a member of
	// does not exist for her.
	list := e.do(t, http.MethodGet, "/experimental/organizations/acme/data-exports", key(aliceKey), "").list(t)
	require.Len(t, list, 1)
	assert.Equal(t, "my-export-1", list[0]["id"], "the list shows the client's id")
	assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, "/experimental/organizations/other/data-exports", key(aliceKey), "").status)
	assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, "/experimental/organizations/globex/data-exports", key(aliceKey), "").status)
	assert.Empty(t, e.do(t, http.MethodGet, "/experimental/organizations/globex/data-exports", key(bobKey), "").list(t))
	assert.Len(t, e.do(t, http.MethodGet, base, key(aliceKey), "").list(t), 1)
	assert.Equal(t, "my-export-1", e.do(t, http.MethodGet, base+"/my-export-1", key(aliceKey), "").obj(t)["id"], "the default organization's path names it too")
	assert.Len(t, e.do(t, http.MethodGet, "/organizations/acme/data-exports", key(aliceKey), "").list(t), 1, "also without /experimental")
}

// TestClientIDsOfOthers: a client id names an export of its own owner,
// organization and dialect only; somebody else's id reads as absent.
func TestClientIDsOfOthers(t *testing.T) {
	e := newEnv(t)
	body := func(name string) string { return `{"name":"` + name + `","resource":"events","format":"csv"}` }
	require.Equal(t, http.StatusCreated, e.do(t, http.MethodPut, base+"/monthly", key(aliceKey), body("alice's")).status)

	t.Run("another owner's client id is free for them and stays hidden", func(t *testing.T) {
		assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, base+"/monthly", key(bobKey), "").status)
		assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodDelete, base+"/monthly", key(bobKey), "").status)
		assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, base+"/monthly/download", key(bobKey), "").status)
		r := e.do(t, http.MethodPut, base+"/monthly", key(bobKey), body("bob's"))
		require.Equal(t, http.StatusCreated, r.status, "never a 409 for someone else's id: %s", r.body)
		assert.Equal(t, "monthly", r.obj(t)["id"])
		assert.Equal(t, "bob's", e.do(t, http.MethodGet, base+"/monthly", key(bobKey), "").obj(t)["name"])
		assert.Equal(t, "alice's", e.do(t, http.MethodGet, base+"/monthly", key(aliceKey), "").obj(t)["name"])
		assert.NotEqual(t, e.storedJob(t, "alice", "monthly").GetId(), e.storedJob(t, "bob", "monthly").GetId())
	})

	t.Run("the same client id in another organization is another export", func(t *testing.T) {
		r := e.do(t, http.MethodPut, "/experimental/organizations/globex/data-exports/monthly", key(bobKey), body("globex's"))
		require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
		assert.Equal(t, "bob's", e.do(t, http.MethodGet, base+"/monthly", key(bobKey), "").obj(t)["name"], "base is bob's default organization, acme")
		assert.Equal(t, "globex's", e.do(t, http.MethodGet, "/experimental/organizations/globex/data-exports/monthly", key(bobKey), "").obj(t)["name"])
	})

	t.Run("another owner's server id is free for them too", func(t *testing.T) {
		id := e.do(t, http.MethodPost, base, key(aliceKey), body("server id")).obj(t)["id"].(string)
		assert.Len(t, id, 17)
		assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, base+"/"+id, key(bobKey), "").status)
		r := e.do(t, http.MethodPut, base+"/"+id, key(bobKey), body("bob's copy"))
		require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
		assert.Equal(t, "server id", e.do(t, http.MethodGet, base+"/"+id, key(aliceKey), "").obj(t)["name"], "alice's export is untouched")
		assert.Equal(t, "bob's copy", e.do(t, http.MethodGet, base+"/"+id, key(bobKey), "").obj(t)["name"])
		// Her own server id is hers to PUT again.
		assert.Equal(t, http.StatusOK, e.do(t, http.MethodPut, base+"/"+id, key(aliceKey), body("server id")).status)
	})

	t.Run("an admin sees two owners' same client id as two exports", func(t *testing.T) {
		ids := map[string]string{}
		for _, it := range e.do(t, http.MethodGet, base+"?filter=name:alice's,bob's", key(adminKey), "").list(t) {
			ids[it["name"].(string)] = it["id"].(string)
		}
		require.Len(t, ids, 2)
		assert.NotEqual(t, ids["alice's"], ids["bob's"])
		for name, id := range ids {
			r := e.do(t, http.MethodGet, base+"/"+id, key(adminKey), "")
			require.Equal(t, http.StatusOK, r.status, "the id an admin is shown resolves")
			assert.Equal(t, name, r.obj(t)["name"])
			assert.Equal(t, publicURL+base+"/"+id, r.obj(t)["_links"].([]any)[0].(map[string]any)["href"])
		}
	})
}

// TestClientIDsCannotTakeServerIDs: no client id reaches another dialect's
// job ids or the run ids of schedules.
func TestClientIDsCannotTakeServerIDs(t *testing.T) {
	e := newEnv(t)
	// myTracker's job ids.
	r := e.do(t, http.MethodPut, base+"/raw-7", key(aliceKey), `{"name":"n","resource":"events","format":"csv"}`)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	assert.Equal(t, "raw-7", r.obj(t)["id"])
	_, err := e.jobs.Get(t.Context(), "raw-7")
	assert.ErrorIs(t, err, jobstore.ErrNotFound, "raw-7 is still free for myTracker")
	require.Equal(t, http.StatusCreated, e.do(t, http.MethodPost, base, key(aliceKey), `{"id":"raw-8","name":"n","resource":"events","format":"csv"}`).status)
	_, err = e.jobs.Get(t.Context(), "raw-8")
	assert.ErrorIs(t, err, jobstore.ErrNotFound)

	// A scheduled run's id, taken before the schedule fires.
	daily := `{"name":"daily","resource":"events","format":"csv","recurring":{"instruction":"FREQ=DAILY;BYHOUR=6;BYMINUTE=0;BYSECOND=0","start":"2026-06-15T00:00:00Z"}}`
	r = e.do(t, http.MethodPut, base+"/daily", key(aliceKey), daily)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	assert.Equal(t, "daily", r.obj(t)["id"])
	scheds, err := e.sched.List(t.Context())
	require.NoError(t, err)
	require.Len(t, scheds, 1)
	assert.Equal(t, "daily", scheds[0].GetClientId())
	occ := time.Date(2026, 6, 15, 6, 0, 0, 0, time.UTC)
	runID := schedule.RunID(scheds[0].GetId(), occ)
	require.Equal(t, http.StatusCreated, e.do(t, http.MethodPut, base+"/"+runID, key(bobKey), `{"name":"squat","resource":"events","format":"csv"}`).status)
	s := schedule.New(e.sched, e.d.RunSchedule, schedule.Options{Now: func() time.Time { return occ.Add(time.Second) }})
	require.NoError(t, s.Tick(t.Context()))
	run, err := e.jobs.Get(t.Context(), runID)
	require.NoError(t, err)
	assert.Equal(t, scheds[0].GetId(), run.GetParentId(), "the run is the schedule's, not a squatter's")
	assert.Equal(t, "daily", run.GetName())
	shown := "daily-" + strconv.FormatInt(occ.Unix(), 10)
	assert.Equal(t, shown, run.GetClientId(), "a run is stored under the server's id and shown named after its schedule")

	// The run is listed as its schedule's run; the schedule under "daily".
	ids := map[string]bool{}
	for _, it := range e.do(t, http.MethodGet, base+"?filter=name:daily", key(aliceKey), "").list(t) {
		ids[it["id"].(string)] = true
	}
	assert.Equal(t, map[string]bool{"daily": true, shown: true}, ids)
	assert.Equal(t, "daily", e.do(t, http.MethodGet, base+"/"+shown, key(aliceKey), "").obj(t)["name"])
	assert.Equal(t, "daily", e.do(t, http.MethodGet, base+"/"+runID, key(aliceKey), "").obj(t)["name"], "the stored id names it too")
	upd := strings.Replace(daily, `"daily"`, `"daily v2"`, 1)
	r = e.do(t, http.MethodPut, base+"/daily", key(aliceKey), upd)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Equal(t, "daily", r.obj(t)["id"], "an update keeps the client id")
	assert.Equal(t, http.StatusNoContent, e.do(t, http.MethodDelete, base+"/daily", key(aliceKey), "").status)
	assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, base+"/daily", key(aliceKey), "").status)
}

// TestSDKQueue is the Rebilly JS SDK's queue({id}): GET the id, and on 404
// PUT it there; then GET answers it.
func TestSDKQueue(t *testing.T) {
	e := newEnv(t)
	path := "/experimental/organizations/acme/data-exports/sdk-queued-1"
	require.Equal(t, http.StatusCreated, e.do(t, http.MethodPut, path, key(bobKey), csvBody).status, "someone else took the id first")
	require.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, path, key(aliceKey), "").status)
	require.Equal(t, http.StatusCreated, e.do(t, http.MethodPut, path, key(aliceKey), csvBody).status)
	r := e.do(t, http.MethodGet, path, key(aliceKey), "")
	require.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, "sdk-queued-1", r.obj(t)["id"])
	assert.Equal(t, "alice", r.obj(t)["userId"])
}

func TestValidation(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, body, field string
	}{
		{"not JSON", `{`, "body"},
		{"array", `[]`, "body"},
		{"no name", `{"resource":"transactions","format":"csv"}`, "name"},
		{"no format", `{"name":"n","resource":"transactions"}`, "format"},
		{"bad format", `{"name":"n","resource":"transactions","format":"xlsx"}`, "format"},
		{"bad resource", `{"name":"n","resource":"invoices","format":"csv"}`, "resource"},
		{"unknown field", `{"name":"n","resource":"transactions","format":"csv","fields":["id","nope"]}`, "fields"},
		{"empty fields", `{"name":"n","resource":"transactions","format":"csv","fields":[]}`, "fields"},
		{"fields not strings", `{"name":"n","resource":"transactions","format":"csv","fields":[1]}`, "fields"},
		{"bad filter", `{"name":"n","resource":"transactions","format":"csv","arguments":{"filter":"status"}}`, "arguments.filter"},
		{"filter on unknown field", `{"name":"n","resource":"transactions","format":"csv","arguments":{"filter":"nope:1"}}`, "arguments.filter"},
		{"sort on unknown field", `{"name":"n","resource":"transactions","format":"csv","arguments":{"sort":"-nope"}}`, "arguments.sort"},
		{"bad email", `{"name":"n","resource":"transactions","format":"csv","emailNotification":["not-an-email"]}`, "emailNotification[0]"},
		{"bad date", `{"name":"n","resource":"transactions","format":"csv","dateRange":{"start":"someday","end":"today"}}`, "dateRange.start"},
		{"missing end", `{"name":"n","resource":"transactions","format":"csv","dateRange":{"start":"today"}}`, "dateRange.end"},
		{"end before start", `{"name":"n","resource":"transactions","format":"csv","dateRange":{"start":"today","end":"-7 days"}}`, "dateRange.end"},
		{"bad range field", `{"name":"n","resource":"transactions","format":"csv","dateRange":{"start":"-1 day","end":"today","field":"nope"}}`, "dateRange.field"},
		{"bad RRULE", `{"name":"n","resource":"transactions","format":"csv","recurring":{"instruction":"FREQ=SOMETIMES"}}`, "recurring.instruction"},
		{"no RRULE", `{"name":"n","resource":"transactions","format":"csv","recurring":{}}`, "recurring.instruction"},
		{"bad start", `{"name":"n","resource":"transactions","format":"csv","recurring":{"instruction":"FREQ=DAILY","start":"tomorrow"}}`, "recurring.start"},
		{"bad id", `{"id":"a.b","name":"n","resource":"transactions","format":"csv"}`, "id"},
		{"duplicate field", `{"name":"n","resource":"transactions","format":"csv","fields":["id","amount","id"]}`, "fields"},
		{"too many fields", `{"name":"n","resource":"transactions","format":"csv","fields":[` + strings.Repeat(`"id",`, plan.DefaultMaxFields) + `"amount"]}`, "fields"},
		{"too many recipients", `{"name":"n","resource":"transactions","format":"csv","emailNotification":[` +
			strings.Repeat(`"a@example.com",`, plan.DefaultMaxEmailRecipients) + `"b@example.com"]}`, "emailNotification"},
		{"display name", `{"name":"n","resource":"transactions","format":"csv","emailNotification":["Ops <ops@example.com>"]}`, "emailNotification[0]"},
		{"address with line break", `{"name":"n","resource":"transactions","format":"csv","emailNotification":["ops@example.com\r\nBcc: x@example.com"]}`, "emailNotification[0]"},
		{"every minute", `{"name":"n","resource":"transactions","format":"csv","recurring":{"instruction":"FREQ=MINUTELY"}}`, "recurring"},
		{"twice a minute", `{"name":"n","resource":"transactions","format":"csv","recurring":{"instruction":"FREQ=MINUTELY;INTERVAL=120;BYSECOND=0,30"}}`, "recurring"},
		{"twice an hour", `{"name":"n","resource":"transactions","format":"csv","recurring":{"instruction":"FREQ=HOURLY;BYMINUTE=0,30"}}`, "recurring"},
		{"never reached", `{"name":"n","resource":"transactions","format":"csv","recurring":{"instruction":"FREQ=HOURLY;INTERVAL=24;BYHOUR=5","start":"2026-06-15T06:00:00Z"}}`, "recurring.instruction"},
		{"start before 1970", `{"name":"n","resource":"transactions","format":"csv","recurring":{"instruction":"FREQ=DAILY","start":"1969-12-31T00:00:00Z"}}`, "recurring.start"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, http.MethodPost, base, key(aliceKey), tc.body)
			require.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
			p := r.obj(t)
			assert.EqualValues(t, 422, p["status"])
			assert.Equal(t, "Invalid data", p["error"])
			require.NotEmpty(t, p["invalidFields"])
			assert.Equal(t, tc.field, p["invalidFields"].([]any)[0].(map[string]any)["field"], "%s", r.body)
		})
	}
	assert.Empty(t, e.do(t, http.MethodGet, base, key(aliceKey), "").list(t), "no export was created")
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	sign := func(method jwt.SigningMethod, k any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(k)
		require.NoError(t, err)
		return s
	}
	valid := jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()}
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	cases := []struct {
		name   string
		hdr    map[string]string
		status int
	}{
		{"no credentials", nil, 401},
		{"wrong API key", key("sk_wrong"), 401},
		{"API key", key(aliceKey), 200},
		{"API key as bearer", bearer(aliceKey), 200},
		{"HS256", bearer(sign(jwt.SigningMethodHS256, []byte(hsSecret), valid)), 200},
		{"RS256", bearer(sign(jwt.SigningMethodRS256, e.rsaPriv, valid)), 200},
		{"HS256 wrong secret", bearer(sign(jwt.SigningMethodHS256, []byte("other"), valid)), 401},
		{"expired", bearer(sign(jwt.SigningMethodHS256, []byte(hsSecret), jwt.MapClaims{"sub": "alice", "exp": now.Add(-time.Second).Unix()})), 401},
		{"no exp", bearer(sign(jwt.SigningMethodHS256, []byte(hsSecret), jwt.MapClaims{"sub": "alice"})), 401},
		{"unknown subject", bearer(sign(jwt.SigningMethodHS256, []byte(hsSecret), jwt.MapClaims{"sub": "mallory", "exp": now.Add(time.Hour).Unix()})), 401},
		{"alg confusion: HS256 keyed with the RSA public key", bearer(sign(jwt.SigningMethodHS512, []byte(e.rsaPEM), valid)), 401},
		{"alg none", bearer(sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid)), 401},
		{"basic auth", map[string]string{"Authorization": "Basic YWxpY2U6eA=="}, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, http.MethodGet, base, tc.hdr, "")
			assert.Equal(t, tc.status, r.status, "%s", r.body)
			if tc.status == 401 {
				assert.Equal(t, "Unauthorized", r.obj(t)["error"])
			}
		})
	}
}

func TestAlgConfusionHS256WithPublicKey(t *testing.T) {
	// A server configured only with an RS256 key must refuse an HS256 token
	// whose HMAC key is that public key.
	e := newEnv(t)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()}).SignedString([]byte(e.rsaPEM))
	require.NoError(t, err)
	r := e.do(t, http.MethodGet, base, map[string]string{"Authorization": "Bearer " + tok}, "")
	assert.Equal(t, http.StatusUnauthorized, r.status)
}

func TestList(t *testing.T) {
	e := newEnv(t)
	names := []string{"bravo", "alpha", "charlie", "delta"}
	formats := []string{"csv", "json", "csv", "xml"}
	for i, n := range names {
		b := `{"name":"` + n + `","resource":"events","format":"` + formats[i] + `"}`
		require.Equal(t, http.StatusCreated, e.do(t, http.MethodPost, base, key(aliceKey), b).status)
	}
	require.Equal(t, http.StatusCreated, e.do(t, http.MethodPost, base, key(bobKey), `{"name":"bobs","resource":"events","format":"csv"}`).status)
	namesOf := func(items []map[string]any) []string {
		var out []string
		for _, it := range items {
			out = append(out, it["name"].(string))
		}
		return out
	}
	r := e.do(t, http.MethodGet, base+"?sort=name", key(aliceKey), "")
	require.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, []string{"alpha", "bravo", "charlie", "delta"}, namesOf(r.list(t)))
	assert.Equal(t, "4", r.header.Get("Pagination-Total"))
	assert.Equal(t, "100", r.header.Get("Pagination-Limit"))
	assert.Equal(t, "0", r.header.Get("Pagination-Offset"))

	r = e.do(t, http.MethodGet, base+"?sort=-format,name&limit=2&offset=1", key(aliceKey), "")
	assert.Equal(t, []string{"alpha", "bravo"}, namesOf(r.list(t)), "xml, json, csv(bravo, charlie)")
	assert.Equal(t, "4", r.header.Get("Pagination-Total"))
	assert.Equal(t, "2", r.header.Get("Pagination-Limit"))
	assert.Equal(t, "1", r.header.Get("Pagination-Offset"))

	r = e.do(t, http.MethodGet, base+"?filter=format:csv&sort=name", key(aliceKey), "")
	assert.Equal(t, []string{"bravo", "charlie"}, namesOf(r.list(t)))
	assert.Equal(t, "2", r.header.Get("Pagination-Total"))
	r = e.do(t, http.MethodGet, base+"?filter=format:!csv;status:pending&sort=name", key(aliceKey), "")
	assert.Equal(t, []string{"alpha", "delta"}, namesOf(r.list(t)))
	r = e.do(t, http.MethodGet, base+"?q=HARL", key(aliceKey), "")
	assert.Equal(t, []string{"charlie"}, namesOf(r.list(t)))
	r = e.do(t, http.MethodGet, base+"?limit=0", key(aliceKey), "")
	assert.Empty(t, r.list(t))
	assert.Equal(t, "4", r.header.Get("Pagination-Total"))
	r = e.do(t, http.MethodGet, base+"?expand=user&limit=1", key(aliceKey), "")
	assert.Equal(t, "alice@example.com", r.list(t)[0]["_embedded"].(map[string]any)["user"].(map[string]any)["email"])
	assert.Len(t, e.do(t, http.MethodGet, base, key(adminKey), "").list(t), 5, "an admin sees everyone's")

	for _, tc := range []struct{ query, param string }{
		{"limit=1001", "limit"}, {"limit=-1", "limit"}, {"limit=ten", "limit"},
		{"offset=-1", "offset"}, {"offset=x", "offset"},
		{"offset=9223372036854775807", "offset"}, {"offset=99999999999999999999", "offset"},
		{"limit=9223372036854775807", "limit"}, {"limit=-9223372036854775808", "limit"},
		{"sort=nope", "sort"}, {"sort=-", "sort"},
		{"filter=status", "filter"}, {"filter=nope:1", "filter"},
		{"expand=account", "expand"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			r := e.do(t, http.MethodGet, base+"?"+tc.query, key(aliceKey), "")
			require.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
			assert.Equal(t, tc.param, r.obj(t)["invalidFields"].([]any)[0].(map[string]any)["field"])
		})
	}
}

func TestRecurring(t *testing.T) {
	e := newEnv(t)
	body := `{"name":"daily","resource":"events","format":"csv","recurring":{"instruction":"FREQ=DAILY;BYHOUR=6;BYMINUTE=0;BYSECOND=0","start":"2026-06-15T00:00:00Z"},"dateRange":{"start":"yesterday","end":"today"}}`
	r := e.do(t, http.MethodPost, base, key(aliceKey), body)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	it := r.obj(t)
	id := it["id"].(string)
	assert.Equal(t, map[string]any{"instruction": "FREQ=DAILY;BYHOUR=6;BYMINUTE=0;BYSECOND=0", "start": "2026-06-15T00:00:00Z"}, it["recurring"])
	assert.Equal(t, "2026-06-15T06:00:00Z", it["scheduledTime"])
	assert.Equal(t, "pending", it["status"])

	// Fire the first occurrence as the scheduler would.
	occ := time.Date(2026, 6, 15, 6, 0, 0, 0, time.UTC)
	s := schedule.New(e.sched, e.d.RunSchedule, schedule.Options{Now: func() time.Time { return occ.Add(time.Second) }})
	require.NoError(t, s.Tick(t.Context()))
	require.NoError(t, s.Tick(t.Context()))
	run, err := e.jobs.Get(t.Context(), schedule.RunID(id, occ))
	require.NoError(t, err)
	assert.Equal(t, id, run.GetParentId())
	assert.Equal(t, time.Date(2026, 6, 14, 0, 0, 0, 0, time.UTC), run.GetRecords().GetDateRange().GetFrom().AsTime(), "yesterday, seen from the occurrence")
	assert.Equal(t, &exportv1.Scope{UserId: "alice", OrganizationId: "acme", Permissions: []string{"view-c-room"}}, run.GetScope(),
		"the run is alice's, inside her organization")

	// A run takes its owner's permissions as they are at the occurrence,
	// not those a (tampered or outdated) schedule remembers.
	sched, _, err := e.sched.Get(t.Context(), id)
	require.NoError(t, err)
	sched.Scope.Permissions = append(sched.Scope.Permissions, "export-any-organization")
	later := occ.Add(24 * time.Hour)
	require.NoError(t, e.d.RunSchedule(t.Context(), sched, later, schedule.RunID(id, later)))
	next, err := e.jobs.Get(t.Context(), schedule.RunID(id, later))
	require.NoError(t, err)
	assert.Equal(t, []string{"view-c-room"}, next.GetScope().GetPermissions())
	sched.OwnerId = "gone"
	gone := later.Add(24 * time.Hour)
	require.NoError(t, e.d.RunSchedule(t.Context(), sched, gone, schedule.RunID(id, gone)), "a schedule of a deleted user")
	_, err = e.jobs.Get(t.Context(), schedule.RunID(id, gone))
	assert.ErrorIs(t, err, jobstore.ErrNotFound, "has no more runs")

	it = e.do(t, http.MethodGet, base+"/"+id, key(aliceKey), "").obj(t)
	assert.Equal(t, "2026-06-16T06:00:00Z", it["scheduledTime"])
	assert.Equal(t, "pending", it["status"], "the run's state (no projection runs here)")
	items := e.do(t, http.MethodGet, base+"?sort=createdTime", key(aliceKey), "").list(t)
	assert.Len(t, items, 3, "the schedule and its runs")

	upd := strings.Replace(body, `"daily"`, `"daily v2"`, 1)
	r = e.do(t, http.MethodPut, base+"/"+id, key(aliceKey), upd)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Equal(t, "daily v2", r.obj(t)["name"])
	assert.Equal(t, "2026-06-16T06:00:00Z", r.obj(t)["scheduledTime"], "fired occurrences are not fired again")

	assert.Equal(t, http.StatusNoContent, e.do(t, http.MethodDelete, base+"/"+id, key(aliceKey), "").status)
	assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, base+"/"+id, key(aliceKey), "").status)
}

func TestBoundedWork(t *testing.T) {
	e := newEnvWith(t, plan.Limits{MaxRows: 1000, MaxBytes: 1 << 20}, schedule.WithMaxPerOwner(2))
	ctx := t.Context()

	r := e.do(t, http.MethodPost, base, key(aliceKey), `{"name":"once","resource":"events","format":"csv"}`)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	job, err := e.jobs.Get(ctx, r.obj(t)["id"].(string))
	require.NoError(t, err)
	assert.EqualValues(t, 1000, job.GetRecords().GetMaxRows(), "every record export carries the row cap")
	assert.EqualValues(t, 1<<20, job.GetRecords().GetMaxBytes(), "and the byte cap")
	// Over a cap, the exporter rejects the job; Rebilly shows it failed
	// with the exporter's reason.
	_, err = e.jobs.Apply(ctx, &exportv1.ExportFailed{JobId: job.GetId(), OccurredAt: timestamppb.New(now), Reason: "Too much export data", Rejected: true})
	require.NoError(t, err)
	it := e.do(t, http.MethodGet, base+"/"+job.GetId(), key(aliceKey), "").obj(t)
	assert.Equal(t, "failed", it["status"])
	assert.Equal(t, "Too much export data", it["reason"])

	daily := `{"name":"daily","resource":"events","format":"csv","recurring":{"instruction":"FREQ=DAILY;BYHOUR=6"}}`
	var ids []string
	for range 2 {
		r := e.do(t, http.MethodPost, base, key(aliceKey), daily)
		require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
		ids = append(ids, r.obj(t)["id"].(string))
	}
	r = e.do(t, http.MethodPost, base, key(aliceKey), daily)
	require.Equal(t, http.StatusUnprocessableEntity, r.status, "%s", r.body)
	assert.Equal(t, "recurring", r.obj(t)["invalidFields"].([]any)[0].(map[string]any)["field"])
	assert.Equal(t, http.StatusCreated, e.do(t, http.MethodPost, base, key(bobKey), daily).status, "the cap is per owner")

	// A run gets today's caps.
	occ := time.Date(2026, 6, 16, 6, 0, 0, 0, time.UTC)
	sched, _, err := e.sched.Get(ctx, ids[0])
	require.NoError(t, err)
	sched.Records.MaxRows, sched.Records.MaxBytes = 0, 0
	require.NoError(t, e.d.RunSchedule(ctx, sched, occ, schedule.RunID(ids[0], occ)))
	run, err := e.jobs.Get(ctx, schedule.RunID(ids[0], occ))
	require.NoError(t, err)
	assert.EqualValues(t, 1000, run.GetRecords().GetMaxRows())
	assert.EqualValues(t, 1<<20, run.GetRecords().GetMaxBytes())

	require.Equal(t, http.StatusNoContent, e.do(t, http.MethodDelete, base+"/"+ids[0], key(aliceKey), "").status)
	assert.Equal(t, http.StatusCreated, e.do(t, http.MethodPost, base, key(aliceKey), daily).status, "deleting one makes room")
}

// TestQuotaFollowsTheCredential: the rate is charged to the user behind
// the API key, whatever organization the path names and whatever
// Rocket.Chat headers ride along; reads are never charged.
func TestQuotaFollowsTheCredential(t *testing.T) {
	e := newEnvQuota(t, plan.Limits{}, &quota.Options{RatePerMinute: 5})
	body := `{"name":"n","resource":"events","format":"csv"}`
	for i := range 40 {
		b, err := proto.Marshal(&sourcev1.OrganizationMembership{UserId: "alice", OrganizationId: fmt.Sprintf("org-%d", i)})
		require.NoError(t, err)
		_, err = e.orgs.Put(t.Context(), fmt.Sprintf("alice.org-%d", i), b)
		require.NoError(t, err)
	}
	var codes []int
	for i := range 40 {
		r := e.do(t, http.MethodPost, fmt.Sprintf("/experimental/organizations/org-%d/data-exports", i), key(aliceKey), body)
		codes = append(codes, r.status)
		if r.status == http.StatusTooManyRequests && len(codes) == 6 {
			assert.NotEmpty(t, r.header.Get("Retry-After"))
			p := r.obj(t)
			assert.EqualValues(t, 429, p["status"], "Rebilly's problem shape")
			assert.Contains(t, p["detail"], "5 per minute")
		}
	}
	want := []int{201, 201, 201, 201, 201}
	for range 35 {
		want = append(want, http.StatusTooManyRequests)
	}
	assert.Equal(t, want, codes, "40 organizations are one caller")

	// Bob's key with someone else's Rocket.Chat headers is Bob.
	for i := range 8 {
		hdr := map[string]string{"REB-APIKEY": bobKey, "X-User-Id": fmt.Sprintf("other-%d", i), "X-Auth-Token": fmt.Sprintf("tok-%d", i)}
		want := http.StatusCreated
		if i >= 5 {
			want = http.StatusTooManyRequests
		}
		assert.Equal(t, want, e.do(t, http.MethodPut, fmt.Sprintf("%s/bob-%d", base, i), hdr, body).status, "create %d", i)
	}

	for range 10 {
		assert.Equal(t, http.StatusOK, e.do(t, http.MethodGet, base, key(aliceKey), "").status, "reads are never limited")
		assert.Equal(t, http.StatusOK, e.do(t, http.MethodGet, base+"/bob-0", key(bobKey), "").status)
	}
	// A PUT that only repeats an existing export creates nothing.
	assert.Equal(t, http.StatusOK, e.do(t, http.MethodPut, base+"/bob-0", key(bobKey), body).status)
}
