package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/bus"
)

// The fault tests run Dataport as separate processes and break things under
// it: kill -9, server restarts, storage outages. Each test logs a "figures"
// line (faults injected, jobs run, lost, rows missing or duplicated) that
// docs/RELIABILITY.md quotes.

// figures are what a fault test measured.
type figures struct {
	faults, jobs, lost, rowsChecked, rowErrors int
}

func (f figures) log(t *testing.T, what string) {
	t.Logf("figures %s: faults=%d jobs=%d lost=%d rows_checked=%d rows_missing_or_duplicated=%d",
		what, f.faults, f.jobs, f.lost, f.rowsChecked, f.rowErrors)
}

// natsJS connects the test itself to the bus, to seed data and to count
// events. url may list several servers separated by commas.
func natsJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

const bigRoom = "BIGROOM"

// seedBigRoom adds a public channel with n messages of about size bytes
// each, so that exporting it takes long enough to be interrupted. The
// messages are deterministic, so two exports of the room must be
// byte-identical.
func seedBigRoom(t *testing.T, js jetstream.JetStream, n, size int) {
	t.Helper()
	seedRoom(t, js, bigRoom, n, size)
}

// roomMessageID is the id of the i-th message seedRoom writes to room.
func roomMessageID(room string, i int) string {
	prefix := "big"
	if room != bigRoom {
		prefix = strings.ToLower(room)
	}
	return fmt.Sprintf("%s%07d", prefix, i)
}

// seedRoom is seedBigRoom for a room of any id, so a test can have a big
// room and several smaller ones.
func seedRoom(t *testing.T, js jetstream.JetStream, roomID string, n, size int) {
	t.Helper()
	ctx := t.Context()
	base := time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)
	rooms, err := js.KeyValue(ctx, bus.BucketRooms)
	require.NoError(t, err)
	room, err := proto.Marshal(&sourcev1.Room{Id: roomID, Name: strings.ToLower(roomID), Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL,
		Topic: "fault tests", CreatedAt: timestamppb.New(base)})
	require.NoError(t, err)
	_, err = rooms.Put(ctx, roomID, room)
	require.NoError(t, err)

	subject, err := bus.ChatSubject(roomID)
	require.NoError(t, err)
	filler := strings.Repeat("lorem ipsum dolor sit amet ", size/27+1)[:size]
	var futures []jetstream.PubAckFuture
	for i := range n {
		id := roomMessageID(roomID, i)
		m, err := proto.Marshal(&sourcev1.ChatMessage{
			Id:     id,
			RoomId: roomID,
			Text:   fmt.Sprintf("message %d: %s", i, filler),
			Ts:     timestamppb.New(base.Add(time.Duration(i) * time.Second)),
			User:   &sourcev1.UserRef{Id: "bigwriter", Username: "writer", Name: "Big Writer"},
		})
		require.NoError(t, err)
		f, err := js.PublishAsync(subject, m, jetstream.WithMsgID(id))
		require.NoError(t, err)
		futures = append(futures, f)
		// In windows well under the client's limit of outstanding async
		// publishes: on a loaded machine an R3 cluster acks slowly enough
		// that a burst of thousands stalls the publisher.
		if (i+1)%500 == 0 {
			waitPublished(t, js)
		}
	}
	waitPublished(t, js)
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			require.NoError(t, err)
		}
	}
}

// waitPublished waits for every outstanding async publish of js.
func waitPublished(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		t.Fatal("seeding the big room stalled for a minute")
	}
}

// createRoomExport asks for a JSON export of room as c and returns the job
// id. key, when set, is sent as Idempotency-Key.
func createRoomExport(t *testing.T, s *stack, c credential, room, key string) string {
	t.Helper()
	var created struct {
		Success  bool   `json:"success"`
		ExportID string `json:"exportId"`
	}
	status, _ := post(t, s.gatewayURL+"/api/v1/rooms.export", c, key,
		fmt.Sprintf(`{"rid":%q,"type":"file","format":"json"}`, room), &created)
	require.Equal(t, http.StatusOK, status)
	require.True(t, created.Success)
	require.NotEmpty(t, created.ExportID)
	return created.ExportID
}

