package notify

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"strings"
	"time"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/objects"
)

// DefaultAttachMaxBytes is how many bytes of files a room mail attaches
// when Config.AttachMaxBytes is zero: 10 MiB, which base64 makes about
// 13.7 MB on the wire, below the 20–25 MB most mail servers accept.
const DefaultAttachMaxBytes = 10 << 20

// Ways a file a room mail names reaches its reader.
const (
	fileAttached = "attached"
	fileLinked   = "linked"
	fileMissing  = "missing"
)

// mailFile is one file of a room mail as its reader is told about it.
type mailFile struct {
	name string
	size uint64
	how  string
	// url and until are a linked file's signed link and its expiry.
	url   string
	until time.Time
}

// mailFiles decides how each file the mailed messages carry (the job's
// files besides the two bodies; the exporter lists them by reference into
// the assets bucket) reaches the readers: attached while the attached
// bytes stay within the cap, in the messages' order, else by a signed
// download link valid for the link TTL. A file whose object is gone by
// now is named as missing, never linked. An error is transient.
func (n *Notifier) mailFiles(ctx context.Context, jobID string, files []*exportv1.File) ([]mailFile, []Attachment, error) {
	var (
		out      []mailFile
		attached []Attachment
		total    uint64
	)
	until := n.now().Add(n.linkTTL)
	for _, f := range files {
		if f.GetName() == MailHTMLName || f.GetName() == MailTextName {
			continue
		}
		mf := mailFile{name: f.GetName(), size: f.GetSize()}
		bucket := objects.Bucket(f, n.bucket)
		var data []byte
		fits := total+f.GetSize() <= n.attachMax
		if fits {
			var err error
			data, err = n.readFile(ctx, bucket, f, n.attachMax-total)
			switch {
			case isGone(err):
				mf.how = fileMissing
			case errors.Is(err, errLargerThanRecorded):
				fits = false
			case err != nil:
				return nil, nil, err
			}
		}
		switch {
		case mf.how == fileMissing:
		case fits:
			mf.how, mf.size = fileAttached, uint64(len(data))
			total += mf.size
			ct := f.GetContentType()
			if ct == "" {
				ct = "application/octet-stream"
			}
			attached = append(attached, Attachment{Name: oneLine(f.GetName()), ContentType: oneLine(ct), Data: data})
		default:
			// Linked only while it exists: a link to nothing is what the
			// reader must never get.
			info, err := n.objects.Stat(ctx, bucket, f.GetObjectKey())
			switch {
			case isGone(err):
				mf.how = fileMissing
			case err != nil:
				return nil, nil, fmt.Errorf("stat %s: %w", f.GetName(), err)
			default:
				mf.how, mf.url, mf.until = fileLinked, n.links.URLUntil(jobID, f.GetName(), until), until
				mf.size = uint64(max(info.Size, 0))
			}
		}
		out = append(out, mf)
	}
	return out, attached, nil
}

// isGone reports a store error that says the object is not there.
func isGone(err error) bool {
	return errors.Is(err, blob.ErrNotFound) || errors.Is(err, blob.ErrInvalidArgument)
}

// readFile reads a file to attach, at most limit bytes (what is left of
// the cap): its record's size was checked against the cap, and bounding
// the read too keeps a record that understates its object from growing
// the mail past it.
func (n *Notifier) readFile(ctx context.Context, bucket string, f *exportv1.File, limit uint64) ([]byte, error) {
	rc, _, err := n.objects.Open(ctx, bucket, f.GetObjectKey())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", f.GetName(), err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.GetName(), err)
	}
	if uint64(len(data)) > limit {
		return nil, fmt.Errorf("read %s: %w", f.GetName(), errLargerThanRecorded)
	}
	return data, nil
}

// errLargerThanRecorded is an attachment whose object holds more bytes
// than the cap although its record said it fit.
var errLargerThanRecorded = errors.New("object is larger than its record and the attachment cap")

// appendFilesText ends the plain-text body with the list of files.
func appendFilesText(body string, files []mailFile) string {
	if len(files) == 0 {
		return body
	}
	var b strings.Builder
	b.WriteString(strings.TrimRight(body, "\n"))
	b.WriteString("\n\nFiles\n")
	for _, f := range files {
		b.WriteString("- ")
		b.WriteString(oneLine(f.name))
		switch f.how {
		case fileAttached:
			fmt.Fprintf(&b, " (%s): attached\n", humanSize(f.size))
		case fileLinked:
			fmt.Fprintf(&b, " (%s): too large to attach, download until %s:\n  %s\n", humanSize(f.size), linkExpiry(f.until), f.url)
		default:
			b.WriteString(": missing, the file is no longer available\n")
		}
	}
	return b.String()
}

// appendFilesHTML adds the list of files to the HTML body: inside its
// </body> when it is a whole page, else after the fragment.
func appendFilesHTML(body string, files []mailFile) string {
	if len(files) == 0 {
		return body
	}
	var b strings.Builder
	b.WriteString("<div class=\"dataport-files\">\n<h3>Files</h3>\n<ul>\n")
	for _, f := range files {
		b.WriteString("<li>")
		switch f.how {
		case fileAttached:
			fmt.Fprintf(&b, "%s (%s): attached", html.EscapeString(f.name), humanSize(f.size))
		case fileLinked:
			fmt.Fprintf(&b, "<a href=\"%s\">%s</a> (%s): too large to attach, download until %s",
				html.EscapeString(f.url), html.EscapeString(f.name), humanSize(f.size), html.EscapeString(linkExpiry(f.until)))
		default:
			fmt.Fprintf(&b, "%s: missing, the file is no longer available", html.EscapeString(f.name))
		}
		b.WriteString("</li>\n")
	}
	b.WriteString("</ul>\n</div>\n")
	if i := strings.LastIndex(strings.ToLower(body), "</body>"); i >= 0 {
		return body[:i] + b.String() + body[i:]
	}
	return strings.TrimRight(body, "\n") + "\n" + b.String()
}

func linkExpiry(t time.Time) string { return t.UTC().Format("2 January 2006 15:04 MST") }
