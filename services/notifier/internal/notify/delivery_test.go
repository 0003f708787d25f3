package notify_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/notifier/internal/notify"
	"dataport.dev/services/notifier/internal/smtptest"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

const (
	exportBucket  = "dataport-exports"
	webhookSecret = "test-webhook-secret"
)

// startWithJobs runs a notifier that reads job records, room-mail bodies
// from a real MinIO and, when hooks is set, calls webhooks.
func startWithJobs(t *testing.T, topo bus.Topology, hooks *notify.WebhookConfig, mods ...func(*setup)) (*env, *blob.Store) {
	t.Helper()
	mio := blobtest.Start(t)
	require.NoError(t, mio.Store.EnsureBucket(t.Context(), exportBucket))
	mods = append([]func(*setup){func(s *setup) {
		s.cfg.Jobs, s.cfg.Objects, s.cfg.Bucket = s.jobs, mio.Store, exportBucket
		if hooks != nil {
			w, err := notify.NewWebhooks(*hooks)
			require.NoError(t, err)
			s.cfg.Webhooks = w
		}
	}}, mods...)
	return start(t, topo, mods...), mio.Store
}

func (e *env) putJob(t *testing.T, j *exportv1.Job) {
	t.Helper()
	data, err := proto.Marshal(j)
	require.NoError(t, err)
	_, err = e.jobs.Put(t.Context(), j.GetId(), data)
	require.NoError(t, err)
}

// notifiedEvents returns the job's NotificationSent events in order.
func (e *env) notifiedEvents(t *testing.T, jobID string) []*exportv1.NotificationSent {
	t.Helper()
	subject, err := bus.StatusSubject(bus.EventNotified, jobID)
	require.NoError(t, err)
	info, err := e.events.Info(t.Context())
	require.NoError(t, err)
	var out []*exportv1.NotificationSent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		raw, err := e.events.GetMsg(t.Context(), seq)
		if err != nil || raw.Subject != subject {
			continue
		}
		var m exportv1.NotificationSent
		require.NoError(t, proto.Unmarshal(raw.Data, &m))
		out = append(out, &m)
	}
	return out
}

// settle waits until the job has want NotificationSent events and every
// delivered message is settled.
func (e *env) settle(t *testing.T, jobID string, want int) []*exportv1.NotificationSent {
	t.Helper()
	var evs []*exportv1.NotificationSent
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		evs = e.notifiedEvents(t, jobID)
		assert.Len(c, evs, want, "NotificationSent events")
		info, err := e.consumer.Info(t.Context())
		if assert.NoError(c, err) {
			assert.Zero(c, info.NumPending, "messages not yet delivered")
			assert.Zero(c, info.NumAckPending, "messages not yet settled")
		}
	}, waitFor, tick)
	return evs
}

func TestRecordsJobEmailsExtraAddresses(t *testing.T) {
	e, _ := startWithJobs(t, bustest.Topology(), nil)
	e.putUser(t, alice)
	jobID := newJobID()
	e.putJob(t, &exportv1.Job{
		Id: jobID, OwnerId: alice.GetId(), Kind: exportv1.JobKind_JOB_KIND_RECORDS,
		NotifyEmails: []string{"finance@example.com", "ALICE@example.com", "bad\r\nBcc: x@example.com", "Ops <ops@example.com>"},
	})
	ev := completed(jobID, &exportv1.File{Name: "transactions.csv", Size: 2048, Sha256: strings.Repeat("ab", 32)})
	ev.Kind = exportv1.JobKind_JOB_KIND_RECORDS
	e.publish(t, bus.EventCompleted, jobID, "", ev)
	evs := e.settle(t, jobID, 1)

	want := []string{alice.GetEmail(), "finance@example.com", "ops@example.com"}
	greetings := []string{alice.GetName(), "there", "Ops"}
	assert.Equal(t, want, evs[0].GetRecipients())
	assert.Empty(t, evs[0].GetError())
	msgs := e.smtp.Messages()
	require.Len(t, msgs, len(want), "one email per recipient")
	ids := map[string]bool{}
	for i, m := range msgs {
		assert.Equal(t, []string{want[i]}, m.To, "envelope: that recipient alone")
		p, err := m.Parse()
		require.NoError(t, err)
		assertOnlyRecipient(t, p.Header, want[i], want)
		ids[p.Header.Get("Message-Id")] = true
		assert.Equal(t, "Your Dataport export is ready: transactions.csv", decodeHeader(t, p.Header.Get("Subject")))
		assert.Contains(t, p.Text, "records export")
		assert.Contains(t, p.Text, "SHA-256: "+strings.Repeat("ab", 32))
		links := linkRE.FindAllString(p.Text, -1)
		require.Len(t, links, 1)
		checkLink(t, links[0], jobID, "transactions.csv", time.Now().Add(-time.Minute), time.Now())
		assert.Contains(t, p.Text, "Hello "+greetings[i]+",", "each recipient is greeted alone")
	}
	assert.Len(t, ids, len(want), "each message has its own Message-ID")
}

