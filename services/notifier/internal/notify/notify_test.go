package notify_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"mime"
	"net/mail"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/notifier/internal/notify"
	"dataport.dev/services/notifier/internal/smtptest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/jobview"
	"dataport.dev/shared/links"
)

const (
	publicURL  = "http://127.0.0.1:8080"
	linkSecret = "test-link-secret"
	linkTTL    = 24 * time.Hour
	sender     = "exports@dataport.test"
	waitFor    = 20 * time.Second
	tick       = 50 * time.Millisecond
)

// env is a notifier consuming from a real JetStream server and sending to
// a real (in-process) SMTP server.
type env struct {
	smtp     *smtptest.Server
	users    jetstream.KeyValue
	sent     jetstream.KeyValue
	events   jetstream.Stream
	jobs     jetstream.KeyValue
	pub      *bus.Publisher
	consumer jetstream.Consumer
	// newNotifier builds another notifier instance on the same servers,
	// as a second replica or a restarted process would be.
	newNotifier func(t *testing.T) *notify.Notifier
}

// setup is what a test may adjust before start runs the notifier.
type setup struct {
	cfg *notify.Config
	// jobs reads the export_jobs bucket on the test's server.
	jobs *jobview.Reader
	// manual leaves consuming to the test (see env.consume).
	manual bool
}

// start runs a notifier; mods adjust its configuration before it starts
// (each test's extra dependencies: job records, MinIO, webhooks).
func start(t *testing.T, topo bus.Topology, mods ...func(*setup)) *env {
	t.Helper()
	srv := bustest.Start(t)
	mailSrv := smtptest.Start(t)
	ctx := t.Context()

	users, err := srv.JS.KeyValue(ctx, bus.BucketUsers)
	require.NoError(t, err)
	sent, err := srv.JS.KeyValue(ctx, bus.BucketNotifications)
	require.NoError(t, err)
	events, err := srv.JS.Stream(ctx, bus.StreamExportEvents)
	require.NoError(t, err)
	jobs, err := srv.JS.KeyValue(ctx, bus.BucketJobs)
	require.NoError(t, err)
	mailer, err := notify.NewSMTPMailer(notify.SMTPConfig{Host: mailSrv.Host, Port: mailSrv.Port, TLS: notify.TLSNone, Timeout: 5 * time.Second})
	require.NoError(t, err)
	signer := links.New(publicURL, []byte(linkSecret), linkTTL, nil)
	pub := bus.NewPublisher(srv.JS, nil)
	newNotifier := func(t *testing.T) *notify.Notifier {
		cfg := notify.Config{
			Users:     users,
			Sent:      sent,
			Mailer:    mailer,
			Links:     signer,
			LinkTTL:   linkTTL,
			From:      mail.Address{Name: "Dataport", Address: sender},
			Publisher: pub,
			Topology:  topo,
		}
		su := setup{cfg: &cfg, jobs: jobview.New(jobs, nil)}
		for _, m := range mods {
			m(&su)
		}
		n, err := notify.New(cfg)
		require.NoError(t, err)
		return n
	}
	su := setup{cfg: &notify.Config{}, jobs: jobview.New(jobs, nil)}
	for _, m := range mods {
		m(&su)
	}
	consumer, err := bus.EnsureConsumer(ctx, srv.JS, topo, bus.ConsumerNotifier)
	require.NoError(t, err)
	e := &env{smtp: mailSrv, users: users, sent: sent, events: events, jobs: jobs, pub: pub, consumer: consumer, newNotifier: newNotifier}
	if !su.manual {
		e.consume(t, newNotifier(t))
	}
	return e
}

// consume runs n on the notifier consumer until the test ends, as one
// notifier process would.
func (e *env) consume(t *testing.T, n *notify.Notifier) {
	t.Helper()
	ctx := t.Context()
	done := make(chan error, 1)
	go func() {
		done <- bus.Consume(ctx, e.consumer, n.Handle, bus.ConsumeOptions{
			Concurrency: 4,
			NakDelay:    func(uint64) time.Duration { return 50 * time.Millisecond },
		})
	}()
	// Registered after the servers' cleanups, so it runs before them.
	t.Cleanup(func() { assert.NoError(t, <-done) })
}

