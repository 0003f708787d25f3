package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"net/mail"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
)

// Names of a room-mail job's files, as the exporter produces them.
const (
	MailHTMLName = "mail.html"
	MailTextName = "mail.txt"
	// maxMailBody bounds each body read into memory for sending.
	maxMailBody = 10 << 20
)

// isRefusedEmail reports send errors no retry can fix.
func isRefusedEmail(err error) bool {
	return errors.Is(err, ErrRejected) || errors.Is(err, ErrHeaderInjection)
}

// emailFor builds the job's email. Problems that no retry can fix (no
// address, a template that cannot render the job) come back in the
// notification's problem; an error is transient.
func (n *Notifier) emailFor(ctx context.Context, o outcome) (notification, error) {
	nt := notification{channel: Channel, refused: isRefusedEmail, what: "email"}
	if o.completed != nil && (o.completed.GetKind() == exportv1.JobKind_JOB_KIND_ROOM_MAIL || o.job.GetKind() == exportv1.JobKind_JOB_KIND_ROOM_MAIL) {
		return n.roomMail(ctx, o, nt)
	}
	to, err := n.recipients(ctx, o)
	if err != nil {
		if perm, ok := errors.AsType[*bus.PermanentError](err); ok {
			nt.problem = perm.Err.Error()
			return nt, nil
		}
		return nt, err
	}
	nt.recipients, nt.what = addresses(to), "email to "+strings.Join(addresses(to), ", ")
	emails := make([]Email, 0, len(to))
	for i, a := range to {
		email, err := n.compose(o, a)
		if err != nil {
			// A template that cannot render this job will not render it on
			// a retry either.
			nt.problem = err.Error()
			return nt, nil
		}
		email.MessageID = messageID(o.jobID, i, a, n.from)
		emails = append(emails, email)
	}
	nt.send = func(ctx context.Context) error { return n.sendEach(ctx, emails) }
	return nt, nil
}

// sendEach sends every email, one recipient each, so that no recipient
// sees another's address (they are the owner's colleagues or customers,
// not each other's). A refused address does not keep the others from
// theirs; any transient failure is returned, and the retry sends every
// email again under the same Message-IDs, which mail clients fold.
func (n *Notifier) sendEach(ctx context.Context, emails []Email) error {
	var refused, transient []error
	for _, e := range emails {
		err := n.mailer.Send(ctx, e)
		switch {
		case err == nil:
		case isRefusedEmail(err):
			refused = append(refused, err)
		default:
			transient = append(transient, err)
		}
	}
	if len(transient) > 0 {
		return errors.Join(transient...)
	}
	return errors.Join(refused...)
}

// messageID is the stable Message-ID of the job's email to its i-th
// recipient: the first (the owner, usually) keeps the job's plain id,
// the others add a digest of their address.
func messageID(jobID string, i int, to mail.Address, from mail.Address) string {
	id := jobID + "." + Channel
	if i > 0 {
		sum := sha256.Sum256([]byte(strings.ToLower(to.Address)))
		id += "." + hex.EncodeToString(sum[:6])
	}
	return id + "@" + domainOf(from.Address)
}

func addresses(to []mail.Address) []string {
	out := make([]string, len(to))
	for i, a := range to {
		out[i] = a.Address
	}
	return out
}

// recipients are the job's owner and the job's extra addresses
// (notify_emails, e.g. Rebilly's emailNotification of a recurring
// export), without repeats. An owner without a usable address is
// permanent unless the job names other addresses, which then get the
// email alone.
func (n *Notifier) recipients(ctx context.Context, o outcome) ([]mail.Address, error) {
	var to []mail.Address
	seen := map[string]bool{}
	add := func(a mail.Address) {
		if k := strings.ToLower(a.Address); !seen[k] {
			seen[k] = true
			to = append(to, a)
		}
	}
	owner, ownerErr := n.recipient(ctx, o.ownerID)
	if ownerErr == nil {
		add(owner)
	} else if !bus.IsPermanent(ownerErr) {
		return nil, ownerErr
	}
	for _, raw := range o.job.GetNotifyEmails() {
		a, err := parseAddress(raw)
		if err != nil {
			// The gateway validates addresses on input; one that slipped
			// through must not stop the others.
			n.log.WarnContext(ctx, "skipping unusable notification address", "job_id", o.jobID, "error", err)
			continue
		}
		add(a)
	}
	if len(to) == 0 {
		if ownerErr != nil {
			return nil, ownerErr
		}
		return nil, bus.Permanent(errors.New("no recipient"))
	}
	return to, nil
}

// parseAddress parses one address, refusing line breaks outright: net/mail
// folds some away while parsing, and an address that had one is not what
// anyone typed.
func parseAddress(raw string) (mail.Address, error) {
	raw = strings.TrimSpace(raw)
	if strings.ContainsAny(raw, "\r\n") {
		return mail.Address{}, fmt.Errorf("email address %q contains a line break", raw)
	}
	a, err := mail.ParseAddress(raw)
	if err != nil {
		return mail.Address{}, fmt.Errorf("email address %q: %w", raw, err)
	}
	return mail.Address{Name: oneLine(a.Name), Address: a.Address}, nil
}

