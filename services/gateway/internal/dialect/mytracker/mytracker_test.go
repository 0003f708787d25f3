package mytracker_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/dialect"
	"dataport.dev/services/gateway/internal/dialect/mytracker"
	"dataport.dev/services/gateway/internal/dialect/rebilly"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/links"
)

var now = time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)

const aliceKey, bobKey = "mt_alice_key", "mt_bob_key"

type env struct {
	srv  *httptest.Server
	jobs *jobstore.Store
}

func newEnv(t *testing.T) *env {
	ctx := t.Context()
	nats := bustest.Start(t)
	users, err := nats.JS.KeyValue(ctx, bus.BucketUsers)
	require.NoError(t, err)
	for id, k := range map[string]string{"alice": aliceKey, "bob": bobKey} {
		sum := sha256.Sum256([]byte(k))
		b, _ := proto.Marshal(&sourcev1.User{Id: id, ApiKeySha256: hex.EncodeToString(sum[:])})
		_, err := users.Put(ctx, id, b)
		require.NoError(t, err)
	}
	creds, err := nats.JS.KeyValue(ctx, bus.BucketUserIndex)
	require.NoError(t, err)
	a, err := auth.NewKeyAuthenticator(users, creds, auth.KeyConfig{})
	require.NoError(t, err)
	_, err = a.IndexUsers(ctx)
	require.NoError(t, err)
	counters, err := nats.JS.KeyValue(ctx, bus.BucketCounters)
	require.NoError(t, err)
	jobs, err := jobstore.Open(ctx, nats.JS)
	require.NoError(t, err)
	clock := func() time.Time { return now }
	orgs, err := nats.JS.KeyValue(ctx, bus.BucketOrgMembers)
	require.NoError(t, err)
	for _, id := range []string{"alice", "bob"} {
		b, _ := proto.Marshal(&sourcev1.OrganizationMembership{UserId: id, OrganizationId: "acme", Default: true})
		_, err := orgs.Put(ctx, id+".acme", b)
		require.NoError(t, err)
	}
	rooms, err := nats.JS.KeyValue(ctx, bus.BucketRooms)
	require.NoError(t, err)
	members, err := nats.JS.KeyValue(ctx, bus.BucketMemberships)
	require.NoError(t, err)
	dir := access.NewDirectory(nats.JS, users, rooms, members, orgs, creds)
	sub := submit.New(jobs, bus.NewPublisher(nats.JS, nil), bustest.TaskSigner(t), clock)
	signer := links.New("http://gw.test", []byte("s"), time.Hour, clock)
	d := mytracker.New(mytracker.Config{
		Directory: dir,
		Jobs:      jobs, Counters: counters, Submitter: sub,
		Links:  signer,
		Limits: mytracker.Limits{MaxRowsPerChunk: 1000, MaxBytesPerChunk: 1 << 20, MaxRows: 5000, MaxBytes: 8 << 20, MaxFields: 5},
		Now:    clock,
	})
	schedules, err := nats.JS.KeyValue(ctx, bus.BucketSchedules)
	require.NoError(t, err)
	r := chi.NewRouter()
	r.Use(dialect.Authenticate(nil, a))
	d.Routes(r)
	// The Rebilly dialect on the same bus, as in the gateway: its client
	// ids must never reach raw-N.
	rebilly.New(rebilly.Config{
		Directory: dir, Jobs: jobs, Schedules: schedule.NewStore(schedules),
		Submitter: sub, Links: signer, PublicURL: "http://gw.test", Now: clock,
	}).Routes(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return &env{srv: srv, jobs: jobs}
}

func (e *env) do(t *testing.T, method, path, apiKey string, form url.Values) (int, map[string]any) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(t.Context(), method, e.srv.URL+path, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&m))
	return res.StatusCode, m
}

func validForm() url.Values {
	return url.Values{"event": {"payments"}, "selectors": {"id,appId,revenue,createdTime"}, "dateFrom": {"2026-05-01"}, "dateTo": {"2026-05-31"}, "idApp[]": {"10001", "10002"}}
}

func TestRawExportLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	status, body := e.do(t, http.MethodPost, "/api/raw/v1/export/create.json", aliceKey, validForm())
	require.Equal(t, http.StatusOK, status, "%v", body)
	assert.Equal(t, map[string]any{"code": 200.0, "message": "Ok", "data": map[string]any{"idRawExport": "1"}}, body)
	_, body = e.do(t, http.MethodPost, "/api/raw/v1/export/create.json", aliceKey, validForm())
	assert.Equal(t, "2", body["data"].(map[string]any)["idRawExport"], "numbers are sequential")

	job, err := e.jobs.Get(ctx, "raw-1")
	require.NoError(t, err)
	sc := job.GetRecords()
	assert.EqualValues(t, 1, job.GetNumber())
	assert.Equal(t, "events", sc.GetResource())
	assert.Equal(t, "eventType:payment;appId:10001,10002", sc.GetFilter())
	assert.Equal(t, []string{"id", "appId", "revenue", "createdTime"}, sc.GetFields())
	assert.EqualValues(t, 1000, sc.GetMaxRowsPerChunk())
	assert.EqualValues(t, 1<<20, sc.GetMaxBytesPerChunk())
	assert.EqualValues(t, 5000, sc.GetMaxRows())
	assert.EqualValues(t, 8<<20, sc.GetMaxBytes())
	assert.True(t, sc.GetGzipChunks())
	assert.Equal(t, time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), sc.GetDateRange().GetFrom().AsTime())
	assert.Equal(t, time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).Add(-time.Nanosecond), sc.GetDateRange().GetTo().AsTime())

	get := func(n string) map[string]any {
		t.Helper()
		status, body := e.do(t, http.MethodGet, "/api/raw/v1/export/get.json?idRawExport="+n, aliceKey, nil)
		require.Equal(t, http.StatusOK, status, "%v", body)
		assert.EqualValues(t, 200, body["code"])
		assert.Equal(t, "Ok", body["message"])
		return body["data"].(map[string]any)
	}
	at := timestamppb.New(now)
	assert.Equal(t, map[string]any{"idRawExport": "1", "status": "In progress", "progress": "0%", "isCancellable": true}, get("1"))
	_, err = e.jobs.Apply(ctx, &exportv1.ExportProgress{JobId: "raw-1", OccurredAt: at, PartsTotal: 1, Progress: &exportv1.Progress{Percent: 64, Records: 10}})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"idRawExport": "1", "status": "In progress", "progress": "64%", "isCancellable": true}, get("1"))
	_, err = e.jobs.Apply(ctx, &exportv1.ExportFinalizing{JobId: "raw-1", OccurredAt: at})
	require.NoError(t, err)
	assert.Equal(t, false, get("1")["isCancellable"])
	status, body = e.do(t, http.MethodGet, "/api/raw/v1/export/cancel.json?idRawExport=1", aliceKey, nil)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, map[string]any{"code": 400.0, "message": "Bad Request", "data": map[string]any{"error": map[string]any{"detail": "This RawExport can not be cancel"}}}, body)

	_, err = e.jobs.Apply(ctx, &exportv1.ExportCompleted{JobId: "raw-1", OccurredAt: at, Files: []*exportv1.File{
		{Name: "1.payment.0.csv.gz"}, {Name: "1.payment.1.csv.gz"},
	}})
	require.NoError(t, err)
	data := get("1")
	assert.Equal(t, "Success!", data["status"])
	files := data["files"].([]any)
	require.Len(t, files, 2)
	exp := now.Add(time.Hour).Unix()
	for i, f := range files {
		m := f.(map[string]any)
		assert.Contains(t, m["link"], "/v1/exports/raw-1/files/1.payment."+strconv.Itoa(i)+".csv.gz?exp=")
		assert.Equal(t, strconv.FormatInt(exp, 10), m["timestampExpires"])
	}
	status, body = e.do(t, http.MethodGet, "/api/raw/v1/export/cancel.json?idRawExport=1", aliceKey, nil)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, "This RawExport can not be cancel (it's completed)", body["data"].(map[string]any)["error"].(map[string]any)["detail"])

	// Export 2: canceled by the user.
	status, body = e.do(t, http.MethodGet, "/api/raw/v1/export/cancel.json?idRawExport=2", aliceKey, nil)
	require.Equal(t, http.StatusOK, status, "%v", body)
	assert.Equal(t, map[string]any{"idRawExport": "2", "info": "Canceled"}, body["data"])
	assert.Equal(t, map[string]any{"idRawExport": "2", "status": "Canceled by user"}, get("2"))

	// Exports 3 and 4: failures.
	e.do(t, http.MethodPost, "/api/raw/v1/export/create.json", aliceKey, validForm())
	e.do(t, http.MethodPost, "/api/raw/v1/export/create.json", aliceKey, validForm())
	_, err = e.jobs.Apply(ctx, &exportv1.ExportFailed{JobId: "raw-3", OccurredAt: at, Reason: "MinIO unreachable"})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"idRawExport": "3", "status": "Error occurred"}, get("3"))
	_, err = e.jobs.Apply(ctx, &exportv1.ExportFailed{JobId: "raw-4", OccurredAt: at, Reason: mytracker.TooManyLines, Rejected: true})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"idRawExport": "4", "status": "User error occurred", "errorMessage": "Too many lines in one export"}, get("4"))
	e.do(t, http.MethodPost, "/api/raw/v1/export/create.json", aliceKey, validForm())
	_, err = e.jobs.Apply(ctx, &exportv1.ExportFailed{JobId: "raw-5", OccurredAt: at, Reason: mytracker.TooMuchData, Rejected: true})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"idRawExport": "5", "status": "User error occurred", "errorMessage": "Too much export data"}, get("5"))

	notFound := map[string]any{"code": 404.0, "message": "Not Found", "data": map[string]any{"error": map[string]any{"detail": "Raw export request not found"}}}
	for _, q := range []string{"99", "abc", "-1", "18446744073709551616", "99999999999999999999999"} {
		status, body = e.do(t, http.MethodGet, "/api/raw/v1/export/get.json?idRawExport="+q, aliceKey, nil)
		assert.Equal(t, http.StatusNotFound, status)
		assert.Equal(t, notFound, body)
	}
	status, body = e.do(t, http.MethodGet, "/api/raw/v1/export/get.json?idRawExport=1", bobKey, nil)
	assert.Equal(t, http.StatusNotFound, status, "another user's export")
	assert.Equal(t, notFound, body)
	denied := map[string]any{"code": 403.0, "message": "Access denied", "data": nil}
	for _, k := range []string{"", "wrong"} {
		status, body = e.do(t, http.MethodGet, "/api/raw/v1/export/get.json?idRawExport=1", k, nil)
		assert.Equal(t, http.StatusForbidden, status)
		assert.Equal(t, denied, body)
	}
}

