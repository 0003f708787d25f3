// Package notify emails a job's owner when the export completed (with
// signed download links) or failed (with what went wrong and what to do),
// once per job even when the event is delivered more than once, and
// reports the outcome as a NotificationSent event.
package notify

import (
	"context"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"log/slog"
	"net/mail"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/links"
)

// Channel is the notification channel this package serves: the last token
// of the send record's key "<jobId>.email" and the discriminator of the
// NotificationSent dedup id.
const Channel = "email"

// Subjects of the emails; the completed one is followed by the file name.
const (
	SubjectCompleted = "Your Dataport export is ready"
	SubjectFailed    = "Your Dataport export failed"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

// Publisher publishes a job's status events. *bus.Publisher implements it.
type Publisher interface {
	PublishStatus(ctx context.Context, ev bus.Event, jobID, discriminator string, m proto.Message) error
}

// Config holds a Notifier's dependencies.
type Config struct {
	// Users is the users bucket (sourcev1.User by id).
	Users jetstream.KeyValue
	// Sent is the notifications bucket; the notifier keeps its send
	// records there under "<jobId>.email".
	Sent jetstream.KeyValue
	// Mailer delivers the email.
	Mailer Mailer
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
	// Logger defaults to discarding; Now defaults to time.Now.
	Logger *slog.Logger
	Now    func() time.Time
}

// Notifier handles ExportCompleted and ExportFailed events. It is safe for
// concurrent use, also across replicas: a send record in the notifications
// bucket, claimed before sending and revision-checked, lets one delivery
// per job send while duplicates wait for its outcome.
type Notifier struct {
	users, sent  jetstream.KeyValue
	mailer       Mailer
	links        *links.Signer
	linkTTL      time.Duration
	from         mail.Address
	publisher    Publisher
	maxDeliver   int
	claimTimeout time.Duration
	log          *slog.Logger
	now          func() time.Time

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
	n := &Notifier{
		users:        c.Users,
		sent:         c.Sent,
		mailer:       c.Mailer,
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
// completed and failed is set.
type outcome struct {
	jobID     string
	ownerID   string
	completed *exportv1.ExportCompleted
	failed    *exportv1.ExportFailed
}

// Handle is the bus.Handler of the notifier consumer
// (exports.status.completed.*, exports.status.failed.*). It returns nil
// once the email is sent and recorded, or once the notifier gave up and
// recorded why; a transient failure is returned as a plain error so the
// message is retried with a growing delay.
func (n *Notifier) Handle(ctx context.Context, msg jetstream.Msg) error {
	ev, jobID, err := bus.ParseStatusSubject(msg.Subject())
	if err != nil {
		return bus.Permanent(err)
	}
	d := delivery{num: 1}
	if md, err := msg.Metadata(); err == nil {
		d = delivery{num: md.NumDelivered, streamSeq: md.Sequence.Stream}
	}
	o := outcome{jobID: jobID}
	switch ev {
	case bus.EventCompleted:
		o.completed = &exportv1.ExportCompleted{}
		if err := bus.Decode(msg, o.completed); err != nil {
			return err
		}
		o.ownerID = o.completed.GetOwnerId()
	case bus.EventFailed:
		o.failed = &exportv1.ExportFailed{}
		if err := bus.Decode(msg, o.failed); err != nil {
			return err
		}
		o.ownerID = o.failed.GetOwnerId()
	default:
		return bus.Permanent(fmt.Errorf("notify: unexpected event %q on %s", ev, msg.Subject()))
	}
	return n.notify(ctx, o, d)
}

// delivery is where a message stands: its delivery count and its
// sequence in the stream.
type delivery struct {
	num       uint64
	streamSeq uint64
}

func (n *Notifier) notify(ctx context.Context, o outcome, d delivery) error {
	log := n.log.With("job_id", o.jobID, "owner_id", o.ownerID, "delivery", d.num)
	key := o.jobID + "." + Channel
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
			log.InfoContext(ctx, "email already handled for this job", "state", rec.State)
			return n.publish(ctx, o.jobID, rec)
		case rec.StreamSeq == d.streamSeq, n.now().Sub(rec.At) > n.claimTimeout:
			// Our own earlier attempt, or one whose holder died: take over.
		default:
			return fmt.Errorf("email for job %s is being sent by another delivery since %s", o.jobID, rec.At.Format(time.RFC3339))
		}
	}

	to, err := n.recipient(ctx, o.ownerID)
	if err != nil {
		if !bus.IsPermanent(err) {
			return err
		}
		if gerr := n.giveUp(ctx, log, o.jobID, key, rev, nil, err.Error()); gerr != nil {
			return gerr
		}
		return err
	}
	email, err := n.compose(o, to)
	if err != nil {
		// A template that cannot render this job will not render it on
		// a retry either.
		if gerr := n.giveUp(ctx, log, o.jobID, key, rev, []string{to.Address}, err.Error()); gerr != nil {
			return gerr
		}
		return bus.Permanent(err)
	}

	// Claim the send, so that a second delivery of the job's event handled
	// at the same time (another replica, or a duplicate event) waits for
	// this one instead of sending too.
	rev, err = n.store(ctx, key, rev, &sendRecord{State: stateSending, At: n.now(), StreamSeq: d.streamSeq})
	if err != nil {
		return err
	}
	err = n.mailer.Send(ctx, email)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		// Shutting down: the message goes back, and its redelivery may take
		// the claim over at once (same stream sequence).
		return fmt.Errorf("send email for job %s: %w", o.jobID, err)
	case errors.Is(err, ErrRejected), errors.Is(err, ErrHeaderInjection):
		return n.giveUp(ctx, log, o.jobID, key, rev, []string{to.Address}, fmt.Sprintf("email to %s refused: %v", to.Address, err))
	case n.maxDeliver > 0 && d.num >= uint64(n.maxDeliver-1):
		// One delivery is held back so that, should recording the give-up
		// fail, it can still be recorded on the last one.
		return n.giveUp(ctx, log, o.jobID, key, rev, []string{to.Address},
			fmt.Sprintf("email to %s not delivered after %d attempts: %v", to.Address, d.num, err))
	default:
		return fmt.Errorf("send email for job %s: %w", o.jobID, err)
	}

	// The remaining window: a crash (or a lost KV write) after the server
	// accepted the email and before this record is stored sends the email
	// again when the event is redelivered. Recording first would turn that
	// into a lost email instead; the stable Message-ID lets mail clients
	// fold the duplicate.
	done := &sendRecord{State: stateSent, Recipients: []string{to.Address}, At: n.now()}
	if _, err := n.store(ctx, key, rev, done); err != nil {
		if !errors.Is(err, errConflict) {
			return err
		}
		// Our claim timed out and another delivery took over: it will
		// record and report its own send.
		log.WarnContext(ctx, "email sent, but another delivery took the send over meanwhile")
	}
	log.InfoContext(ctx, "email sent", "recipients", done.Recipients)
	return n.publish(ctx, o.jobID, done)
}

