package e2e

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/objects"
)

// The tests in this file run what a deployment runs: default deliveries,
// ack waits and quotas (stackOptions.defaults), on a nats-server process
// that can be stopped and killed, with two gateway replicas.

const (
	// midRoom is exported many times at once, so it is smaller than the
	// big room: 20 exports of it are 20 × 6 MB of JSON.
	midRoom         = "MIDROOM"
	midMessages     = 6000
	midMessageSize  = 800
	k8sGracePeriod  = 30 * time.Second // terminationGracePeriodSeconds' default
	perUserDefault  = 5                // DATAPORT_MAX_CONCURRENT_EXPORTS_PER_USER's default
	defaultsTimeout = 4 * time.Minute
)

// jobTracker polls jobs until each is terminal and notes when it was
// first seen completed.
type jobTracker struct {
	created  map[string]time.Time
	finished map[string]time.Time
	jobs     map[string]nativeJob
	owner    map[string]credential
}

func newJobTracker() *jobTracker {
	return &jobTracker{created: map[string]time.Time{}, finished: map[string]time.Time{},
		jobs: map[string]nativeJob{}, owner: map[string]credential{}}
}

func (jt *jobTracker) add(id string, c credential) {
	jt.created[id], jt.owner[id] = time.Now(), c
}

// wait polls every job through base until all are completed.
func (jt *jobTracker) wait(t *testing.T, base string, timeout time.Duration) {
	t.Helper()
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		for id := range jt.created {
			if _, ok := jt.finished[id]; ok {
				continue
			}
			j, err := getJobAt(t.Context(), base, jt.owner[id], id)
			if !assert.NoError(ct, err) {
				return
			}
			jt.jobs[id] = j
			if j.State == "completed" {
				jt.finished[id] = time.Now()
			}
			assert.Equal(ct, "completed", j.State, "job %s error: %q", id, j.Error)
		}
	}, timeout, 200*time.Millisecond)
}

func (jt *jobTracker) took(id string) time.Duration { return jt.finished[id].Sub(jt.created[id]) }