func (e *env) putUser(t *testing.T, u *sourcev1.User) {
	t.Helper()
	data, err := proto.Marshal(u)
	require.NoError(t, err)
	_, err = e.users.Put(t.Context(), u.GetId(), data)
	require.NoError(t, err)
}

func (e *env) publish(t *testing.T, ev bus.Event, jobID, discriminator string, m proto.Message) {
	t.Helper()
	require.NoError(t, e.pub.PublishStatus(t.Context(), ev, jobID, discriminator, m))
}

// notified returns the job's NotificationSent events.
func (e *env) notified(t *testing.T, jobID string) (count uint64, last *exportv1.NotificationSent) {
	t.Helper()
	subject, err := bus.StatusSubject(bus.EventNotified, jobID)
	require.NoError(t, err)
	info, err := e.events.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	count = info.State.Subjects[subject]
	if count == 0 {
		return 0, nil
	}
	raw, err := e.events.GetLastMsgForSubject(t.Context(), subject)
	require.NoError(t, err)
	last = &exportv1.NotificationSent{}
	require.NoError(t, proto.Unmarshal(raw.Data, last))
	return count, last
}

// waitNotified waits until the job's NotificationSent is published and
// every delivered message is settled, so counts are final.
func (e *env) waitNotified(t *testing.T, jobID string) *exportv1.NotificationSent {
	t.Helper()
	var last *exportv1.NotificationSent
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var n uint64
		n, last = e.notified(t, jobID)
		assert.Positive(c, n, "no NotificationSent yet")
		info, err := e.consumer.Info(t.Context())
		if assert.NoError(c, err) {
			assert.Zero(c, info.NumPending, "messages not yet delivered")
			assert.Zero(c, info.NumAckPending, "messages not yet settled")
		}
	}, waitFor, tick)
	return last
}

// sendRecord is the notifier's record of a job's email in the
// notifications bucket, as an operator reads it.
type sendRecord struct {
	State      string   `json:"state"`
	Recipients []string `json:"recipients"`
	Error      string   `json:"error"`
}

func (e *env) record(t *testing.T, jobID string) sendRecord {
	t.Helper()
	entry, err := e.sent.Get(t.Context(), jobID+".email")
	require.NoError(t, err)
	var rec sendRecord
	require.NoError(t, json.Unmarshal(entry.Value(), &rec))
	return rec
}

var (
	alice = &sourcev1.User{Id: "user-alice", Username: "alice", Name: "Alice Example", Email: "alice@example.com"}
	// linkRE finds download links in a body.
	linkRE = regexp.MustCompile(`http://127\.0\.0\.1:8080/v1/exports/[^/\s"<>]+/files/[^?\s"<>]+\?exp=\d+&sig=[0-9a-f]+`)
)

func newJobID() string {
	return fmt.Sprintf("job-%d", time.Now().UnixNano())
}

func completed(jobID string, files ...*exportv1.File) *exportv1.ExportCompleted {
	return &exportv1.ExportCompleted{
		JobId:      jobID,
		OccurredAt: timestamppb.Now(),
		Files:      files,
		OwnerId:    alice.GetId(),
		Kind:       exportv1.JobKind_JOB_KIND_ROOM,
	}
}