// assertOnlyRecipient checks that a message's headers name self and none
// of the other recipients.
func assertOnlyRecipient(t *testing.T, h mail.Header, self string, all []string) {
	t.Helper()
	assert.Empty(t, h.Get("Cc"))
	assert.Empty(t, h.Get("Bcc"))
	to, err := h.AddressList("To")
	require.NoError(t, err)
	require.Len(t, to, 1)
	assert.Equal(t, self, to[0].Address)
	var head strings.Builder
	for k, vs := range h {
		head.WriteString(k + ": " + strings.Join(vs, ", ") + "\n")
	}
	for _, other := range all {
		if other != self {
			assert.NotContains(t, strings.ToLower(head.String()), strings.ToLower(other), "another recipient's address in the headers")
		}
	}
}

func TestRoomMail(t *testing.T) {
	e, store := startWithJobs(t, bustest.Topology(), nil)
	e.putUser(t, alice)
	jobID := newJobID()
	e.putJob(t, &exportv1.Job{
		Id: jobID, OwnerId: alice.GetId(), Kind: exportv1.JobKind_JOB_KIND_ROOM_MAIL,
		Mail: &exportv1.MailScope{
			ToEmails: []string{"bob@example.com", "carol@example.com"},
			Subject:  "Minutes of #general\r\nBcc: mallory@example.com",
		},
	})
	htmlBody := "<html><body><p><b>alice</b>: the release is on Friday</p></body></html>"
	textBody := "alice: the release is on Friday\n"
	var files []*exportv1.File
	for name, body := range map[string]string{"mail.html": htmlBody, "mail.txt": textBody} {
		key := "jobs/" + jobID + "/parts/0/" + name
		_, err := store.Upload(t.Context(), exportBucket, key, strings.NewReader(body), "text/plain")
		require.NoError(t, err)
		files = append(files, &exportv1.File{Name: name, ObjectKey: key, Size: uint64(len(body))})
	}
	ev := completed(jobID, files...)
	ev.Kind = exportv1.JobKind_JOB_KIND_ROOM_MAIL
	e.publish(t, bus.EventCompleted, jobID, "", ev)
	evs := e.settle(t, jobID, 1)

	assert.Equal(t, []string{"bob@example.com", "carol@example.com"}, evs[0].GetRecipients())
	assert.Empty(t, evs[0].GetError())
	msgs := e.smtp.Messages()
	want := []string{"bob@example.com", "carol@example.com"}
	require.Len(t, msgs, len(want), "one message per address")
	for i, m := range msgs {
		assert.Equal(t, []string{want[i]}, m.To, "envelope: one of the mail scope's addresses, not the owner")
		p, err := m.Parse()
		require.NoError(t, err)
		assertOnlyRecipient(t, p.Header, want[i], want)
		assert.Equal(t, "Minutes of #general Bcc: mallory@example.com", decodeHeader(t, p.Header.Get("Subject")), "CR/LF neutralised")
		assert.NotContains(t, p.Header, "Bcc")
		assert.Equal(t, textBody, strings.ReplaceAll(p.Text, "\r\n", "\n"))
		assert.Equal(t, htmlBody, strings.TrimSpace(p.HTML))
	}
}