func TestCreateValidation(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name   string
		change func(url.Values)
		detail string
	}{
		{"no event", func(v url.Values) { v.Del("event") }, "event"},
		{"unknown event", func(v url.Values) { v.Set("event", "clicks") }, "event"},
		{"no selectors", func(v url.Values) { v.Del("selectors") }, "selectors"},
		{"unknown selector", func(v url.Values) { v.Set("selectors", "id,nope") }, "selectors"},
		{"bad dateFrom", func(v url.Values) { v.Set("dateFrom", "May 1") }, "dateFrom"},
		{"no dateTo", func(v url.Values) { v.Del("dateTo") }, "dateTo"},
		{"dateTo before dateFrom", func(v url.Values) { v.Set("dateTo", "2026-04-01") }, "dateTo"},
		{"bad idApp", func(v url.Values) { v["idApp[]"] = []string{"x"} }, "idApp"},
		{"huge idApp", func(v url.Values) { v["idApp[]"] = []string{"18446744073709551616"} }, "idApp"},
		{"duplicate selector", func(v url.Values) { v.Set("selectors", "id,appId,id") }, "named twice"},
		{"too many selectors", func(v url.Values) { v.Set("selectors", "id,appId,revenue,createdTime,country,eventType") }, "at most 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := validForm()
			tc.change(f)
			status, body := e.do(t, http.MethodPost, "/api/raw/v1/export/create.json", aliceKey, f)
			assert.Equal(t, http.StatusBadRequest, status)
			assert.Contains(t, body["data"].(map[string]any)["error"].(map[string]any)["detail"], tc.detail)
		})
	}
	_, err := e.jobs.Get(t.Context(), "raw-1")
	assert.ErrorIs(t, err, jobstore.ErrNotFound, "no export was created")
}

// TestNumbersAreNeverTakenByOtherDialects: Rebilly client ids that look
// like raw export ids cannot take them, and a number whose id is taken
// anyway (a job written before ids were namespaced) is skipped instead of
// failing the create.
func TestNumbersAreNeverTakenByOtherDialects(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t)
	jobs, srv := e.jobs, e.srv
	for _, id := range []string{"raw-1", "raw-2", "raw-3"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, srv.URL+"/data-exports/"+id, strings.NewReader(`{"name":"n","resource":"events","format":"csv"}`))
		require.NoError(t, err)
		req.Header.Set("REB-APIKEY", aliceKey)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, http.StatusCreated, res.StatusCode)
	}
	// A legacy job holding raw-2.
	legacy := &exportv1.Job{Id: "raw-2", OwnerId: "mallory", Dialect: "rebilly", State: exportv1.JobState_JOB_STATE_PENDING}
	_, err := jobs.Apply(ctx, &exportv1.ExportRequested{JobId: legacy.GetId(), Job: legacy})
	require.NoError(t, err)

	var got []string
	for range 3 {
		status, body := e.do(t, http.MethodPost, "/api/raw/v1/export/create.json", aliceKey, validForm())
		require.Equal(t, http.StatusOK, status, "%v", body)
		got = append(got, body["data"].(map[string]any)["idRawExport"].(string))
	}
	assert.Equal(t, []string{"1", "3", "4"}, got, "raw-2 is skipped, raw-1 and raw-3 were never taken")
	status, _ := e.do(t, http.MethodGet, "/api/raw/v1/export/get.json?idRawExport=2", aliceKey, nil)
	assert.Equal(t, http.StatusNotFound, status, "someone else's job reads as missing")
}

func TestRebillyHeaderIsNotAMyTrackerCredential(t *testing.T) {
	e := newEnv(t)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.srv.URL+"/api/raw/v1/export/create.json", strings.NewReader(validForm().Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("REB-APIKEY", aliceKey)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = res.Body.Close()
	assert.Equal(t, http.StatusForbidden, res.StatusCode)
}