// checkLink verifies a download link as the gateway would: the path names
// the job and file, the signature is the HMAC of "<jobId>/<name>/<exp>"
// and the expiry is LinkTTL after sending.
func checkLink(t *testing.T, link, jobID, name string, sentAfter, sentBefore time.Time) {
	t.Helper()
	u, err := url.Parse(link)
	require.NoError(t, err)
	assert.Equal(t, "/v1/exports/"+jobID+"/files/"+name, u.Path)
	exp, err := strconv.ParseInt(u.Query().Get("exp"), 10, 64)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, exp, sentAfter.Add(linkTTL).Unix()-1)
	assert.LessOrEqual(t, exp, sentBefore.Add(linkTTL).Unix())
	mac := hmac.New(sha256.New, []byte(linkSecret))
	fmt.Fprintf(mac, "%s/%s/%d", jobID, name, exp)
	assert.Equal(t, hex.EncodeToString(mac.Sum(nil)), u.Query().Get("sig"), "signature of %s", link)
}

func decodeHeader(t *testing.T, v string) string {
	t.Helper()
	s, err := new(mime.WordDecoder).DecodeHeader(v)
	require.NoError(t, err)
	return s
}

func TestCompletedEmail(t *testing.T) {
	e := start(t, bustest.Topology())
	e.putUser(t, alice)
	jobID := newJobID()
	files := []*exportv1.File{
		{Name: "general.json", ObjectKey: "jobs/" + jobID + "/parts/0/general.json", Size: 1536},
		{Name: "random room.json", ObjectKey: "jobs/" + jobID + "/parts/1/random room.json", Size: 3 << 20},
	}
	before := time.Now()
	e.publish(t, bus.EventCompleted, jobID, "", completed(jobID, files...))
	rec := e.waitNotified(t, jobID)
	after := time.Now()

	assert.Equal(t, []string{alice.GetEmail()}, rec.GetRecipients())
	assert.Empty(t, rec.GetError())
	assert.Equal(t, sendRecord{State: "sent", Recipients: []string{alice.GetEmail()}}, e.record(t, jobID))

	msgs := e.smtp.Messages()
	require.Len(t, msgs, 1)
	assert.Equal(t, sender, msgs[0].From)
	assert.Equal(t, []string{alice.GetEmail()}, msgs[0].To)
	p, err := msgs[0].Parse()
	require.NoError(t, err)
	assert.Equal(t, "Your Dataport export is ready: general.json and 1 more", decodeHeader(t, p.Header.Get("Subject")))
	to, err := p.Header.AddressList("To")
	require.NoError(t, err)
	assert.Equal(t, []*mail.Address{{Name: "Alice Example", Address: alice.GetEmail()}}, to)
	from, err := p.Header.AddressList("From")
	require.NoError(t, err)
	assert.Equal(t, []*mail.Address{{Name: "Dataport", Address: sender}}, from)

	for body, text := range map[string]string{"text": p.Text, "html": html.UnescapeString(p.HTML)} {
		t.Run(body, func(t *testing.T) {
			assert.Contains(t, text, "Alice Example")
			assert.Contains(t, text, "room history export")
			assert.Contains(t, text, "general.json")
			assert.Contains(t, text, "(1.5 KiB)")
			assert.Contains(t, text, "random room.json")
			assert.Contains(t, text, "(3.0 MiB)")
			assert.Contains(t, text, "expire")
			links := linkRE.FindAllString(text, -1)
			require.Len(t, links, 2, "links in %s body:\n%s", body, text)
			checkLink(t, links[0], jobID, "general.json", before, after)
			checkLink(t, links[1], jobID, "random room.json", before, after)
		})
	}
	assert.Contains(t, p.HTML, `<a href="`+strings.ReplaceAll(linkRE.FindString(p.Text), "&", "&amp;")+`">general.json</a>`)
}