// post sends body as c with an optional Idempotency-Key and decodes the
// answer into out when it is JSON.
func post(t *testing.T, url string, c credential, key, body string, out any) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-User-Id", c.UserID)
	req.Header.Set("X-Auth-Token", c.AuthToken)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil {
		require.NoError(t, json.Unmarshal(b, out), "decode POST %s (status %d): %s", url, resp.StatusCode, b)
	}
	return resp.StatusCode, resp.Header
}

// getJob reads a job through the native API; unlike call it returns
// errors, because the gateway may be down while a test polls.
func getJob(ctx context.Context, s *stack, c credential, id string) (nativeJob, error) {
	var job nativeJob
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.gatewayURL+"/v1/exports/"+id, nil)
	if err != nil {
		return job, err
	}
	req.Header.Set("X-User-Id", c.UserID)
	req.Header.Set("X-Auth-Token", c.AuthToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return job, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return job, fmt.Errorf("GET job %s: %s", id, resp.Status)
	}
	return job, json.NewDecoder(resp.Body).Decode(&job)
}

// waitState polls until job id is in state (or any terminal state, which
// fails the check unless it is the one wanted).
func waitState(t *testing.T, s *stack, c credential, id, state string, timeout time.Duration) nativeJob {
	t.Helper()
	var job nativeJob
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		j, err := getJob(t.Context(), s, c, id)
		if !assert.NoError(ct, err) {
			return
		}
		job = j
		assert.Equal(ct, state, j.State, "job %s error: %q", id, j.Error)
	}, timeout, 100*time.Millisecond)
	return job
}

// waitAllCompleted polls every job until all are completed.
func waitAllCompleted(t *testing.T, s *stack, c credential, ids []string, timeout time.Duration) map[string]nativeJob {
	t.Helper()
	jobs := map[string]nativeJob{}
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		for _, id := range ids {
			if jobs[id].State == "completed" {
				continue
			}
			j, err := getJob(t.Context(), s, c, id)
			if !assert.NoError(ct, err) {
				return
			}
			jobs[id] = j
			assert.Equal(ct, "completed", j.State, "job %s error: %q", id, j.Error)
		}
	}, timeout, 200*time.Millisecond)
	return jobs
}

// waitProcessing waits until the exporter is inside job id: the job is
// processing. A small job may be done before a poll sees it processing;
// it has started all the same, so that returns too (logged), and each
// caller checks what it needs unfinished itself. A job that failed or
// was refused fails the test at once, with its state and error, rather
// than after the wait.
func waitProcessing(t *testing.T, s *stack, c credential, id string) {
	t.Helper()
	const wait = 60 * time.Second
	var last nativeJob
	var readErr error
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		last, readErr = getJob(t.Context(), s, c, id)
		if readErr != nil {
			continue
		}
		switch last.State {
		case "processing":
			return
		case "finalizing", "completed":
			t.Logf("job %s was %s before a poll saw it processing", id, last.State)
			return
		case "failed", "rejected", "canceled":
			require.FailNowf(t, "job ended before it was seen processing", "job %s is %s (error %q)", id, last.State, last.Error)
		}
	}
	require.FailNowf(t, "job not processing", "job %s after %s: state %q, error %q, last read error %v", id, wait, last.State, last.Error, readErr)
}

// completedEvents counts ExportCompleted events per job in EXPORT_EVENTS.
func completedEvents(t *testing.T, js jetstream.JetStream) map[string]int {
	t.Helper()
	stream, err := js.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	info, err := stream.Info(t.Context(), jetstream.WithSubjectFilter(bus.StatusFilter(bus.EventCompleted)))
	require.NoError(t, err)
	out := map[string]int{}
	for subj, n := range info.State.Subjects {
		_, id, err := bus.ParseStatusSubject(subj)
		require.NoError(t, err)
		out[id] += int(n)
	}
	return out
}