// giveUp records that the job's email will not be sent, and why, and
// publishes that outcome; the job's notify_error then tells the owner.
func (n *Notifier) giveUp(ctx context.Context, log *slog.Logger, jobID, key string, rev uint64, recipients []string, reason string) error {
	log.ErrorContext(ctx, "giving up on email", "reason", reason)
	rec := &sendRecord{State: stateFailed, Recipients: recipients, Error: reason, At: n.now()}
	if _, err := n.store(ctx, key, rev, rec); err != nil {
		return err
	}
	return n.publish(ctx, jobID, rec)
}

func (n *Notifier) publish(ctx context.Context, jobID string, rec *sendRecord) error {
	return n.publisher.PublishStatus(ctx, bus.EventNotified, jobID, Channel, rec.event(jobID))
}

// recipient looks up the owner's address. Anything that stops it from
// being found is permanent: the user record will not change because the
// event is delivered again.
func (n *Notifier) recipient(ctx context.Context, ownerID string) (mail.Address, error) {
	entry, err := n.users.Get(ctx, ownerID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrInvalidKey):
		return mail.Address{}, bus.Permanent(fmt.Errorf("owner %q not found", ownerID))
	case err != nil:
		return mail.Address{}, fmt.Errorf("look up owner %q: %w", ownerID, err)
	}
	var u sourcev1.User
	if err := proto.Unmarshal(entry.Value(), &u); err != nil {
		return mail.Address{}, bus.Permanent(fmt.Errorf("decode owner %q: %w", ownerID, err))
	}
	email := strings.TrimSpace(u.GetEmail())
	if email == "" {
		return mail.Address{}, bus.Permanent(fmt.Errorf("owner %q has no email address", ownerID))
	}
	// net/mail folds some line breaks away while parsing; an address that
	// had one is not what the user typed, so it is refused outright.
	if strings.ContainsAny(email, "\r\n") {
		return mail.Address{}, bus.Permanent(fmt.Errorf("owner %q: email address contains a line break", ownerID))
	}
	addr, err := mail.ParseAddress(email)
	if err != nil {
		return mail.Address{}, bus.Permanent(fmt.Errorf("owner %q: email address %q: %w", ownerID, email, err))
	}
	name := oneLine(u.GetName())
	if name == "" {
		name = oneLine(addr.Name)
	}
	return mail.Address{Name: name, Address: addr.Address}, nil
}