func TestFailedEmail(t *testing.T) {
	tests := []struct {
		name       string
		rejected   bool
		wantAdvice string
	}{
		{"internal failure", false, "request the export again"},
		{"rejected request", true, "Change it"},
	}
	e := start(t, bustest.Topology())
	e.putUser(t, alice)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobID := newJobID()
			reason := "part 1 (random.json) failed verification: object is missing"
			e.publish(t, bus.EventFailed, jobID, "", &exportv1.ExportFailed{
				JobId: jobID, OccurredAt: timestamppb.Now(), Reason: reason, Rejected: tt.rejected, OwnerId: alice.GetId(),
			})
			rec := e.waitNotified(t, jobID)
			assert.Empty(t, rec.GetError())

			var msg *smtptest.Message
			for _, m := range e.smtp.Messages() {
				if strings.Contains(string(m.Data), jobID) {
					msg = &m
				}
			}
			require.NotNil(t, msg, "no email for %s", jobID)
			p, err := msg.Parse()
			require.NoError(t, err)
			assert.Equal(t, "Your Dataport export failed", decodeHeader(t, p.Header.Get("Subject")))
			for _, text := range []string{p.Text, html.UnescapeString(p.HTML)} {
				assert.Contains(t, text, reason)
				assert.Contains(t, text, tt.wantAdvice)
				assert.Contains(t, text, jobID)
			}
		})
	}
}

func TestSameEventTwiceSendsOnce(t *testing.T) {
	e := start(t, bustest.Topology())
	e.putUser(t, alice)
	jobID := newJobID()
	ev := completed(jobID, &exportv1.File{Name: "general.json", Size: 10})
	// Different dedup ids: the stream stores both and the notifier sees
	// the event twice, as after a redelivery past the duplicate window.
	e.publish(t, bus.EventCompleted, jobID, "", ev)
	e.publish(t, bus.EventCompleted, jobID, "again", ev)
	e.waitNotified(t, jobID)

	assert.Len(t, e.smtp.Messages(), 1, "emails sent")
	n, _ := e.notified(t, jobID)
	assert.EqualValues(t, 1, n, "NotificationSent events")
}

func TestTemporaryFailureIsRetried(t *testing.T) {
	e := start(t, bustest.Topology())
	e.putUser(t, alice)
	e.smtp.FailData(2, 451)
	jobID := newJobID()
	e.publish(t, bus.EventCompleted, jobID, "", completed(jobID, &exportv1.File{Name: "general.json", Size: 10}))
	rec := e.waitNotified(t, jobID)

	assert.Empty(t, rec.GetError())
	assert.Equal(t, 3, e.smtp.Attempts(), "SMTP attempts")
	require.Len(t, e.smtp.Messages(), 1, "emails accepted")
	assert.Contains(t, string(e.smtp.Messages()[0].Data), "general.json")
}

func TestGivesUp(t *testing.T) {
	tests := []struct {
		name         string
		fail         func(*smtptest.Server)
		wantAttempts int
		wantError    string
	}{
		{
			name:         "server keeps answering 451 until MaxDeliver-1",
			fail:         func(s *smtptest.Server) { s.FailData(-1, 451) },
			wantAttempts: 2,
			wantError:    "not delivered after 2 attempts",
		},
		{
			name:         "recipient refused with 550",
			fail:         func(s *smtptest.Server) { s.FailRcpt(-1, 550) },
			wantAttempts: 1,
			wantError:    "refused",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			topo := bustest.Topology()
			topo.EventMaxDeliver = 3
			e := start(t, topo)
			e.putUser(t, alice)
			tt.fail(e.smtp)
			jobID := newJobID()
			e.publish(t, bus.EventCompleted, jobID, "", completed(jobID, &exportv1.File{Name: "general.json", Size: 10}))
			rec := e.waitNotified(t, jobID)

			assert.Contains(t, rec.GetError(), tt.wantError)
			assert.Contains(t, rec.GetError(), alice.GetEmail())
			assert.Equal(t, sendRecord{State: "failed", Recipients: []string{alice.GetEmail()}, Error: rec.GetError()}, e.record(t, jobID))
			assert.Empty(t, e.smtp.Messages(), "emails accepted")
			assert.Equal(t, tt.wantAttempts, e.smtp.Attempts(), "SMTP attempts")
		})
	}
}