// mails returns how many emails Mailpit holds that name the job, and how
// many distinct Message-IDs they carry: a notifier killed after the mail
// server accepted a message and before it recorded the send sends it
// again under the same Message-ID (notify.sendOnce), which mail clients
// fold into one.
func mails(t *testing.T, mailpitURL, id string) (n, distinct int) {
	t.Helper()
	resp, err := http.Get(mailpitURL + "/api/v1/search?limit=50&query=" + url.QueryEscape(id))
	require.NoError(t, err)
	defer resp.Body.Close()
	var res struct {
		Total    int `json:"messages_count"`
		Messages []struct {
			MessageID string `json:"MessageID"`
		} `json:"messages"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&res))
	ids := map[string]bool{}
	for _, m := range res.Messages {
		ids[m.MessageID] = true
	}
	return res.Total, len(ids)
}

// checkBigRoomFile downloads the job's file and checks it holds every
// message of the big room once, in order, and matches the recorded hash.
// It returns the number of missing or duplicated rows.
func checkBigRoomFile(t *testing.T, job nativeJob, n int) int {
	t.Helper()
	return checkRoomFile(t, job, bigRoom, n)
}

// checkRoomFile is checkBigRoomFile for a room seedRoom wrote.
func checkRoomFile(t *testing.T, job nativeJob, room string, n int) int {
	t.Helper()
	require.Len(t, job.Files, 1)
	body := download(t, job.Files[0].URL)
	sum := sha256.Sum256(body)
	assert.Equal(t, job.Files[0].SHA256, hex.EncodeToString(sum[:]), "the file is the one the exporter hashed")
	var doc struct {
		Messages []struct {
			ID string `json:"_id"`
		} `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(body, &doc))
	seen := map[string]int{}
	for _, m := range doc.Messages {
		seen[m.ID]++
	}
	bad := 0
	for i := range n {
		id := roomMessageID(room, i)
		if c := seen[id]; c == 0 {
			bad++
		} else {
			bad += c - 1
		}
		delete(seen, id)
	}
	for _, c := range seen {
		bad += c // rows that are not the room's
	}
	assert.Zero(t, bad, "rows missing or duplicated")
	assert.Len(t, doc.Messages, n)
	return bad
}

// logResume tells whether a redelivered room task resumed from a
// checkpoint or started over; both must give the clean run's bytes.
func logResume(t *testing.T, exporterLog string) {
	t.Helper()
	if m := regexp.MustCompile(`"msg":"resuming from message[^"]*"`).FindString(exporterLog); m != "" {
		t.Logf("redelivered task resumed from a checkpoint: %s", m)
		return
	}
	t.Logf("redelivered task started its part over (no checkpoint yet)")
}

// jobIDInLog finds the exporter's log line for a finished part.
var jobIDInLog = regexp.MustCompile(`"msg":"part uploaded"[^\n]*"job_id":"([A-Za-z0-9]+)"`)

func partUploaded(id string) *regexp.Regexp {
	return regexp.MustCompile(`"msg":"part uploaded"[^\n]*"job_id":"` + regexp.QuoteMeta(id) + `"`)
}

// TestScaleOut runs three exporter processes on one durable consumer: thirty
// jobs are spread over all three and every one completes.
func TestScaleOut(t *testing.T) {
	t.Parallel()
	s := startStackWith(t, stackOptions{exporters: 3, env: []string{"DATAPORT_EXPORTER_CONCURRENCY=1"}})
	admin := s.user(t, "admin")
	// Every room the admin may export, round robin: private groups and
	// direct rooms it is not in are refused (400) and skipped.
	rooms := make([]string, 0, len(s.seed.Rooms))
	for id := range s.seed.Rooms {
		rooms = append(rooms, id)
	}
	slices.Sort(rooms)
	var ids []string
	roomOf := map[string]string{}
	for i := 0; len(ids) < 30; i++ {
		require.Less(t, i, 30*len(rooms), "no exportable room")
		var created struct {
			ExportID string `json:"exportId"`
		}
		status, _ := post(t, s.gatewayURL+"/api/v1/rooms.export", admin, "",
			fmt.Sprintf(`{"rid":%q,"type":"file","format":"json"}`, rooms[i%len(rooms)]), &created)
		if status == http.StatusOK {
			ids = append(ids, created.ExportID)
			roomOf[created.ExportID] = rooms[i%len(rooms)]
		}
	}
	jobs := waitAllCompleted(t, s, admin, ids, 3*time.Minute)

	took := map[string]int{}
	perJob := map[string]int{}
	for _, p := range s.exporters {
		for _, m := range jobIDInLog.FindAllStringSubmatch(p.logText(t), -1) {
			took[p.name]++
			perJob[m[1]]++
		}
	}
	t.Logf("jobs per exporter: %v", took)
	for _, p := range s.exporters {
		assert.Positive(t, took[p.name], "%s took no job", p.name)
	}
	lost, rowErrors, rowsChecked := 0, 0, 0
	for _, id := range ids {
		assert.Equal(t, 1, perJob[id], "job %s exported exactly once", id)
		if jobs[id].State != "completed" {
			lost++
		}
		want := s.seed.Rooms[roomOf[id]].Messages
		rowsChecked += want
		if assert.Len(t, jobs[id].Files, 1) && !assert.Equal(t, want, jobs[id].Files[0].Records, "rows of %s", roomOf[id]) {
			rowErrors += max(want-jobs[id].Files[0].Records, jobs[id].Files[0].Records-want)
		}
	}
	js := natsJS(t, s.natsURL)
	for id, n := range completedEvents(t, js) {
		assert.Equal(t, 1, n, "one completion event for %s", id)
	}
	figures{faults: 0, jobs: len(ids), lost: lost, rowsChecked: rowsChecked, rowErrors: rowErrors}.log(t, "scale-out")
}