// fileView is one file line of the completed email.
type fileView struct {
	Name string
	Size string
	URL  string
}

// mailView is what the templates render.
type mailView struct {
	Name    string
	JobID   string
	Kind    string
	Files   []fileView
	Expires string
	Reason  string
	Advice  string
}

func (n *Notifier) compose(o outcome, to mail.Address) (Email, error) {
	v := mailView{Name: to.Name, JobID: o.jobID}
	if v.Name == "" {
		v.Name = "there"
	}
	e := Email{
		From: n.from,
		To:   []mail.Address{to},
		// Stable per job and channel, so a duplicate send (see notify)
		// is recognisable as the same message.
		MessageID: o.jobID + "." + Channel + "@" + domainOf(n.from.Address),
	}
	var text *texttemplate.Template
	var html *htmltemplate.Template
	if c := o.completed; c != nil {
		exp := n.now().Add(n.linkTTL)
		v.Kind = kindText(c.GetKind())
		v.Expires = exp.UTC().Format("Monday, 2 January 2006 at 15:04 MST")
		for _, f := range c.GetFiles() {
			v.Files = append(v.Files, fileView{
				Name: f.GetName(),
				Size: humanSize(f.GetSize()),
				URL:  n.links.URLUntil(o.jobID, f.GetName(), exp),
			})
		}
		e.Subject = SubjectCompleted
		switch len(v.Files) {
		case 0:
		case 1:
			e.Subject += ": " + v.Files[0].Name
		default:
			e.Subject += fmt.Sprintf(": %s and %d more", v.Files[0].Name, len(v.Files)-1)
		}
		text, html = n.completedText, n.completedHTML
	} else {
		v.Reason = o.failed.GetReason()
		if v.Reason == "" {
			v.Reason = "an internal error stopped the export."
		}
		if o.failed.GetRejected() {
			v.Advice = "this request cannot succeed as it was made. Change it (for example a shorter date range or fewer rooms) and request the export again."
		} else {
			v.Advice = "request the export again. If it fails again, contact support and mention the export id " + o.jobID + "."
		}
		e.Subject = SubjectFailed
		text, html = n.failedText, n.failedHTML
	}
	// File names come from room names, which users choose.
	e.Subject = oneLine(e.Subject)

	var b strings.Builder
	if err := text.Execute(&b, v); err != nil {
		return Email{}, fmt.Errorf("render text email: %w", err)
	}
	e.Text = b.String()
	b.Reset()
	if err := html.Execute(&b, v); err != nil {
		return Email{}, fmt.Errorf("render HTML email: %w", err)
	}
	e.HTML = b.String()
	return e, nil
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