// TestRoomMailAttachesOrLinksItsFiles: the files the mailed messages
// carry (listed after the bodies, by reference into the assets bucket)
// are attached while they fit the cap, linked with a signed link past it,
// and a file gone by now is named as missing, never linked.
func TestRoomMailAttachesOrLinksItsFiles(t *testing.T) {
	const assetBucket = "dataport-assets"
	e, store := startWithJobs(t, bustest.Topology(), nil, func(s *setup) { s.cfg.AttachMaxBytes = 100 })
	require.NoError(t, store.EnsureBucket(t.Context(), assetBucket))
	jobID := newJobID()
	e.putJob(t, &exportv1.Job{
		Id: jobID, OwnerId: alice.GetId(), Kind: exportv1.JobKind_JOB_KIND_ROOM_MAIL,
		Mail: &exportv1.MailScope{ToEmails: []string{"bob@example.com"}, Subject: "Minutes"},
	})
	var files []*exportv1.File
	for name, body := range map[string]string{"mail.html": "<div class=\"dataport-mail\"><p>see the notes</p></div>\n", "mail.txt": "alice: see the notes\n"} {
		key := "jobs/" + jobID + "/parts/0/" + name
		_, err := store.Upload(t.Context(), exportBucket, key, strings.NewReader(body), "text/plain")
		require.NoError(t, err)
		files = append(files, &exportv1.File{Name: name, ObjectKey: key, Size: uint64(len(body))})
	}
	slices.SortFunc(files, func(a, b *exportv1.File) int { return strings.Compare(a.GetName(), b.GetName()) })
	notes := []byte("the notes, small enough to attach")
	big := bytes.Repeat([]byte("x"), 500)
	for key, data := range map[string][]byte{"assets/F1/notes.txt": notes, "assets/F2/big.bin": big} {
		_, err := store.Upload(t.Context(), assetBucket, key, bytes.NewReader(data), "application/octet-stream")
		require.NoError(t, err)
	}
	files = append(files,
		&exportv1.File{Name: "F1-notes.txt", Bucket: assetBucket, ObjectKey: "assets/F1/notes.txt", Size: uint64(len(notes)), ContentType: "text/plain"},
		&exportv1.File{Name: "F2-big.bin", Bucket: assetBucket, ObjectKey: "assets/F2/big.bin", Size: uint64(len(big)), ContentType: "application/octet-stream"},
		// Deleted between the export and the mail.
		&exportv1.File{Name: "F3-gone.png", Bucket: assetBucket, ObjectKey: "assets/F3/gone.png", Size: 10, ContentType: "image/png"},
	)
	ev := completed(jobID, files...)
	ev.Kind = exportv1.JobKind_JOB_KIND_ROOM_MAIL
	before := time.Now()
	e.publish(t, bus.EventCompleted, jobID, "", ev)
	evs := e.settle(t, jobID, 1)
	after := time.Now()
	assert.Empty(t, evs[0].GetError())

	msgs := e.smtp.Messages()
	require.Len(t, msgs, 1)
	p, err := msgs[0].Parse()
	require.NoError(t, err)
	require.Len(t, p.Attachments, 1, "only what fits the cap is attached")
	assert.Equal(t, "F1-notes.txt", p.Attachments[0].Name)
	assert.Equal(t, "text/plain", p.Attachments[0].ContentType)
	assert.Equal(t, notes, p.Attachments[0].Data)

	assert.Contains(t, p.Text, "alice: see the notes")
	assert.Contains(t, p.Text, "- F1-notes.txt (33 B): attached")
	assert.Contains(t, p.Text, "- F2-big.bin (500 B): too large to attach, download until ")
	assert.Contains(t, p.Text, "- F3-gone.png: missing, the file is no longer available")
	links := linkRE.FindAllString(p.Text, -1)
	require.Len(t, links, 1, "the big file is linked; the missing one is not")
	checkLink(t, links[0], jobID, "F2-big.bin", before, after)

	assert.Contains(t, p.HTML, `<p>see the notes</p>`)
	assert.Contains(t, p.HTML, "F1-notes.txt (33 B): attached")
	assert.Contains(t, p.HTML, "F3-gone.png: missing, the file is no longer available")
	htmlLinks := linkRE.FindAllString(html.UnescapeString(p.HTML), -1)
	require.Len(t, htmlLinks, 1)
	checkLink(t, htmlLinks[0], jobID, "F2-big.bin", before, after)
}