// roomMail builds the email of a room-mail job (Rocket.Chat rooms.export
// with type "email"): the selected messages, rendered by the exporter as
// mail.html and mail.txt, sent to the job's addresses with its subject,
// with the files those messages carry attached or linked (mailFiles).
func (n *Notifier) roomMail(ctx context.Context, o outcome, nt notification) (notification, error) {
	scope := o.job.GetMail()
	var to []mail.Address
	seen := map[string]bool{}
	for _, raw := range scope.GetToEmails() {
		a, err := parseAddress(raw)
		if err != nil {
			n.log.WarnContext(ctx, "skipping unusable room-mail address", "job_id", o.jobID, "error", err)
			continue
		}
		if k := strings.ToLower(a.Address); !seen[k] {
			seen[k] = true
			to = append(to, a)
		}
	}
	if len(to) == 0 {
		nt.problem = "room mail has no usable recipient address"
		return nt, nil
	}
	nt.recipients, nt.what = addresses(to), "email to "+strings.Join(addresses(to), ", ")
	subject := strings.Join(strings.Fields(oneLine(scope.GetSubject())), " ")
	if subject == "" {
		subject = SubjectRoomMail
	}
	e := Email{
		From:    n.from,
		Subject: subject,
	}
	for _, f := range o.completed.GetFiles() {
		var dst *string
		switch f.GetName() {
		case MailHTMLName:
			dst = &e.HTML
		case MailTextName:
			dst = &e.Text
		default:
			continue
		}
		body, problem, err := n.readBody(ctx, f)
		if err != nil {
			return nt, err
		}
		if problem != "" {
			nt.problem = problem
			return nt, nil
		}
		*dst = body
	}
	if e.HTML == "" && e.Text == "" {
		nt.problem = "room mail job completed without " + MailHTMLName + " or " + MailTextName
		return nt, nil
	}
	files, attached, err := n.mailFiles(ctx, o.jobID, o.completed.GetFiles())
	if err != nil {
		return nt, err
	}
	e.Text, e.HTML, e.Attachments = appendFilesText(e.Text, files), appendFilesHTML(e.HTML, files), attached
	// One message per address, as for notifications.
	emails := make([]Email, 0, len(to))
	for i, a := range to {
		one := e
		one.To = []mail.Address{a}
		one.MessageID = messageID(o.jobID, i, a, n.from)
		emails = append(emails, one)
	}
	nt.send = func(ctx context.Context) error { return n.sendEach(ctx, emails) }
	return nt, nil
}

// readBody reads one room-mail body from the object store.
func (n *Notifier) readBody(ctx context.Context, f *exportv1.File) (body, problem string, err error) {
	rc, _, err := n.objects.Open(ctx, objects.Bucket(f, n.bucket), f.GetObjectKey())
	switch {
	case errors.Is(err, blob.ErrNotFound), errors.Is(err, blob.ErrInvalidArgument):
		return "", fmt.Sprintf("room mail body %s is missing", f.GetName()), nil
	case err != nil:
		return "", "", fmt.Errorf("open %s: %w", f.GetName(), err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxMailBody+1))
	if err != nil {
		return "", "", fmt.Errorf("read %s: %w", f.GetName(), err)
	}
	if len(data) > maxMailBody {
		return "", fmt.Sprintf("room mail body %s is larger than %d MiB", f.GetName(), maxMailBody>>20), nil
	}
	return string(data), "", nil
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

// fileView is one file line of an email.
type fileView struct {
	Name   string
	Size   string
	SHA256 string
	URL    string
}

// mailView is what the templates render.
type mailView struct {
	Name  string
	JobID string
	Kind  string
	Files []fileView
	// Manifest and Archive are a completed job's manifest.json and its
	// zip (a room export with its attachments), when it has them.
	Manifest, Archive *fileView
	// Partial are the files a failed job finished before it stopped.
	Partial []fileView
	Expires string
	Reason  string
	Advice  string
}

// fileLink is f's line with a link signed until exp.
func (n *Notifier) fileLink(jobID string, f *exportv1.File, exp time.Time) fileView {
	return fileView{
		Name:   f.GetName(),
		Size:   humanSize(f.GetSize()),
		SHA256: f.GetSha256(),
		URL:    n.links.URLUntil(jobID, f.GetName(), exp),
	}
}

// partialFiles are the failed job's partial results: those its failure
// event names and those its record holds (a part that failed before, or
// a canceled part's), each once. A file without an object is left out.
func partialFiles(o outcome) []*exportv1.File {
	var out []*exportv1.File
	seen := map[string]bool{}
	for _, f := range append(append([]*exportv1.File(nil), o.failed.GetPartialFiles()...), o.job.GetPartialFiles()...) {
		if f.GetMissing() || f.GetObjectKey() == "" || seen[f.GetName()] {
			continue
		}
		seen[f.GetName()] = true
		out = append(out, f)
	}
	return out
}

// compose renders the job's email to one recipient. The caller sets the
// Message-ID (messageID): stable per job, channel and recipient, so a
// duplicate send (see notify) is recognisable as the same message.
func (n *Notifier) compose(o outcome, to mail.Address) (Email, error) {
	v := mailView{JobID: o.jobID, Name: to.Name}
	if v.Name == "" {
		v.Name = "there"
	}
	e := Email{
		From: n.from,
		To:   []mail.Address{to},
	}
	var text *texttemplate.Template
	var html *htmltemplate.Template
	exp := n.now().Add(n.linkTTL)
	v.Expires = exp.UTC().Format("Monday, 2 January 2006 at 15:04 MST")
	if c := o.completed; c != nil {
		v.Kind = kindText(c.GetKind())
		for _, f := range c.GetFiles() {
			v.Files = append(v.Files, n.fileLink(o.jobID, f, exp))
		}
		if f := c.GetManifest(); f != nil {
			fv := n.fileLink(o.jobID, f, exp)
			v.Manifest = &fv
		}
		if f := c.GetArchive(); f != nil {
			fv := n.fileLink(o.jobID, f, exp)
			v.Archive = &fv
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
		for _, f := range partialFiles(o) {
			v.Partial = append(v.Partial, n.fileLink(o.jobID, f, exp))
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