// getJobAt is getJob against any gateway base URL (a replica or the load
// balancer).
func getJobAt(ctx context.Context, base string, c credential, id string) (nativeJob, error) {
	var job nativeJob
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/exports/"+id, nil)
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

// createUnderQuota creates an export of room as c. With the default quota
// a slot is released just after the projection shows the job ended, so a
// create right after may get 429: it waits as its Retry-After says, as a
// client does, and logs it.
func createUnderQuota(t *testing.T, s *stack, c credential, room string) string {
	t.Helper()
	body := fmt.Sprintf(`{"rid":%q,"type":"file","format":"json"}`, room)
	deadline := time.Now().Add(time.Minute)
	for {
		var created struct {
			ExportID string `json:"exportId"`
		}
		status, h := post(t, s.gatewayURL+"/api/v1/rooms.export", c, "", body, &created)
		if status == http.StatusOK {
			require.NotEmpty(t, created.ExportID)
			return created.ExportID
		}
		require.Equal(t, http.StatusTooManyRequests, status, "create as %s", c.Username)
		require.True(t, time.Now().Before(deadline), "quota of %s not released within a minute", c.Username)
		wait, _ := strconv.Atoi(h.Get("Retry-After"))
		t.Logf("create as %s: 429, Retry-After %ds", c.Username, wait)
		time.Sleep(time.Duration(max(wait, 1)) * time.Second)
	}
}

// addAdmins writes n more users with the admin role, as the host
// platform would, and returns their credentials.
func addAdmins(t *testing.T, js jetstream.JetStream, n int) []credential {
	t.Helper()
	var out []credential
	for i := range n {
		name := fmt.Sprintf("admin%d", i+2)
		c := credential{Username: name, Email: name + "@dataport.local", UserID: "e2e" + name, AuthToken: randomKey(t), Roles: []string{"admin", "user"}}
		sum := sha256.Sum256([]byte(c.AuthToken))
		bustest.Put(t, js, bus.BucketUsers, c.UserID, &sourcev1.User{
			Id: c.UserID, Username: name, Name: "Admin " + name, Email: c.Email, Roles: c.Roles,
			AuthTokenSha256: hex.EncodeToString(sum[:]), CreatedAt: timestamppb.Now(),
		})
		out = append(out, c)
	}
	return out
}

// bigAssets are the sizes of the files seedBigAssets uploads: 240 MiB in
// all, what a 2-core CI machine zips in some seconds. The .bin files are
// deflated by the archiver, the .png ones stored.
var bigAssets = []struct {
	name string
	size int64
}{
	{"recording-1.bin", 48 << 20}, {"recording-2.bin", 48 << 20}, {"recording-3.bin", 48 << 20},
	{"recording-4.bin", 48 << 20}, {"photo-1.png", 24 << 20}, {"photo-2.png", 24 << 20},
}

// seedBigAssets gives user u a room with one message of theirs per big
// asset, attaching it, and uploads the assets (pseudo-random bytes) to the
// assets bucket. It returns each asset's SHA-256 by its path in a data
// download.
func seedBigAssets(t *testing.T, s *stack, js jetstream.JetStream, u credential) map[string]string {
	t.Helper()
	const roomID = "FILESROOM"
	base := time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	bustest.Put(t, js, bus.BucketRooms, roomID, &sourcev1.Room{Id: roomID, Name: "files-room",
		Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE, CreatedAt: timestamppb.New(base)})
	bustest.Put(t, js, bus.BucketMemberships, u.UserID+"."+roomID, &sourcev1.Membership{
		UserId: u.UserID, RoomId: roomID, Roles: []string{"owner"}, JoinedAt: timestamppb.New(base)})
	subject, err := bus.ChatSubject(roomID)
	require.NoError(t, err)
	sums := map[string]string{}
	for i, a := range bigAssets {
		fileID := fmt.Sprintf("bigfile%d", i)
		key := "assets/" + fileID + "/" + a.name
		ct := "application/octet-stream"
		if strings.HasSuffix(a.name, ".png") {
			ct = "image/png"
		}
		var seed [32]byte
		seed[0] = byte(i)
		h := sha256.New()
		body := io.TeeReader(io.LimitReader(rand.NewChaCha8(seed), a.size), h)
		_, err := s.minio.Store.Upload(t.Context(), "dataport-assets", key, body, ct)
		require.NoError(t, err)
		sums["assets/"+fileID+"-"+a.name] = hex.EncodeToString(h.Sum(nil))
		m, err := proto.Marshal(&sourcev1.ChatMessage{
			Id: fmt.Sprintf("filesmsg%d", i), RoomId: roomID, Text: "here is " + a.name,
			Ts:   timestamppb.New(base.Add(time.Duration(i) * time.Minute)),
			User: &sourcev1.UserRef{Id: u.UserID, Username: u.Username, Name: u.Username},
			Attachments: []*sourcev1.Attachment{{FileId: fileID, Name: a.name, ContentType: ct,
				Size: uint64(a.size), ObjectKey: key, Title: a.name}},
		})
		require.NoError(t, err)
		_, err = js.Publish(t.Context(), subject, m)
		require.NoError(t, err)
	}
	return sums
}

// checkDataDownloadZip downloads the job's zip to a temporary file,
// checks it against the job's SHA-256, opens it and checks every asset
// entry against the uploaded bytes and the manifest. It returns the
// entries checked and those missing, duplicated or wrong.
func checkDataDownloadZip(t *testing.T, job nativeJob, assets map[string]string) (checked, bad int) {
	t.Helper()
	resp, err := http.Get(job.Files[0].URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	path := filepath.Join(t.TempDir(), "download.zip")
	out, err := os.Create(path)
	require.NoError(t, err)
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), resp.Body)
	require.NoError(t, err)
	require.NoError(t, out.Close())
	assert.Equal(t, job.Files[0].SHA256, hex.EncodeToString(h.Sum(nil)), "the zip is the one the archiver hashed")

	zr, err := zip.OpenReader(path)
	require.NoError(t, err)
	defer zr.Close()
	seen := map[string]int{}
	var manifest struct {
		Parts []struct {
			Files []struct {
				Name   string `json:"name"`
				SHA256 string `json:"sha256"`
			} `json:"files"`
		} `json:"parts"`
	}
	for _, e := range zr.File {
		r, err := e.Open()
		require.NoError(t, err)
		eh := sha256.New()
		var buf bytes.Buffer
		var w io.Writer = eh
		if e.Name == "manifest.json" {
			w = io.MultiWriter(eh, &buf)
		}
		_, err = io.Copy(w, r) // also checks the entry's CRC-32
		require.NoError(t, err, "entry %s", e.Name)
		r.Close()
		if e.Name == "manifest.json" {
			require.NoError(t, json.Unmarshal(buf.Bytes(), &manifest))
			continue
		}
		if want, ok := assets[e.Name]; ok {
			seen[e.Name]++
			checked++
			if !assert.Equal(t, want, hex.EncodeToString(eh.Sum(nil)), "asset %s", e.Name) {
				bad++
			}
		}
	}
	inManifest := map[string]string{}
	for _, p := range manifest.Parts {
		for _, mf := range p.Files {
			inManifest[mf.Name] = mf.SHA256
		}
	}
	for name, want := range assets {
		if seen[name] != 1 {
			bad++
		}
		assert.Equal(t, 1, seen[name], "asset %s in the zip once", name)
		assert.Equal(t, want, inManifest[name], "asset %s in the manifest", name)
	}
	return checked, bad
}