func TestSMTPTransportSecurity(t *testing.T) {
	tests := []struct {
		name     string
		mode     string
		cfg      func(srv *smtptest.Server) notify.SMTPConfig
		wantFail bool
	}{
		{
			name: "STARTTLS with the server's CA",
			mode: smtptest.STARTTLS,
			cfg: func(s *smtptest.Server) notify.SMTPConfig {
				return notify.SMTPConfig{Host: s.Host, Port: s.Port, TLS: notify.TLSStartTLS, CAFile: s.CAFile}
			},
		},
		{
			name: "implicit TLS with the server's CA",
			mode: smtptest.Implicit,
			cfg: func(s *smtptest.Server) notify.SMTPConfig {
				return notify.SMTPConfig{Host: s.Host, Port: s.Port, TLS: notify.TLSImplicit, CAFile: s.CAFile}
			},
		},
		{
			name: "implicit TLS skipping verification (dev only)",
			mode: smtptest.Implicit,
			cfg: func(s *smtptest.Server) notify.SMTPConfig {
				return notify.SMTPConfig{Host: s.Host, Port: s.Port, TLS: notify.TLSImplicit, InsecureSkipVerify: true}
			},
		},
		{
			name: "STARTTLS with an untrusted certificate fails",
			mode: smtptest.STARTTLS,
			cfg: func(s *smtptest.Server) notify.SMTPConfig {
				return notify.SMTPConfig{Host: s.Host, Port: s.Port, TLS: notify.TLSStartTLS}
			},
			wantFail: true,
		},
		{
			name: "STARTTLS required but not offered fails",
			mode: "",
			cfg: func(s *smtptest.Server) notify.SMTPConfig {
				return notify.SMTPConfig{Host: s.Host, Port: s.Port, TLS: notify.TLSStartTLS, InsecureSkipVerify: true}
			},
			wantFail: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var srv *smtptest.Server
			if tt.mode == "" {
				srv = smtptest.Start(t)
			} else {
				srv = smtptest.StartTLS(t, tt.mode)
			}
			cfg := tt.cfg(srv)
			cfg.Timeout = 5 * time.Second
			m, err := notify.NewSMTPMailer(cfg)
			require.NoError(t, err)
			err = m.Send(t.Context(), notify.Email{
				From:    mail.Address{Address: sender},
				To:      []mail.Address{{Address: alice.GetEmail()}},
				Subject: "over TLS",
				Text:    "hello",
				HTML:    "<p>hello</p>",
			})
			if tt.wantFail {
				assert.Error(t, err)
				assert.Empty(t, srv.Messages(), "nothing sent in clear or to an unverified server")
				return
			}
			require.NoError(t, err)
			msgs := srv.Messages()
			require.Len(t, msgs, 1)
			assert.True(t, msgs[0].TLS, "message came over TLS")
			assert.Equal(t, []string{alice.GetEmail()}, msgs[0].To)
		})
	}
}

// receiver is a webhook endpoint that checks signatures and fails the
// first n calls with 503.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	failures int
	calls    []call
}

type call struct {
	body      []byte
	validSig  bool
	timestamp time.Time
	eventID   string
}

