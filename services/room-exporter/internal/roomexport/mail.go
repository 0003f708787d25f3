package roomexport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/taskrun"
)

// Mail part file names; the notifier sends them as the HTML and the plain
// text alternative of one mail.
const (
	MailHTMLFile = "mail.html"
	MailTextFile = "mail.txt"
)

// selector picks messages out of a replay.
type selector interface {
	// keep reports whether m is wanted.
	keep(m *sourcev1.ChatMessage) bool
	// done reports whether nothing more is wanted, which ends the replay.
	done() bool
}

// idSelector wants each of a list of message ids once. Its memory is the
// list itself, which the requester chose by hand.
type idSelector struct {
	found     map[string]bool
	remaining int
}

func newIDSelector(ids []string) *idSelector {
	s := &idSelector{found: make(map[string]bool, len(ids))}
	for _, id := range ids {
		if _, dup := s.found[id]; !dup && id != "" {
			s.found[id] = false
			s.remaining++
		}
	}
	return s
}

func (s *idSelector) keep(m *sourcev1.ChatMessage) bool {
	found, wanted := s.found[m.GetId()]
	if !wanted || found {
		return false
	}
	s.found[m.GetId()] = true
	s.remaining--
	return true
}

func (s *idSelector) done() bool { return s.remaining == 0 }

// exportMail renders the messages a room mail selected, in the room's
// order, as an HTML body fragment and its plain-text alternative, and
// lists the files those messages carry after the two bodies, by
// reference into the assets bucket (as the user-data assets part does),
// for the notifier to attach or link. A file whose object is gone is
// named in both bodies as missing instead, and not listed. Ids that are
// not in the room are skipped and counted.
func (e *Exporter) exportMail(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
	task := t.Task
	t.Log = t.Log.With("room_id", task.GetRoom().GetRoomId())
	room, h, err := e.prepareRoom(ctx, task)
	if err != nil {
		return nil, err
	}
	defer h.close()
	sel := newIDSelector(task.GetMail().GetMessageIds())
	var (
		res     uploadResult
		counter countingWriter
		assets  *mailAssets
	)
	specs := []objectSpec{
		{name: MailHTMLFile, contentType: "text/html; charset=utf-8"},
		{name: MailTextFile, contentType: "text/plain; charset=utf-8"},
	}
	files, err := e.uploadObjects(ctx, task, specs, func(ctx context.Context, ws []io.Writer) error {
		// A retried upload renders again from the start: the files found
		// are the last attempt's.
		assets = &mailAssets{ctx: ctx, e: e, seen: map[string]bool{}}
		r := &mailRenderer{html: newHTMLFragment(ws[0]), text: &textRenderer{w: ws[1]}, assets: assets}
		return e.render(ctx, t, r, room, h, &counter, &res, sel)
	})
	if err != nil {
		return nil, err
	}
	var size uint64
	for _, f := range files {
		f.Records = res.records
		size += f.GetSize()
	}
	for _, f := range assets.files {
		size += f.GetSize()
	}
	files = append(files, assets.files...)
	return &taskrun.Result{Files: files, Records: res.records, Bytes: size, FileList: true,
		Log: []any{"missing", sel.remaining, "files", len(assets.files), "files_missing", assets.missing}}, nil
}

// MailAssetName is the name under which a room mail's job lists a file a
// message carries: "<fileId>-<name>", cleaned, so it is one path segment
// of a download link and never a body's name (it always has the "-").
func MailAssetName(fileID, name string) string {
	return objects.CleanFileName(fileID+"-"+name, "file")
}

// missingSuffix follows the title of a file that a mailed message names
// but whose object is gone.
const missingSuffix = " (missing: the file is no longer available)"

// mailAssets finds the files the mailed messages carry, each once.
type mailAssets struct {
	ctx     context.Context
	e       *Exporter
	seen    map[string]bool
	files   []*exportv1.File
	missing int
	// gone remembers missing file ids, so a later version of a message
	// names them missing too.
	gone map[string]bool
}

// check looks m's attachments up. It returns m itself when every file is
// there, else a copy whose missing files say so in their titles.
func (a *mailAssets) check(m *sourcev1.ChatMessage) (*sourcev1.ChatMessage, error) {
	var marked []*sourcev1.Attachment
	for i, at := range m.GetAttachments() {
		missing, err := a.lookup(at)
		if err != nil {
			return nil, err
		}
		if !missing {
			continue
		}
		if marked == nil {
			marked = slices.Clone(m.GetAttachments())
		}
		c := proto.CloneOf(at)
		c.Title = firstNonEmpty(at.GetTitle(), at.GetName()) + missingSuffix
		marked[i] = c
	}
	if marked == nil {
		return m, nil
	}
	c := proto.CloneOf(m)
	c.Attachments = marked
	return c, nil
}