// noBurnedDelivery checks an exporter's log of a fault for attempts
// that failed and were handed back (a delivery used up), and logs how
// it met the fault.
func noBurnedDelivery(t *testing.T, exporterLog string) {
	t.Helper()
	counts := map[string]int{}
	const burned = "message failed; retrying"
	for line := range strings.Lines(exporterLog) {
		for _, msg := range []string{burned, "dependency unavailable", "handing message back on shutdown", "resuming from message"} {
			if !strings.Contains(line, `"msg":"`+msg) {
				continue
			}
			counts[msg]++
			if msg == burned {
				// The failure's own words say which error was not taken
				// for the dependency's state.
				t.Logf("burned a delivery: %s", strings.TrimSpace(line))
			}
		}
	}
	t.Logf("exporter log during the fault: %v", counts)
	assert.Zero(t, counts[burned], "the fault burned no delivery")
}

// TestFaultsWithTheDefaults breaks one stack running the default
// configuration in turn: NATS stopped with SIGTERM and started again on
// its store, nats-server killed -9 with 20 exports active, one of two
// gateway replicas killed -9 under polling load behind a retrying load
// balancer, the notifier killed between the SMTP server's accept and its
// record, and a rolling restart of every service during 10 exports. After
// each, every job completes, every file is the clean run's to the byte
// with every record once.
func TestFaultsWithTheDefaults(t *testing.T) {
	t.Parallel()
	smtp := startSMTPReceiver(t)
	s := startStackWith(t, stackOptions{natsProcess: true, gateways: 2, defaults: true,
		env: []string{"DATAPORT_SMTP_PORT=" + smtp.port()}})
	js := natsJS(t, s.natsURL)
	seedBigRoom(t, js, bigMessages, bigMessageSize)
	seedRoom(t, js, midRoom, midMessages, midMessageSize)
	// rooms.export takes the admin role (mail-messages), and the default
	// quota allows 5 unfinished exports per user: 20 at once takes four.
	admin := s.user(t, "admin")
	users := append([]credential{admin}, addAdmins(t, js, 3)...)
	var f figures
	all := newJobTracker()
	track := func(jt *jobTracker, c credential, room string) string {
		id := createUnderQuota(t, s, c, room)
		jt.add(id, c)
		all.add(id, c)
		return id
	}

	// Clean runs give the reference files and the time a batch of 10
	// big-room exports takes undisturbed.
	clean := newJobTracker()
	for i := range 10 {
		track(clean, users[i%2], bigRoom)
	}
	midClean := track(clean, users[2], midRoom)
	clean.wait(t, s.gatewayURL, defaultsTimeout)
	wantMid := clean.jobs[midClean].Files[0].SHA256
	f.rowErrors += checkRoomFile(t, clean.jobs[midClean], midRoom, midMessages)
	f.rowsChecked += midMessages
	var wantBig string
	var cleanBatch time.Duration
	for id, j := range clean.jobs {
		if id == midClean {
			continue
		}
		if wantBig == "" {
			wantBig = j.Files[0].SHA256
		}
		assert.Equal(t, wantBig, j.Files[0].SHA256, "clean exports of one room are identical")
		f.rowErrors += checkBigRoomFile(t, j, bigMessages)
		f.rowsChecked += bigMessages
		cleanBatch = max(cleanBatch, clean.took(id))
	}
	t.Logf("clean: batch of 10 big-room exports (and a mid-room one) %v", cleanBatch.Round(time.Millisecond))

	// scenario logs a subtest's own figures when it ends.
	scenario := func(t *testing.T, what string, jt *jobTracker) {
		start := f
		t.Cleanup(func() {
			d := figures{faults: f.faults - start.faults, jobs: len(jt.created),
				rowsChecked: f.rowsChecked - start.rowsChecked, rowErrors: f.rowErrors - start.rowErrors}
			for id := range jt.created {
				if jt.jobs[id].State != "completed" {
					d.lost++
				}
			}
			d.log(t, what)
		})
	}

	sameAs := func(t *testing.T, jt *jobTracker, id, room string, n int, want string) {
		t.Helper()
		j := jt.jobs[id]
		require.Len(t, j.Files, 1)
		assert.Equal(t, want, j.Files[0].SHA256, "job %s byte-identical to the clean run", id)
		f.rowErrors += checkRoomFile(t, j, room, n)
		f.rowsChecked += n
	}

	t.Run("NATS stopped with SIGTERM and started again mid-export", func(t *testing.T) {
		jt := newJobTracker()
		scenario(t, "nats-sigterm-restart", jt)
		big := track(jt, admin, bigRoom)
		mid := track(jt, users[1], midRoom)
		waitProcessing(t, s, admin, big)
		before := len(s.exporters[0].logText(t))
		stopped := time.Now()
		require.True(t, s.natsProc.stopWithin(k8sGracePeriod), "nats-server exited on SIGTERM")
		s.natsProc.start(t)
		s.natsProc.waitReady(t)
		f.faults++
		t.Logf("nats-server down %v", time.Since(stopped).Round(time.Millisecond))
		jt.wait(t, s.gatewayURL, defaultsTimeout)
		sameAs(t, jt, big, bigRoom, bigMessages, wantBig)
		sameAs(t, jt, mid, midRoom, midMessages, wantMid)
		noBurnedDelivery(t, s.exporters[0].logText(t)[before:])
	})

	t.Run("nats-server killed -9 with 20 exports active", func(t *testing.T) {
		jt := newJobTracker()
		scenario(t, "nats-kill-20-exports", jt)
		var ids []string
		for _, u := range users {
			for range perUserDefault {
				ids = append(ids, track(jt, u, midRoom))
			}
		}
		waitProcessing(t, s, admin, ids[0])
		active := 0
		for _, id := range ids {
			if j, err := getJob(t.Context(), s, jt.owner[id], id); err == nil && j.State != "completed" {
				active++
			}
		}
		before := len(s.exporters[0].logText(t))
		s.natsProc.kill()
		killed := time.Now()
		f.faults++
		t.Logf("nats-server killed with %d of %d exports unfinished", active, len(ids))
		assert.GreaterOrEqual(t, active, 15, "most of the 20 exports were still running")
		s.natsProc.start(t)
		s.natsProc.waitReady(t)
		jt.wait(t, s.gatewayURL, defaultsTimeout)
		t.Logf("all 20 completed %v after the kill", time.Since(killed).Round(time.Millisecond))
		for _, id := range ids {
			sameAs(t, jt, id, midRoom, midMessages, wantMid)
		}
		noBurnedDelivery(t, s.exporters[0].logText(t)[before:])
	})

	t.Run("one of two gateways killed -9 under polling load", func(t *testing.T) {
		lb := startLoadBalancer(t, s.gatewayURLs)
		jt := newJobTracker()
		scenario(t, "gateway-replica-killed", jt)
		var ids []string
		for i := range 6 {
			ids = append(ids, track(jt, users[i%3], midRoom))
		}
		// Clients poll every job and the listing through the balancer.
		ctx, stop := context.WithCancel(t.Context())
		var polls, bad atomic.Int64
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				for n := 0; ctx.Err() == nil; n++ {
					id := ids[(i+n)%len(ids)]
					_, err := getJobAt(ctx, lb.URL, jt.owner[id], id)
					if ctx.Err() != nil {
						return
					}
					polls.Add(1)
					if err != nil {
						bad.Add(1)
						t.Logf("client saw: %v", err)
					}
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
		waitProcessing(t, s, jt.owner[ids[0]], ids[0])
		time.Sleep(time.Second)
		victim := s.gateways[1]
		victim.kill()
		f.faults++
		time.Sleep(3 * time.Second) // clients keep polling with one replica gone
		victim.start(t)
		victim.waitReady(t)
		jt.wait(t, lb.URL, defaultsTimeout)
		time.Sleep(time.Second) // and with both back
		stop()
		wg.Wait()
		t.Logf("polls %d, load balancer retries %d, failures a client saw %d", polls.Load(), lb.retries.Load(), bad.Load())
		assert.Empty(t, lb.failures(), "no client saw a 5xx or no answer beyond the balancer's one retry")
		assert.Zero(t, bad.Load())
		assert.Positive(t, lb.retries.Load(), "the kill was met by requests")
		for _, id := range ids {
			sameAs(t, jt, id, midRoom, midMessages, wantMid)
		}
	})

	t.Run("notifier killed between the SMTP server's accept and its record", func(t *testing.T) {
		jt := newJobTracker()
		scenario(t, "notifier-smtp-window", jt)
		id := track(jt, admin, midRoom)
		killed := make(chan struct{})
		smtp.onNextAccept(id, func() {
			s.notifier.kill()
			close(killed)
		})
		select {
		case <-killed:
		case <-time.After(2 * time.Minute):
			t.Fatal("the job's email never reached the SMTP server")
		}
		f.faults++
		s.notifier.start(t)
		s.notifier.waitReady(t)
		jt.wait(t, s.gatewayURL, defaultsTimeout)
		sameAs(t, jt, id, midRoom, midMessages, wantMid)
		// The redelivered event (after the default event ack wait) finds
		// the send claimed by its own stream sequence, takes it over and
		// sends again: the one duplicate the notifier allows.
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			assert.Equal(ct, 2, smtp.count(id), "the email again after the notifier restarted")
		}, 2*time.Minute, 200*time.Millisecond)
		time.Sleep(2 * time.Second)
		assert.Equal(t, 2, smtp.count(id), "at most one duplicate")
	})

	t.Run("archiver killed -9 while zipping a big data download", func(t *testing.T) {
		u := users[3]
		assets := seedBigAssets(t, s, js, u)
		var first dataDownload
		require.Equal(t, http.StatusOK, call(t, http.MethodGet, s.gatewayURL+"/api/v1/users.requestDataDownload?fullExport=false", &u, nil, &first))
		require.True(t, first.Requested)
		id := first.ExportOperation.ID
		jt := newJobTracker()
		scenario(t, "archiver-killed-zipping", jt)
		jt.add(id, u)
		all.add(id, u)
		// The archive's multipart upload appears once zipping has begun.
		prefix := objects.FilesPrefix(id)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			ups, err := s.minio.Store.ListIncompleteUploads(t.Context(), "dataport-exports", prefix)
			if assert.NoError(ct, err) {
				assert.NotEmpty(ct, ups, "zipping has started")
			}
		}, 3*time.Minute, 50*time.Millisecond)
		time.Sleep(time.Second)
		j, err := getJob(t.Context(), s, u, id)
		require.NoError(t, err)
		require.Equal(t, "finalizing", j.State, "still zipping when killed")
		s.archiver.kill()
		killed := time.Now()
		f.faults++
		s.archiver.start(t)
		s.archiver.waitReady(t)
		jt.wait(t, s.gatewayURL, defaultsTimeout)
		t.Logf("archive completed %v after the kill", time.Since(killed).Round(time.Millisecond))
		job := jt.jobs[id]
		require.Len(t, job.Files, 1)
		checked, bad := checkDataDownloadZip(t, job, assets)
		f.rowsChecked += checked
		f.rowErrors += bad
		ups, err := s.minio.Store.ListIncompleteUploads(t.Context(), "dataport-exports", prefix)
		require.NoError(t, err)
		t.Logf("zip of %.0f MiB verified (%d assets); %d unfinished upload of the killed attempt left to the stale-upload sweeper",
			float64(job.Files[0].Size)/(1<<20), len(assets), len(ups))
		assert.LessOrEqual(t, len(ups), 1, "only the killed attempt's upload is left")
	})

	t.Run("rolling restart of every service during 10 exports", func(t *testing.T) {
		jt := newJobTracker()
		scenario(t, "rolling-restart", jt)
		var ids []string
		for i := range 10 {
			ids = append(ids, track(jt, users[i%2], bigRoom))
		}
		waitProcessing(t, s, users[0], ids[0])
		unfinished := func() int {
			n := 0
			for _, id := range ids {
				if j, err := getJob(t.Context(), s, jt.owner[id], id); err != nil || j.State != "completed" {
					n++
				}
			}
			return n
		}
		// One process at a time, as a Deployment's rolling update does:
		// SIGTERM, wait for it to exit (within the grace period), start the
		// new one and wait for it to be ready before the next. The workers
		// go first, while the exports are in full flight.
		order := append(append([]*process{}, s.exporters...), s.recordExporters...)
		order = append(order, s.archiver, s.notifier)
		order = append(order, s.gateways...)
		for _, p := range order {
			busy := unfinished()
			began := time.Now()
			assert.True(t, p.stopWithin(k8sGracePeriod), "%s exited within the grace period", p.name)
			exited := time.Since(began)
			p.start(t)
			p.waitReady(t)
			t.Logf("restarted %s with %d of 10 exports unfinished: exited after %v, ready after %v",
				p.name, busy, exited.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
			if p == s.exporters[0] || p == s.archiver {
				assert.Positive(t, busy, "%s restarted while exports ran", p.name)
			}
			f.faults++
		}
		jt.wait(t, s.gatewayURL, defaultsTimeout)
		var longest time.Duration
		for _, id := range ids {
			longest = max(longest, jt.took(id))
			assert.LessOrEqual(t, jt.took(id), cleanBatch+k8sGracePeriod, "job %s stretched by at most the grace period", id)
			sameAs(t, jt, id, bigRoom, bigMessages, wantBig)
		}
		t.Logf("rolling restart: longest job %v, clean batch %v", longest.Round(time.Millisecond), cleanBatch.Round(time.Millisecond))
	})

	// Whatever broke, every job completed once and was mailed once, but
	// for the one duplicate of the notifier scenario.
	all.wait(t, s.gatewayURL, time.Minute)
	completed := completedEvents(t, js)
	duplicates := 0
	for id, j := range all.jobs {
		if j.State != "completed" {
			f.lost++
		}
		assert.Equal(t, 1, completed[id], "one completion event for %s", id)
		n := smtp.count(id)
		assert.Contains(t, []int{1, 2}, n, "one email for %s, or one duplicate", id)
		duplicates += max(n-1, 0)
	}
	assert.LessOrEqual(t, duplicates, 1, "only the notifier scenario sends a duplicate")
	f.jobs = len(all.jobs)
	t.Logf("duplicate emails: %d", duplicates)
	f.log(t, "faults-with-the-defaults")
}