func newReceiver(t *testing.T, failures int) *receiver {
	r := &receiver{failures: failures}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		// The verification recipe of docs/ARCHITECTURE.md, "Delivery".
		ts := req.Header.Get(notify.HeaderTimestamp)
		mac := hmac.New(sha256.New, []byte(webhookSecret))
		mac.Write([]byte(ts + "." + string(body)))
		want := "v1=" + hex.EncodeToString(mac.Sum(nil))
		sec, _ := strconv.ParseInt(ts, 10, 64)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls = append(r.calls, call{
			body:      body,
			validSig:  hmac.Equal([]byte(want), []byte(req.Header.Get(notify.HeaderSignature))),
			timestamp: time.Unix(sec, 0),
			eventID:   req.Header.Get(notify.HeaderEventID),
		})
		if len(r.calls) <= r.failures {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) Calls() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

func TestWebhookSignedAndRetried(t *testing.T) {
	hook := newReceiver(t, 2)
	global := newReceiver(t, 0)
	e, _ := startWithJobs(t, bustest.Topology(), &notify.WebhookConfig{
		Secret: []byte(webhookSecret),
		URLs:   []string{global.URL + "/all"},
		// The receivers listen on loopback, which the guard refuses
		// unless allowlisted.
		Allow: []string{"127.0.0.1/32"},
	})
	e.putUser(t, alice)
	jobID := newJobID()
	hookURL := hook.URL + "/hooks/dataport?token=s3cret"
	e.putJob(t, &exportv1.Job{Id: jobID, OwnerId: alice.GetId(), Kind: exportv1.JobKind_JOB_KIND_ROOM, WebhookUrls: []string{hookURL}})
	sum := strings.Repeat("cd", 32)
	occurred := time.Now().Truncate(time.Second)
	ev := completed(jobID, &exportv1.File{Name: "general.json", Size: 1234, Sha256: sum})
	ev.OccurredAt = timestamppb.New(occurred)
	e.publish(t, bus.EventCompleted, jobID, "", ev)
	evs := e.settle(t, jobID, 3) // email, global webhook, job webhook

	calls := hook.Calls()
	require.Len(t, calls, 3, "failed twice, then accepted")
	for i, c := range calls {
		assert.True(t, c.validSig, "call %d: signature", i)
		assert.WithinDuration(t, time.Now(), c.timestamp, time.Minute, "call %d: timestamp", i)
		assert.Equal(t, jobID+".completed", c.eventID)
		assert.Equal(t, string(calls[0].body), string(c.body), "every retry sends the same body")
	}
	var got notify.WebhookEvent
	require.NoError(t, json.Unmarshal(calls[2].body, &got))
	assert.Equal(t, "export.completed", got.Event)
	assert.Equal(t, jobID, got.JobID)
	assert.Equal(t, "completed", got.State)
	assert.Empty(t, got.Error)
	assert.Equal(t, occurred.UTC().Format(time.RFC3339), got.OccurredAt)
	require.Len(t, got.Files, 1)
	f := got.Files[0]
	assert.Equal(t, "general.json", f.Name)
	assert.Equal(t, sum, f.SHA256)
	assert.EqualValues(t, 1234, f.Size)
	exp := occurred.Add(linkTTL).UTC()
	assert.Equal(t, exp.Format(time.RFC3339), f.ExpiresAt)
	checkLink(t, f.URL, jobID, "general.json", occurred, occurred)

	require.Len(t, global.Calls(), 1)
	assert.True(t, global.Calls()[0].validSig)

	// Outcomes are NotificationSent events, the URL shown without its
	// query (which may hold a token), and one send record per URL.
	var recipients []string
	for _, ev := range evs {
		assert.Empty(t, ev.GetError())
		recipients = append(recipients, ev.GetRecipients()...)
	}
	assert.ElementsMatch(t, []string{alice.GetEmail(), global.URL + "/all", hook.URL + "/hooks/dataport"}, recipients)
	keys := e.sendKeys(t, jobID)
	assert.Len(t, keys, 3)
	for _, k := range keys {
		assert.Regexp(t, `^`+jobID+`\.(email|webhook\.[0-9a-f]{16})$`, k)
	}
}

func (e *env) sendKeys(t *testing.T, jobID string) []string {
	t.Helper()
	lister, err := e.sent.ListKeysFiltered(t.Context(), jobID+".>")
	require.NoError(t, err)
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys
}

func TestWebhookFailedAndCanceled(t *testing.T) {
	hook := newReceiver(t, 0)
	e, _ := startWithJobs(t, bustest.Topology(), &notify.WebhookConfig{Secret: []byte(webhookSecret), Allow: []string{"127.0.0.1"}})
	e.putUser(t, alice)
	tests := []struct {
		name      string
		ev        bus.Event
		msg       func(jobID string) proto.Message
		wantEvent string
		wantState string
		wantMails int
	}{
		{"rejected", bus.EventFailed, func(id string) proto.Message {
			return &exportv1.ExportFailed{JobId: id, OccurredAt: timestamppb.Now(), Reason: "over 1000000 rows", Rejected: true, OwnerId: alice.GetId()}
		}, "export.failed", "rejected", 1},
		{"canceled", bus.EventCanceled, func(id string) proto.Message {
			return &exportv1.ExportCanceled{JobId: id, OccurredAt: timestamppb.Now(), Reason: "Canceled by user"}
		}, "export.canceled", "canceled", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobID := newJobID()
			before := len(hook.Calls())
			mailsBefore := len(e.smtp.Messages())
			e.putJob(t, &exportv1.Job{Id: jobID, OwnerId: alice.GetId(), WebhookUrls: []string{hook.URL}})
			e.publish(t, tt.ev, jobID, "", tt.msg(jobID))
			e.settle(t, jobID, 1+tt.wantMails)

			calls := hook.Calls()[before:]
			require.Len(t, calls, 1)
			var got notify.WebhookEvent
			require.NoError(t, json.Unmarshal(calls[0].body, &got))
			assert.Equal(t, tt.wantEvent, got.Event)
			assert.Equal(t, tt.wantState, got.State)
			assert.NotEmpty(t, got.Error)
			assert.Empty(t, got.Files)
			assert.Len(t, e.smtp.Messages(), mailsBefore+tt.wantMails, "emails")
		})
	}
}

