// Package notify tells people that an export ended, exactly once per job
// and channel even when the event is delivered more than once: it emails
// the job's owner and the job's extra addresses (signed download links on
// completion, what went wrong and what to do on failure), mails the
// selected messages of a room-mail job to their recipients (every email
// goes to one recipient, so no one sees the others' addresses), and posts a
// signed webhook event to every webhook URL of the job. Each outcome is
// reported as a NotificationSent event.
package notify

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"log/slog"
	"net/mail"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/jobview"
	"dataport.dev/shared/links"
)

// Channel is the email channel: the last token of the send record's key
// "<jobId>.email" and the discriminator of the NotificationSent dedup id.
const Channel = "email"

// WebhookChannel prefixes the channel of one webhook URL:
// "webhook.<first 16 hex digits of the URL's SHA-256>".
const WebhookChannel = "webhook"

// Subjects of the emails; the completed one is followed by the file name.
const (
	SubjectCompleted = "Your Dataport export is ready"
	SubjectFailed    = "Your Dataport export failed"
	// SubjectRoomMail is used when a room-mail job has no subject.
	SubjectRoomMail = "Messages from Dataport"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

// Publisher publishes a job's status events. *bus.Publisher implements it.
type Publisher interface {
	PublishStatus(ctx context.Context, ev bus.Event, jobID, discriminator string, m proto.Message) error
}

// Objects reads the bodies and files of room-mail jobs. *blob.Store
// implements it.
type Objects interface {
	Open(ctx context.Context, bucket, key string) (io.ReadCloser, blob.Info, error)
	Stat(ctx context.Context, bucket, key string) (blob.Info, error)
}

// Config holds a Notifier's dependencies.
type Config struct {
	// Users is the users bucket (sourcev1.User by id).
	Users jetstream.KeyValue
	// Sent is the notifications bucket; the notifier keeps its send
	// records there under "<jobId>.<channel>".
	Sent jetstream.KeyValue
	// Jobs reads a job's record for its extra addresses, room-mail scope
	// and webhook URLs. Nil disables all three.
	Jobs *jobview.Reader
	// Objects and Bucket locate room-mail bodies (mail.html, mail.txt)
	// and the files the mailed messages carry.
	Objects Objects
	Bucket  string
	// AttachMaxBytes caps the bytes of files one room mail attaches;
	// files past it are linked instead. Zero means DefaultAttachMaxBytes.
	AttachMaxBytes uint64
	// Mailer delivers the email.
	Mailer Mailer
	// Webhooks posts webhook events; nil disables webhooks.
	Webhooks *Webhooks
	// Links signs the download links; they expire LinkTTL after sending.
	Links   *links.Signer
	LinkTTL time.Duration
	// From is the sender of every email.
	From mail.Address
	// Publisher sends NotificationSent.
	Publisher Publisher
	// Topology supplies the notifier consumer's MaxDeliver, which decides
	// when the notifier stops retrying a send.
	Topology bus.Topology
	// ClaimTimeout is how long a send claimed by one delivery holds off
	// the others; after it, the holder is presumed dead and another
	// delivery sends. Keep it above the longest SMTP attempt. Zero means
	// twice the consumer's AckWait.
	ClaimTimeout time.Duration
	// MeterProvider records the sends (MetricSends); nil records nothing.
	MeterProvider metric.MeterProvider
	// Logger defaults to discarding; Now defaults to time.Now.
	Logger *slog.Logger
	Now    func() time.Time
}

// Notifier handles ExportCompleted, ExportFailed and ExportCanceled
// events. It is safe for concurrent use, also across replicas: a send
// record per job and channel in the notifications bucket, claimed before
// sending and revision-checked, lets one delivery per channel send while
// duplicates wait for its outcome.
type Notifier struct {
	users, sent  jetstream.KeyValue
	jobs         *jobview.Reader
	objects      Objects
	bucket       string
	attachMax    uint64
	mailer       Mailer
	webhooks     *Webhooks
	links        *links.Signer
	linkTTL      time.Duration
	from         mail.Address
	publisher    Publisher
	maxDeliver   int
	claimTimeout time.Duration
	log          *slog.Logger
	now          func() time.Time
	sends        metric.Int64Counter

	completedText, failedText *texttemplate.Template
	completedHTML, failedHTML *htmltemplate.Template
}

// New returns a Notifier, or an error naming a missing or invalid
// dependency.
func New(c Config) (*Notifier, error) {
	switch {
	case c.Users == nil || c.Sent == nil:
		return nil, errors.New("notify: users and notifications buckets are required")
	case c.Mailer == nil:
		return nil, errors.New("notify: mailer is required")
	case c.Links == nil || c.LinkTTL <= 0:
		return nil, errors.New("notify: link signer and a positive link TTL are required")
	case c.Publisher == nil:
		return nil, errors.New("notify: publisher is required")
	case c.Jobs != nil && (c.Objects == nil || c.Bucket == ""):
		return nil, errors.New("notify: with a job reader, an object store and bucket are required for room mail")
	}
	if _, err := mail.ParseAddress(c.From.String()); err != nil || c.From.Address == "" {
		return nil, fmt.Errorf("notify: sender address %q is invalid", c.From.String())
	}
	spec, err := c.Topology.Consumer(bus.ConsumerNotifier)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ClaimTimeout <= 0 {
		c.ClaimTimeout = 2 * spec.Config.AckWait
	}
	if c.MeterProvider == nil {
		c.MeterProvider = metricnoop.NewMeterProvider()
	}
	if c.AttachMaxBytes == 0 {
		c.AttachMaxBytes = DefaultAttachMaxBytes
	}
	sends, err := newSends(c.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	n := &Notifier{
		sends:        sends,
		users:        c.Users,
		sent:         c.Sent,
		jobs:         c.Jobs,
		objects:      c.Objects,
		bucket:       c.Bucket,
		attachMax:    c.AttachMaxBytes,
		mailer:       c.Mailer,
		webhooks:     c.Webhooks,
		links:        c.Links,
		linkTTL:      c.LinkTTL,
		from:         mail.Address{Name: oneLine(c.From.Name), Address: c.From.Address},
		publisher:    c.Publisher,
		maxDeliver:   spec.Config.MaxDeliver,
		claimTimeout: c.ClaimTimeout,
		log:          c.Logger,
		now:          c.Now,
	}
	if n.completedText, err = texttemplate.ParseFS(templateFS, "templates/completed.txt.tmpl"); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	if n.failedText, err = texttemplate.ParseFS(templateFS, "templates/failed.txt.tmpl"); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	if n.completedHTML, err = htmltemplate.ParseFS(templateFS, "templates/completed.html.tmpl"); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	if n.failedHTML, err = htmltemplate.ParseFS(templateFS, "templates/failed.html.tmpl"); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	return n, nil
}

// outcome is the end of one job as the notifier sees it: exactly one of
// completed, failed and canceled is set. job is the job's record, nil when
// there is none (or no job reader).
type outcome struct {
	jobID     string
	ownerID   string
	event     bus.Event
	at        time.Time
	completed *exportv1.ExportCompleted
	failed    *exportv1.ExportFailed
	canceled  *exportv1.ExportCanceled
	job       *exportv1.Job
}

// Handle is the bus.Handler of the notifier consumer
// (exports.status.{completed,failed,canceled}.*). It returns nil once every
// channel of the job is sent and recorded, or given up on and recorded; a
// transient failure of any channel is returned as a plain error so the
// message is retried with a growing delay, and the channels already done
// are skipped by their records.
func (n *Notifier) Handle(ctx context.Context, msg jetstream.Msg) error {
	ev, jobID, err := bus.ParseStatusSubject(msg.Subject())
	if err != nil {
		return bus.Permanent(err)
	}
	d := delivery{num: 1}
	if md, err := msg.Metadata(); err == nil {
		d = delivery{num: md.NumDelivered, streamSeq: md.Sequence.Stream}
	}
	o := outcome{jobID: jobID, event: ev}
	switch ev {
	case bus.EventCompleted:
		o.completed = &exportv1.ExportCompleted{}
		if err := bus.Decode(msg, o.completed); err != nil {
			return err
		}
		o.ownerID, o.at = o.completed.GetOwnerId(), o.completed.GetOccurredAt().AsTime()
	case bus.EventFailed:
		o.failed = &exportv1.ExportFailed{}
		if err := bus.Decode(msg, o.failed); err != nil {
			return err
		}
		o.ownerID, o.at = o.failed.GetOwnerId(), o.failed.GetOccurredAt().AsTime()
	case bus.EventCanceled:
		o.canceled = &exportv1.ExportCanceled{}
		if err := bus.Decode(msg, o.canceled); err != nil {
			return err
		}
		o.at = o.canceled.GetOccurredAt().AsTime()
	default:
		return bus.Permanent(fmt.Errorf("notify: unexpected event %q on %s", ev, msg.Subject()))
	}
	if o.job, err = n.loadJob(ctx, jobID); err != nil {
		return err
	}
	if o.ownerID == "" {
		o.ownerID = o.job.GetOwnerId()
	}
	return n.notify(ctx, o, d)
}

// loadJob reads the job's record; nil when there is none, when it cannot
// be decoded (the job still gets its owner's email) or without a reader.
func (n *Notifier) loadJob(ctx context.Context, jobID string) (*exportv1.Job, error) {
	if n.jobs == nil {
		return nil, nil
	}
	return n.jobs.Get(ctx, jobID)
}

// delivery is where a message stands: its delivery count and its
// sequence in the stream.
type delivery struct {
	num       uint64
	streamSeq uint64
}

// notify sends every channel of the job. A channel that fails transiently
// does not hold the others back; the message is retried for it alone.
func (n *Notifier) notify(ctx context.Context, o outcome, d delivery) error {
	log := n.log.With("job_id", o.jobID, "owner_id", o.ownerID, "delivery", d.num)
	var transient []error
	var permanent error
	record := func(err error) {
		switch {
		case err == nil:
		case bus.IsPermanent(err):
			permanent = cmpOr(permanent, err)
		default:
			transient = append(transient, err)
		}
	}
	// A canceled job gets no email: its owner canceled it.
	if o.canceled == nil {
		nt, err := n.emailFor(ctx, o)
		if err != nil {
			record(err)
		} else {
			record(n.sendOnce(ctx, log, o.jobID, d, nt))
		}
	}
	if n.webhooks != nil {
		for _, u := range n.webhooks.URLs(o.job.GetWebhookUrls()) {
			record(n.sendOnce(ctx, log, o.jobID, d, n.webhookFor(o, u)))
		}
	}
	if len(transient) > 0 {
		return errors.Join(transient...)
	}
	return permanent
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// notification is one message to deliver at most once: one email, or one
// webhook call.
type notification struct {
	// channel completes the record key "<jobId>.<channel>" and is the
	// NotificationSent discriminator.
	channel    string
	recipients []string
	// what names the delivery in failure reasons: "email to a@b.c".
	what string
	// problem, when set, is why the notification can never be sent; it is
	// recorded as given up without trying.
	problem string
	send    func(ctx context.Context) error
	// refused reports send errors no retry can fix.
	refused func(error) bool
}

// sendOnce delivers nt unless its record says it was handled, claiming the
// send first so that concurrent deliveries wait for its outcome, and
// publishes the outcome.
//
// The remaining window: a crash (or a lost KV write) after the server or
// receiver accepted the message and before the "sent" record is stored
// sends it again when the event is redelivered and the claim has timed
// out. Recording first would turn that into a lost message instead. A
// stable Message-ID lets mail clients fold a duplicate email, and a stable
// X-Dataport-Event-Id lets webhook receivers drop a duplicate call.
func (n *Notifier) sendOnce(ctx context.Context, log *slog.Logger, jobID string, d delivery, nt notification) error {
	log = log.With("channel", nt.channel)
	key := jobID + "." + nt.channel
	rec, rev, err := n.load(ctx, key)
	if err != nil {
		return err
	}
	if rec != nil {
		switch {
		case rec.final():
			// Handled before. Publishing the outcome again covers an
			// attempt that stopped between the record and the publish; the
			// event's dedup id keeps a repeat from being stored twice.
			log.InfoContext(ctx, "notification already handled for this job", "state", rec.State)
			return n.publish(ctx, jobID, nt.channel, rec)
		case rec.StreamSeq == d.streamSeq, n.now().Sub(rec.At) > n.claimTimeout:
			// Our own earlier attempt, or one whose holder died: take over.
		default:
			return fmt.Errorf("%s for job %s is being sent by another delivery since %s", nt.channel, jobID, rec.At.Format(time.RFC3339))
		}
	}
	if nt.problem != "" {
		return n.giveUp(ctx, log, jobID, nt.channel, key, rev, nt.recipients, nt.problem)
	}

	// Claim the send, so that a second delivery of the job's event handled
	// at the same time (another replica, or a duplicate event) waits for
	// this one instead of sending too.
	rev, err = n.store(ctx, key, rev, &sendRecord{State: stateSending, At: n.now(), StreamSeq: d.streamSeq})
	if err != nil {
		return err
	}
	err = nt.send(ctx)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		// Shutting down: the message goes back, and its redelivery may take
		// the claim over at once (same stream sequence).
		return fmt.Errorf("%s for job %s: %w", nt.what, jobID, err)
	case nt.refused(err):
		return n.giveUp(ctx, log, jobID, nt.channel, key, rev, nt.recipients, fmt.Sprintf("%s refused: %v", nt.what, err))
	case n.maxDeliver > 0 && d.num >= uint64(n.maxDeliver-1):
		// One delivery is held back so that, should recording the give-up
		// fail, it can still be recorded on the last one.
		return n.giveUp(ctx, log, jobID, nt.channel, key, rev, nt.recipients,
			fmt.Sprintf("%s not delivered after %d attempts: %v", nt.what, d.num, err))
	default:
		n.count(ctx, nt.channel, OutcomeError)
		log.WarnContext(ctx, "notification failed; will retry", "error", err)
		return fmt.Errorf("%s for job %s: %w", nt.what, jobID, err)
	}
	n.count(ctx, nt.channel, OutcomeSent)

	done := &sendRecord{State: stateSent, Recipients: nt.recipients, At: n.now()}
	if _, err := n.store(ctx, key, rev, done); err != nil {
		if !errors.Is(err, errConflict) {
			return err
		}
		// Our claim timed out and another delivery took over: it will
		// record and report its own send.
		log.WarnContext(ctx, "sent, but another delivery took the send over meanwhile")
	}
	log.InfoContext(ctx, "notification sent", "recipients", done.Recipients)
	return n.publish(ctx, jobID, nt.channel, done)
}

// giveUp records that a notification will not be sent, and why, and
// publishes that outcome; the job's notify_error then tells the owner.
// The message is then settled: nothing is left to retry.
func (n *Notifier) giveUp(ctx context.Context, log *slog.Logger, jobID, channel, key string, rev uint64, recipients []string, reason string) error {
	log.ErrorContext(ctx, "giving up on notification", "reason", reason)
	n.count(ctx, channel, OutcomeGivenUp)
	rec := &sendRecord{State: stateFailed, Recipients: recipients, Error: reason, At: n.now()}
	if _, err := n.store(ctx, key, rev, rec); err != nil {
		return err
	}
	return n.publish(ctx, jobID, channel, rec)
}

func (n *Notifier) publish(ctx context.Context, jobID, channel string, rec *sendRecord) error {
	ev := rec.event(jobID)
	ev.Channel = channel
	return n.publisher.PublishStatus(ctx, bus.EventNotified, jobID, channel, ev)
}

// webhookChannel is the channel of one webhook URL.
func webhookChannel(rawURL string) string {
	sum := sha256.Sum256([]byte(rawURL))
	return WebhookChannel + "." + hex.EncodeToString(sum[:])[:16]
}

// oneLine makes s safe as a header value: every control character,
// CR and LF included, becomes a space, so a value can never end its header
// line and start another.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return "dataport.local"
}

func kindText(k exportv1.JobKind) string {
	switch k {
	case exportv1.JobKind_JOB_KIND_ROOM:
		return "room history export"
	case exportv1.JobKind_JOB_KIND_USER_DATA:
		return "personal data download"
	case exportv1.JobKind_JOB_KIND_RECORDS:
		return "records export"
	}
	return "export"
}

// humanSize renders n bytes in binary units: "512 B", "1.5 KiB", "12.0 MiB".
func humanSize(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