func TestOwnerWithoutAddress(t *testing.T) {
	tests := []struct {
		name      string
		user      *sourcev1.User
		wantError string
	}{
		{"unknown owner", nil, `owner "user-alice" not found`},
		{"owner without email", &sourcev1.User{Id: alice.GetId(), Name: "Alice"}, "has no email address"},
		{"email with a line break", &sourcev1.User{Id: alice.GetId(), Email: "alice@example.com\r\nBcc: mallory@example.com"}, "line break"},
		{"malformed email", &sourcev1.User{Id: alice.GetId(), Email: "alice at example.com"}, "email address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, bustest.Topology())
			if tt.user != nil {
				e.putUser(t, tt.user)
			}
			jobID := newJobID()
			e.publish(t, bus.EventCompleted, jobID, "", completed(jobID, &exportv1.File{Name: "general.json", Size: 10}))
			rec := e.waitNotified(t, jobID)

			assert.Contains(t, rec.GetError(), tt.wantError)
			assert.Empty(t, rec.GetRecipients())
			assert.Equal(t, sendRecord{State: "failed", Error: rec.GetError()}, e.record(t, jobID))
			assert.Zero(t, e.smtp.Attempts(), "SMTP attempts")
		})
	}
}

func TestHeaderInjection(t *testing.T) {
	e := start(t, bustest.Topology())
	e.putUser(t, &sourcev1.User{Id: alice.GetId(), Name: "Alice\r\nBcc: mallory@example.com", Email: alice.GetEmail()})
	jobID := newJobID()
	e.publish(t, bus.EventCompleted, jobID, "", completed(jobID, &exportv1.File{Name: "evil.json\r\nBcc: mallory@example.com\r\n\r\nforged body", Size: 10}))
	rec := e.waitNotified(t, jobID)
	require.Empty(t, rec.GetError())

	msgs := e.smtp.Messages()
	require.Len(t, msgs, 1)
	assert.Equal(t, []string{alice.GetEmail()}, msgs[0].To, "envelope recipients")
	p, err := msgs[0].Parse()
	require.NoError(t, err)
	assert.NotContains(t, p.Header, "Bcc")
	subject := decodeHeader(t, p.Header.Get("Subject"))
	assert.True(t, strings.HasPrefix(subject, "Your Dataport export is ready: evil.json"), subject)
	assert.NotContains(t, subject, "\n")
	assert.NotContains(t, subject, "\r")
	to, err := p.Header.AddressList("To")
	require.NoError(t, err)
	require.Len(t, to, 1)
	assert.Equal(t, alice.GetEmail(), to[0].Address)
	assert.NotContains(t, to[0].Name, "\n")

	// The header block as received: no line of it may start a Bcc header.
	head, _, _ := strings.Cut(string(msgs[0].Data), "\r\n\r\n")
	for line := range strings.SplitSeq(head, "\r\n") {
		assert.False(t, strings.HasPrefix(strings.ToLower(line), "bcc:"), "injected header line %q", line)
	}
}

func TestMailerRefusesLineBreaksInHeaders(t *testing.T) {
	srv := smtptest.Start(t)
	m, err := notify.NewSMTPMailer(notify.SMTPConfig{Host: srv.Host, Port: srv.Port, TLS: notify.TLSNone})
	require.NoError(t, err)
	base := notify.Email{
		From:    mail.Address{Address: sender},
		To:      []mail.Address{{Address: alice.GetEmail()}},
		Subject: "hello",
		Text:    "hi",
		HTML:    "<p>hi</p>",
	}
	tests := []struct {
		name   string
		modify func(*notify.Email)
	}{
		{"subject", func(e *notify.Email) { e.Subject = "hello\r\nBcc: mallory@example.com" }},
		{"recipient name", func(e *notify.Email) { e.To[0].Name = "Alice\nBcc: mallory@example.com" }},
		{"sender name", func(e *notify.Email) { e.From.Name = "Dataport\rX: y" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base
			e.To = append([]mail.Address(nil), base.To...)
			tt.modify(&e)
			err := m.Send(t.Context(), e)
			assert.ErrorIs(t, err, notify.ErrHeaderInjection)
		})
	}
	assert.Zero(t, srv.Attempts(), "nothing reached the server")
	require.NoError(t, m.Send(t.Context(), base))
	assert.Len(t, srv.Messages(), 1)
}