func TestWebhookSSRFGuard(t *testing.T) {
	hook := newReceiver(t, 0)
	port := hook.URL[strings.LastIndexByte(hook.URL, ':'):]
	w, err := notify.NewWebhooks(notify.WebhookConfig{Secret: []byte(webhookSecret), Timeout: 2 * time.Second})
	require.NoError(t, err)
	tests := []string{
		hook.URL,                           // loopback IPv4
		"http://localhost" + port,          // a name resolving to loopback: checked at dial time
		"http://[::1]" + port,              // loopback IPv6
		"http://10.1.2.3/hook",             // RFC 1918
		"http://172.16.0.1/hook",           // RFC 1918
		"http://192.168.1.1/hook",          // RFC 1918
		"http://[fd00::1]/hook",            // RFC 4193
		"http://169.254.169.254/latest",    // link-local (cloud metadata)
		"http://100.64.0.1/hook",           // CGNAT
		"http://0.0.0.0" + port,            // unspecified
		"http://224.0.0.1/hook",            // multicast
		"http://[::ffff:127.0.0.1]" + port, // IPv4-mapped loopback
		"ftp://example.com/hook",           // not HTTP
		"http://user:pw@example.com/hook",  // credentials in URL
	}
	for _, u := range tests {
		t.Run(u, func(t *testing.T) {
			err := w.Post(t.Context(), u, "job.completed", []byte(`{}`), time.Now())
			assert.ErrorIs(t, err, notify.ErrWebhookRefused)
		})
	}
	assert.Empty(t, hook.Calls(), "no request reached the loopback receiver")

	t.Run("allowlisted host name", func(t *testing.T) {
		w, err := notify.NewWebhooks(notify.WebhookConfig{Secret: []byte(webhookSecret), Allow: []string{"localhost"}})
		require.NoError(t, err)
		require.NoError(t, w.Post(t.Context(), "http://localhost"+port+"/ok", "job.completed", []byte(`{}`), time.Now()))
		assert.Len(t, hook.Calls(), 1)
	})
	t.Run("redirects are not followed", func(t *testing.T) {
		target := newReceiver(t, 0)
		redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusFound))
		t.Cleanup(redirect.Close)
		w, err := notify.NewWebhooks(notify.WebhookConfig{Secret: []byte(webhookSecret), Allow: []string{"127.0.0.0/8"}})
		require.NoError(t, err)
		err = w.Post(t.Context(), redirect.URL, "job.completed", []byte(`{}`), time.Now())
		assert.ErrorContains(t, err, "302")
		assert.Empty(t, target.Calls())
	})
}

// TestWebhookRefusalIsRecorded checks that a forbidden webhook is not
// retried and its refusal is reported, without holding back the email.
func TestWebhookRefusalIsRecorded(t *testing.T) {
	e, _ := startWithJobs(t, bustest.Topology(), &notify.WebhookConfig{Secret: []byte(webhookSecret)})
	e.putUser(t, alice)
	jobID := newJobID()
	e.putJob(t, &exportv1.Job{Id: jobID, OwnerId: alice.GetId(), WebhookUrls: []string{"http://169.254.169.254/latest/meta-data"}})
	e.publish(t, bus.EventCompleted, jobID, "", completed(jobID, &exportv1.File{Name: "general.json", Size: 10}))
	evs := e.settle(t, jobID, 2)
	var errs []string
	for _, ev := range evs {
		if ev.GetError() != "" {
			errs = append(errs, ev.GetError())
		}
	}
	require.Len(t, errs, 1)
	assert.Contains(t, errs[0], "webhook http://169.254.169.254/latest/meta-data refused")
	assert.Contains(t, errs[0], "not allowed")
	assert.Len(t, e.smtp.Messages(), 1, "the email went out regardless")
}