const (
	bigMessages    = 20000
	bigMessageSize = 2000
)

// TestCrashesAndOutages breaks one running stack in turn: kill -9 of an
// exporter, of the archiver and the notifier, a NATS restart, MinIO gone
// for 30 s and a gateway crash while clients poll. After each fault every
// job completes, the big room's file is byte-identical to a clean run, and
// in the end every job has exactly one completion event and one email.
func TestCrashesAndOutages(t *testing.T) {
	t.Parallel()
	// The default configuration (deliveries, quotas, dependency wait) but
	// for the ack waits: each kill -9 here is followed by one ack wait
	// before the task or event comes back, and the default 30 s would add
	// two minutes without testing more. TestFaultsWithTheDefaults kills
	// with the default ack waits.
	s := startStackWith(t, stackOptions{defaults: true, env: []string{"DATAPORT_TASK_ACK_WAIT=5s", "DATAPORT_EVENT_ACK_WAIT=5s"}})
	js := natsJS(t, s.natsURL)
	seedBigRoom(t, js, bigMessages, bigMessageSize)
	admin := s.user(t, "admin")
	top := t
	var f figures
	var all []string
	var notifierKilled string // the job whose email the notifier was killed sending
	create := func(room string) string {
		id := createRoomExport(t, s, admin, room, "")
		all = append(all, id)
		return id
	}

	// A clean run gives the reference file.
	clean := waitState(t, s, admin, create(bigRoom), "completed", 2*time.Minute)
	require.Len(t, clean.Files, 1)
	f.rowErrors += checkBigRoomFile(t, clean, bigMessages)
	f.rowsChecked += bigMessages
	want := clean.Files[0].SHA256
	sameAsClean := func(t *testing.T, job nativeJob) {
		t.Helper()
		require.Len(t, job.Files, 1)
		assert.Equal(t, want, job.Files[0].SHA256, "byte-identical to the clean run")
		f.rowErrors += checkBigRoomFile(t, job, bigMessages)
		f.rowsChecked += bigMessages
	}

	t.Run("exporter killed mid-export", func(t *testing.T) {
		id := create(bigRoom)
		waitProcessing(t, s, admin, id)
		s.exporters[0].kill()
		f.faults++
		before := len(s.exporters[0].logText(t))
		assert.NotRegexp(t, partUploaded(id), s.exporters[0].logText(t), "killed before the part was uploaded")
		s.exporters[0].restart(t)
		sameAsClean(t, waitState(t, s, admin, id, "completed", 2*time.Minute))
		after := s.exporters[0].logText(t)[before:]
		assert.Regexp(t, partUploaded(id), after, "the restarted exporter did the redelivered task")
		logResume(t, after)
	})

	t.Run("exporter killed after a checkpoint resumes", func(t *testing.T) {
		checkpoints, err := js.KeyValue(t.Context(), bus.BucketCheckpoints)
		require.NoError(t, err)
		id := create(bigRoom)
		// The first part's checkpoint is written once MinIO holds its bytes.
		require.Eventually(t, func() bool {
			_, err := checkpoints.Get(t.Context(), id+".0")
			return err == nil
		}, time.Minute, 5*time.Millisecond)
		s.exporters[0].kill()
		f.faults++
		before := len(s.exporters[0].logText(t))
		s.exporters[0].restart(t)
		sameAsClean(t, waitState(t, s, admin, id, "completed", 2*time.Minute))
		after := s.exporters[0].logText(t)[before:]
		assert.Regexp(t, `"msg":"resuming from message [0-9]+"[^\n]*"job_id":"`+id+`"`, after, "the redelivered task continued from its checkpoint")
		logResume(t, after)
	})

	t.Run("archiver and notifier killed mid-work", func(t *testing.T) {
		id := create(bigRoom)
		// The archiver is killed while it verifies the part (finalizing) or,
		// if that moment is missed, as soon as the job completes; the
		// notifier as soon as the job completes, mid-send at the latest.
		var state string
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			j, err := getJob(t.Context(), s, admin, id)
			if assert.NoError(ct, err) {
				state = j.State
				assert.Contains(ct, []string{"finalizing", "completed"}, j.State)
			}
		}, 2*time.Minute, 5*time.Millisecond)
		s.archiver.kill()
		t.Logf("archiver killed while the job was %s", state)
		s.archiver.restart(t)
		waitState(t, s, admin, id, "completed", 2*time.Minute)
		s.notifier.kill()
		f.faults += 2
		s.notifier.restart(t)
		sameAsClean(t, waitState(t, s, admin, id, "completed", time.Minute))
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			n, distinct := mails(t, s.mailpitURL, id)
			assert.GreaterOrEqual(ct, n, 1, "the email is sent")
			assert.Equal(ct, 1, distinct, "one email, whatever the kill repeated")
		}, time.Minute, 200*time.Millisecond)
		notifierKilled = id
	})

	t.Run("NATS restarted mid-export", func(t *testing.T) {
		big := create(bigRoom)
		others := []string{create("GENERAL"), create(bigRoom)}
		waitProcessing(t, s, admin, big)
		s.nats.Restart(top) // the restarted server must outlive this subtest
		f.faults++
		jobs := waitAllCompleted(t, s, admin, append([]string{big}, others...), 3*time.Minute)
		sameAsClean(t, jobs[big])
		sameAsClean(t, jobs[others[1]])
	})

	t.Run("MinIO stopped for 30s mid-upload", func(t *testing.T) {
		id := create(bigRoom)
		waitProcessing(t, s, admin, id)
		s.minio.Stop()
		f.faults++
		before := len(s.exporters[0].logText(t))
		// The outage itself is the scenario: 30 s without storage.
		select {
		case <-time.After(30 * time.Second):
		case <-t.Context().Done():
			return
		}
		s.minio.Restart(t)
		sameAsClean(t, waitState(t, s, admin, id, "completed", 3*time.Minute))
		after := s.exporters[0].logText(t)[before:]
		assert.Contains(t, after, "retrying", "the exporter met the outage and retried")
		logResume(t, after)
		uploads, err := s.minio.Store.ListIncompleteUploads(t.Context(), "dataport-exports", "jobs/")
		require.NoError(t, err)
		assert.Empty(t, uploads, "no orphaned multipart uploads")
	})

	t.Run("gateway killed while clients poll", func(t *testing.T) {
		ids := []string{create(bigRoom), create("GENERAL")}
		waitProcessing(t, s, admin, ids[0])
		s.gateway.kill()
		f.faults++
		s.gateway.restart(t)
		waitHTTP(t, s.gatewayURL+"/readyz")
		jobs := waitAllCompleted(t, s, admin, ids, 2*time.Minute)
		sameAsClean(t, jobs[ids[0]])
		var list struct {
			Total int `json:"total"`
		}
		require.Equal(t, http.StatusOK, call(t, http.MethodGet, s.gatewayURL+"/v1/exports", &admin, nil, &list))
		assert.Equal(t, len(all), list.Total, "every job created is still there")
	})

	// Whatever broke, every job completed once and was mailed once.
	jobs := waitAllCompleted(t, s, admin, all, time.Minute)
	completed := completedEvents(t, js)
	for _, id := range all {
		if jobs[id].State != "completed" {
			f.lost++
		}
		assert.Equal(t, 1, completed[id], "one completion event for %s", id)
		n, distinct := mails(t, s.mailpitURL, id)
		if id == notifierKilled {
			// Killed mid-send, the notifier may send once more under the
			// same Message-ID (notify.sendOnce's documented window).
			assert.Contains(t, []int{1, 2}, n, "one email for %s, or one duplicate", id)
			assert.Equal(t, 1, distinct, "a duplicate is the same message for %s", id)
			continue
		}
		assert.Equal(t, 1, n, "one email for %s", id)
	}
	f.jobs = len(all)
	f.log(t, "crashes-and-outages")
}