// TestClaimLeftByCrashedAttempt covers a notifier that claimed a send and
// died: a fresh claim of another delivery holds the email back, a claim
// older than the claim timeout is taken over and the email is sent once.
func TestClaimLeftByCrashedAttempt(t *testing.T) {
	e := start(t, bustest.Topology())
	e.putUser(t, alice)
	tests := []struct {
		name     string
		claimAge time.Duration
		wantSent bool
	}{
		{"stale claim is taken over", time.Hour, true},
		{"fresh claim of another delivery is waited for", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobID := newJobID()
			claim := fmt.Sprintf(`{"state":"sending","at":%q,"stream_seq":999999}`, time.Now().Add(-tt.claimAge).Format(time.RFC3339Nano))
			_, err := e.sent.Create(t.Context(), jobID+".email", []byte(claim))
			require.NoError(t, err)
			before := len(e.smtp.Messages())
			e.publish(t, bus.EventCompleted, jobID, "", completed(jobID, &exportv1.File{Name: "general.json", Size: 10}))

			if tt.wantSent {
				e.waitNotified(t, jobID)
				assert.Len(t, e.smtp.Messages(), before+1, "emails sent")
				assert.Equal(t, "sent", e.record(t, jobID).State)
				return
			}
			// The event keeps being retried while the claim is fresh.
			require.EventuallyWithT(t, func(c *assert.CollectT) {
				info, err := e.consumer.Info(t.Context())
				if assert.NoError(c, err) {
					assert.Positive(c, info.NumRedelivered, "no retry yet")
				}
			}, waitFor, tick)
			assert.Len(t, e.smtp.Messages(), before, "emails sent")
			n, _ := e.notified(t, jobID)
			assert.Zero(t, n, "NotificationSent events")
			assert.Equal(t, "sending", e.record(t, jobID).State)
		})
	}
}

// tagRE matches an HTML tag, for reading a body's words.
var tagRE = regexp.MustCompile(`<[^>]*>`)

// bodies are an email's text body and its HTML body's words, links kept:
// each anchor's href is written out before its text.
func bodies(p *smtptest.Parsed) map[string]string {
	withHrefs := regexp.MustCompile(`<a href="([^"]*)">`).ReplaceAllString(p.HTML, "$1 ")
	return map[string]string{"text": p.Text, "html": html.UnescapeString(tagRE.ReplaceAllString(withHrefs, ""))}
}

// messageOf returns the parsed email sent for the job.
func (e *env) messageOf(t *testing.T, jobID string) *smtptest.Parsed {
	t.Helper()
	for _, m := range e.smtp.Messages() {
		if strings.Contains(string(m.Data), jobID) {
			p, err := m.Parse()
			require.NoError(t, err)
			return p
		}
	}
	require.FailNow(t, "no email", "job %s", jobID)
	return nil
}