// TestKillAndRedeliver kills a notifier between its sends and its ack:
// the event is redelivered to another instance, which finds the send
// records and sends nothing again.
func TestKillAndRedeliver(t *testing.T) {
	topo := bustest.Topology()
	topo.EventAckWait = time.Second
	hook := newReceiver(t, 0)
	hooks := &notify.WebhookConfig{Secret: []byte(webhookSecret), Allow: []string{"127.0.0.1"}}
	e, _ := startWithJobs(t, topo, hooks, func(s *setup) { s.manual = true })
	e.putUser(t, alice)
	jobID := newJobID()
	e.putJob(t, &exportv1.Job{Id: jobID, OwnerId: alice.GetId(), WebhookUrls: []string{hook.URL}})
	e.publish(t, bus.EventCompleted, jobID, "", completed(jobID, &exportv1.File{Name: "general.json", Size: 10}))

	// The first process takes the event, sends, and dies before acking.
	batch, err := e.consumer.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	var msg jetstream.Msg
	for m := range batch.Messages() {
		msg = m
	}
	require.NotNil(t, msg)
	require.NoError(t, e.newNotifier(t).Handle(t.Context(), msg))
	require.Len(t, e.smtp.Messages(), 1)
	require.Len(t, hook.Calls(), 1)

	// A second process gets the event once its ack wait has passed.
	e.consume(t, e.newNotifier(t))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		info, err := e.consumer.Info(t.Context())
		if assert.NoError(c, err) {
			// The dead process never acked: only the second one can have.
			assert.Zero(c, info.NumAckPending, "not yet settled")
			assert.Positive(c, info.AckFloor.Consumer, "not yet acked")
			assert.Zero(c, info.NumPending)
		}
	}, waitFor, tick)
	assert.Len(t, e.smtp.Messages(), 1, "emails")
	assert.Len(t, hook.Calls(), 1, "webhook calls")
	assert.Len(t, e.notifiedEvents(t, jobID), 2, "NotificationSent: one email, one webhook")
}

// TestTwoInstancesSameEventTwice runs two notifier instances on one
// durable consumer and delivers the job's event twice (as after a
// redelivery past the dedup window): still one email and one webhook call.
func TestTwoInstancesSameEventTwice(t *testing.T) {
	hook := newReceiver(t, 0)
	hooks := &notify.WebhookConfig{Secret: []byte(webhookSecret), Allow: []string{"127.0.0.1"}}
	e, _ := startWithJobs(t, bustest.Topology(), hooks)
	e.consume(t, e.newNotifier(t))
	e.putUser(t, alice)
	jobID := newJobID()
	e.putJob(t, &exportv1.Job{Id: jobID, OwnerId: alice.GetId(), WebhookUrls: []string{hook.URL}})
	ev := completed(jobID, &exportv1.File{Name: "general.json", Size: 10})
	e.publish(t, bus.EventCompleted, jobID, "", ev)
	e.publish(t, bus.EventCompleted, jobID, "again", ev)
	e.settle(t, jobID, 2)
	assert.Len(t, e.smtp.Messages(), 1, "emails")
	assert.Len(t, hook.Calls(), 1, "webhook calls")
}

func TestRefusedRecipientDoesNotStopTheOthers(t *testing.T) {
	e, _ := startWithJobs(t, bustest.Topology(), nil)
	e.putUser(t, alice)
	jobID := newJobID()
	e.putJob(t, &exportv1.Job{
		Id: jobID, OwnerId: alice.GetId(), Kind: exportv1.JobKind_JOB_KIND_RECORDS,
		NotifyEmails: []string{"finance@example.com", "ops@example.com"},
	})
	// The owner's RCPT TO gets a permanent 550.
	e.smtp.FailRcpt(1, 550)
	ev := completed(jobID, &exportv1.File{Name: "transactions.csv", Size: 10})
	ev.Kind = exportv1.JobKind_JOB_KIND_RECORDS
	e.publish(t, bus.EventCompleted, jobID, "", ev)
	evs := e.settle(t, jobID, 1)

	assert.Contains(t, evs[0].GetError(), "refused", "the refusal is reported")
	var got []string
	for _, m := range e.smtp.Messages() {
		got = append(got, m.To...)
	}
	assert.Equal(t, []string{"finance@example.com", "ops@example.com"}, got, "the others got theirs, once")
}