// lookup describes at's object once per file id and reports whether it is
// missing.
func (a *mailAssets) lookup(at *sourcev1.Attachment) (missing bool, err error) {
	id := at.GetFileId()
	if id == "" {
		// Not an uploaded file (nothing to attach); named as it is.
		return false, nil
	}
	if a.seen[id] {
		return a.gone[id], nil
	}
	a.seen[id] = true
	f, err := a.e.describeAsset(a.ctx, at)
	if errors.Is(err, blob.ErrNotFound) {
		if a.gone == nil {
			a.gone = map[string]bool{}
		}
		a.gone[id] = true
		a.missing++
		return true, nil
	}
	if err != nil {
		return false, err
	}
	f.Name = MailAssetName(id, at.GetName())
	a.files = append(a.files, f)
	return false, nil
}

// mailRenderer writes each message into both alternatives of the mail.
type mailRenderer struct {
	html   *htmlRenderer
	text   *textRenderer
	assets *mailAssets
}

func (r *mailRenderer) Begin(room *sourcev1.Room) error {
	if err := r.html.Begin(room); err != nil {
		return err
	}
	return r.text.Begin(room)
}

func (r *mailRenderer) Message(m *sourcev1.ChatMessage) error {
	m, err := r.assets.check(m)
	if err != nil {
		return err
	}
	if err := r.html.Message(m); err != nil {
		return err
	}
	return r.text.Message(m)
}

func (r *mailRenderer) End() error {
	if err := r.html.End(); err != nil {
		return err
	}
	return r.text.End()
}

// textRenderer writes messages as plain text, one block per message.
type textRenderer struct {
	w   io.Writer
	buf []byte
}

func (r *textRenderer) Begin(room *sourcev1.Room) error {
	_, err := fmt.Fprintf(r.w, "Messages from %s (all times UTC)\n\n", RoomTitle(room))
	return err
}

func (r *textRenderer) Message(m *sourcev1.ChatMessage) error {
	b := r.buf[:0]
	if m.GetSystemType() != "" {
		b = appendTime(b, m.GetTs().AsTime())
		b = append(b, " — "...)
		b = append(b, plainSystemSentence(m)...)
		b = append(b, "\n\n"...)
	} else {
		u := m.GetUser()
		b = append(b, firstNonEmpty(u.GetName(), u.GetUsername())...)
		b = append(b, " (@"...)
		b = append(b, u.GetUsername()...)
		b = append(b, "), "...)
		b = appendTime(b, m.GetTs().AsTime())
		if m.GetEditedAt() != nil || m.GetEditedBy() != nil {
			b = append(b, " (edited"...)
			if e := m.GetEditedBy(); e.GetUsername() != "" {
				b = append(b, " by @"...)
				b = append(b, e.GetUsername()...)
			}
			if m.GetEditedAt() != nil {
				b = append(b, " at "...)
				b = appendTime(b, m.GetEditedAt().AsTime())
			}
			b = append(b, ')')
		}
		b = append(b, '\n')
		if m.GetThreadId() != "" {
			b = append(b, "↳ reply in a thread\n"...)
		}
		if t := m.GetText(); t != "" {
			b = append(b, strings.TrimRight(t, "\n")...)
			b = append(b, '\n')
		}
		for _, a := range m.GetAttachments() {
			b = append(b, "[attachment: "...)
			b = append(b, firstNonEmpty(a.GetTitle(), a.GetName())...)
			if a.GetContentType() != "" {
				b = append(b, ", "...)
				b = append(b, a.GetContentType()...)
			}
			b = append(b, ", "...)
			b = appendSize(b, a.GetSize())
			b = append(b, "]\n"...)
		}
		if n := m.GetThreadCount(); n > 0 {
			b = append(b, "("...)
			b = strconv.AppendUint(b, uint64(n), 10)
			b = append(b, " thread replies)\n"...)
		}
		b = append(b, '\n')
	}
	r.buf = b
	_, err := r.w.Write(b)
	return err
}

func (r *textRenderer) End() error { return nil }