// TestCompletedEmailLinksManifestAndArchive: a room export delivered as a
// zip with its attachments, and a manifest, gets signed links to both
// beside its file's, in both bodies.
func TestCompletedEmailLinksManifestAndArchive(t *testing.T) {
	e := start(t, bustest.Topology())
	e.putUser(t, alice)
	jobID := newJobID()
	ev := completed(jobID, &exportv1.File{Name: "general.html", ObjectKey: "jobs/" + jobID + "/files/general.html", Size: 2048})
	ev.Archive = &exportv1.File{Name: "general.zip", ObjectKey: "jobs/" + jobID + "/files/general.zip", Size: 5 << 20, Sha256: strings.Repeat("ab", 32)}
	ev.Manifest = &exportv1.File{Name: "manifest.json", ObjectKey: "jobs/" + jobID + "/files/manifest.json", Size: 512}
	before := time.Now()
	e.publish(t, bus.EventCompleted, jobID, "", ev)
	e.waitNotified(t, jobID)
	after := time.Now()

	p := e.messageOf(t, jobID)
	assert.Equal(t, "Your Dataport export is ready: general.html", decodeHeader(t, p.Header.Get("Subject")),
		"the subject names the data files")
	for body, text := range bodies(p) {
		t.Run(body, func(t *testing.T) {
			assert.Contains(t, text, "general.zip (5.0 MiB)")
			assert.Contains(t, text, strings.Repeat("ab", 32), "the archive's SHA-256")
			assert.Contains(t, text, "manifest.json (512 B)")
			links := linkRE.FindAllString(text, -1)
			require.Len(t, links, 3, "links in %s body:\n%s", body, text)
			checkLink(t, links[0], jobID, "general.html", before, after)
			checkLink(t, links[1], jobID, "general.zip", before, after)
			checkLink(t, links[2], jobID, "manifest.json", before, after)
		})
	}
	assert.Contains(t, p.HTML, `">general.zip</a>`)
	assert.Contains(t, p.HTML, `">manifest.json</a>`)
}

// TestFailedEmailListsPartialResults: a job that failed after finishing
// some chunks lists them with signed links, those of its failure event
// and those its record holds, each once; a failure without any lists
// none.
func TestFailedEmailListsPartialResults(t *testing.T) {
	e := start(t, bustest.Topology())
	e.putUser(t, alice)
	jobID := newJobID()
	chunk := func(n int) *exportv1.File {
		name := fmt.Sprintf("events.%d.csv", n)
		return &exportv1.File{Name: name, ObjectKey: "jobs/" + jobID + "/parts/0/" + name, Size: 1024, Records: 100, Sha256: strings.Repeat("0"+strconv.Itoa(n), 32)}
	}
	// Part 1 failed first and its chunk is on the record; part 0's
	// failure event names its own two and, again, part 1's.
	e.putJob(t, &exportv1.Job{Id: jobID, OwnerId: alice.GetId(), PartialFiles: []*exportv1.File{chunk(2)}})
	before := time.Now()
	e.publish(t, bus.EventFailed, jobID, "", &exportv1.ExportFailed{
		JobId: jobID, OccurredAt: timestamppb.Now(), Reason: "Too much export data", Rejected: true, OwnerId: alice.GetId(),
		PartialFiles: []*exportv1.File{chunk(0), chunk(1), chunk(2), {Name: "gone.csv", Missing: true}},
	})
	e.waitNotified(t, jobID)
	after := time.Now()

	p := e.messageOf(t, jobID)
	for body, text := range bodies(p) {
		t.Run(body, func(t *testing.T) {
			assert.Contains(t, text, "Too much export data")
			assert.Contains(t, text, "finished before the export stopped")
			assert.Contains(t, text, "events.0.csv (1.0 KiB)")
			assert.Contains(t, text, chunk(1).GetSha256())
			assert.NotContains(t, text, "gone.csv", "a file without an object gets no line")
			links := linkRE.FindAllString(text, -1)
			require.Len(t, links, 3, "links in %s body:\n%s", body, text)
			for i, l := range links {
				checkLink(t, l, jobID, chunk(i).GetName(), before, after)
			}
			assert.Contains(t, text, "expire")
		})
	}

	t.Run("none kept", func(t *testing.T) {
		jobID := newJobID()
		e.publish(t, bus.EventFailed, jobID, "", &exportv1.ExportFailed{
			JobId: jobID, OccurredAt: timestamppb.Now(), Reason: "boom", OwnerId: alice.GetId(),
		})
		e.waitNotified(t, jobID)
		p := e.messageOf(t, jobID)
		for _, text := range []string{p.Text, p.HTML} {
			assert.NotContains(t, text, "finished before")
			assert.Empty(t, linkRE.FindAllString(text, -1))
		}
	})
}
