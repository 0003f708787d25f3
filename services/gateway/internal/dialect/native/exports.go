package native

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/respond"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/links"
	"dataport.dev/shared/objects"
)

// exportView is a job in the native API (docs/ARCHITECTURE.md).
type exportView struct {
	ID        string       `json:"id"`
	Kind      string       `json:"kind"`
	Format    string       `json:"format"`
	State     string       `json:"state"`
	Progress  progressView `json:"progress"`
	Files     []fileView   `json:"files"`
	Error     string       `json:"error"`
	CreatedAt string       `json:"createdAt"`
	UpdatedAt string       `json:"updatedAt"`
	// ExpiresAt is when an ended job's files (a failed or canceled one's
	// partial files) are deleted; FilesExpired says they have been (the
	// files stay listed, without links).
	ExpiresAt    string `json:"expiresAt,omitempty"`
	FilesExpired bool   `json:"filesExpired,omitempty"`
	// Parts is the plan of a job with several parts and where each
	// stands.
	Parts []partView `json:"parts,omitempty"`
	// Notifications is the outcome of each notification channel (the
	// email, every webhook URL), once the job has ended.
	Notifications []notificationView `json:"notifications,omitempty"`
	// Recurrence is set on a recurring export (a schedule); each of its
	// runs is an export of its own whose ParentID is the schedule's id.
	Recurrence *recurrenceView `json:"recurrence,omitempty"`
	ParentID   string          `json:"parentId,omitempty"`
	// TraceID is the trace of the request that created the job: every
	// service's spans for the job are in it (docs/OBSERVABILITY.md).
	TraceID string `json:"traceId,omitempty"`
	// Manifest (manifest.json: each file's name, size, SHA-256 and
	// record count) and Archive (a room export's document zipped with
	// its attachments under assets/) come with a completed job, beside
	// files rather than in it, so files stays the data files.
	Manifest *fileView `json:"manifest,omitempty"`
	Archive  *fileView `json:"archive,omitempty"`
	// PartialFiles are what a failed or canceled job had finished (the
	// chunks of a chunked record export), downloadable until retention
	// deletes them, as Shopify's partialDataUrl.
	PartialFiles []fileView `json:"partialFiles,omitempty"`
}

type recurrenceView struct {
	Instruction string `json:"instruction"`
	Start       string `json:"start"`
	// Next is the next occurrence not yet started.
	Next string `json:"next,omitempty"`
	Runs uint32 `json:"runs"`
}

type notificationView struct {
	Channel    string   `json:"channel"`
	Recipients []string `json:"recipients"`
	Error      string   `json:"error,omitempty"`
	At         string   `json:"at"`
}

type partView struct {
	Part       uint32 `json:"part"`
	Kind       string `json:"kind"`
	RoomID     string `json:"roomId,omitempty"`
	TargetFile string `json:"targetFile"`
	State      string `json:"state"`
	Exported   uint64 `json:"exported"`
}

type progressView struct {
	Percent uint32 `json:"percent"`
	Records uint64 `json:"records"`
	Bytes   uint64 `json:"bytes"`
}

type fileView struct {
	Name    string `json:"name"`
	Size    uint64 `json:"size"`
	Records uint64 `json:"records"`
	SHA256  string `json:"sha256"`
	// URL and ExpiresAt (of the link) are absent once the files expired.
	URL       string `json:"url,omitempty"`
	ExpiresAt string `json:"expiresAt,omitempty"`
}

// listTail is what the body of GET /v1/exports holds after its items
// (written first, see listExports): {"items":[...],"total":...,"next":...}.
type listTail struct {
	Total int `json:"total"`
	// Next is the cursor of the following page (after=), absent on the
	// last one.
	Next string `json:"next,omitempty"`
}

// Page sizes of GET /v1/exports.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

const (
	msgNotFound     = "export not found"
	msgFilesExpired = "the export's files have expired and were deleted; request a new export"
)

// getExport implements GET /v1/exports/{id}: a job, or a recurring
// export created here. The job is looked up first, since polls of jobs
// are by far the most frequent request: a poll is then one read, and
// only an id that names no job of the caller costs the schedule's read
// too. Job and schedule ids come from one random generator and never
// coincide, so the order changes no answer.
func (a *API) getExport(w http.ResponseWriter, r *http.Request) {
	u := a.user(w, r)
	if u == nil {
		return
	}
	id := chi.URLParam(r, "id")
	job, err := a.Jobs.Get(r.Context(), id)
	if err == nil && job.GetOwnerId() == u.GetId() {
		respond.JSON(w, http.StatusOK, a.view(job))
		return
	}
	if sched := a.ownSchedule(r, id); sched != nil {
		respond.JSON(w, http.StatusOK, a.view(sched))
		return
	}
	if err != nil && !errors.Is(err, jobstore.ErrNotFound) {
		a.internalError(w, r, "get job", err, "job_id", id)
		return
	}
	WriteError(w, http.StatusNotFound, msgNotFound)
}

// listExports implements GET /v1/exports?limit=&after=: one page of the
// caller's jobs, newest first; next is the after= of the following page.
// The page is read from the projection's owner index, so its cost is that
// of the caller's own jobs.
func (a *API) listExports(w http.ResponseWriter, r *http.Request) {
	u := a.user(w, r)
	if u == nil {
		return
	}
	q := r.URL.Query()
	limit := defaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			WriteError(w, http.StatusBadRequest, fmt.Sprintf("limit must be an integer from 1 to %d", maxListLimit))
			return
		}
		limit = n
	}
	page, err := a.Jobs.Find(r.Context(), jobstore.Query{Scope: jobstore.Scope{Owner: u.GetId()}, After: q.Get("after"), Limit: limit})
	switch {
	case errors.Is(err, jobstore.ErrBadCursor):
		WriteError(w, http.StatusBadRequest, "after must be the next of a previous page")
		return
	case err != nil:
		a.internalError(w, r, "list jobs", err, "user_id", u.GetId())
		return
	}
	// The items are rendered and encoded one at a time as they are
	// written (respond.Array), then the tail's fields close the object.
	tail, err := json.Marshal(listTail{Total: page.Total, Next: page.Next})
	if err != nil {
		a.internalError(w, r, "list jobs", err, "user_id", u.GetId())
		return
	}
	tail[0] = ','
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if _, err := io.WriteString(w, `{"items":`); err != nil {
		return
	}
	if err := respond.Array(w, page.Jobs, func(j *exportv1.Job) any { return a.view(j) }); err != nil {
		return
	}
	_, _ = w.Write(append(tail, '\n'))
}

// view renders a job; files get freshly signed links, and only once the
// job is completed, since before that they cannot be downloaded.
func (a *API) view(job *exportv1.Job) exportView {
	v := exportView{
		ID:     job.GetId(),
		Kind:   word(job.GetKind()),
		Format: formatWord(job.GetKind(), job.GetFormat()),
		State:  word(job.GetState()),
		Progress: progressView{
			Percent: job.GetProgress().GetPercent(),
			Records: job.GetProgress().GetRecords(),
			Bytes:   job.GetProgress().GetBytes(),
		},
		Files:     []fileView{},
		Error:     job.GetError(),
		CreatedAt: rfc3339(job.GetCreatedAt().AsTime()),
		UpdatedAt: rfc3339(job.GetUpdatedAt().AsTime()),
		TraceID:   job.GetTraceId(),
	}
	if t := job.GetExpiresAt(); t != nil {
		v.ExpiresAt = rfc3339(t.AsTime())
	}
	v.FilesExpired = job.GetFilesExpired()
	v.ParentID = job.GetParentId()
	if rc := job.GetRecurrence(); rc != nil {
		v.Recurrence = &recurrenceView{Instruction: rc.GetInstruction(), Start: rfc3339(rc.GetStart().AsTime()), Runs: rc.GetRuns()}
		if rc.GetNext() != nil {
			v.Recurrence.Next = rfc3339(rc.GetNext().AsTime())
		}
	}
	if len(job.GetParts()) > 1 {
		for _, p := range job.GetParts() {
			v.Parts = append(v.Parts, partView{
				Part:       p.GetPart(),
				Kind:       word(p.GetKind()),
				RoomID:     p.GetRoomId(),
				TargetFile: p.GetTargetFile(),
				State:      word(p.GetState()),
				Exported:   p.GetExported(),
			})
		}
	}
	for _, n := range job.GetNotifications() {
		v.Notifications = append(v.Notifications, notificationView{
			Channel: n.GetChannel(), Recipients: n.GetRecipients(), Error: n.GetError(), At: rfc3339(n.GetAt().AsTime()),
		})
	}
	if job.GetState() != exportv1.JobState_JOB_STATE_COMPLETED {
		for _, f := range job.GetPartialFiles() {
			v.PartialFiles = append(v.PartialFiles, a.fileView(job, f))
		}
		return v
	}
	for _, f := range job.GetFiles() {
		v.Files = append(v.Files, a.fileView(job, f))
	}
	if f := job.GetManifest(); f != nil {
		fv := a.fileView(job, f)
		v.Manifest = &fv
	}
	if f := job.GetArchive(); f != nil {
		fv := a.fileView(job, f)
		v.Archive = &fv
	}
	return v
}

// fileView is one of job's files with a freshly signed link; deleted
// files keep their entry but get no link.
func (a *API) fileView(job *exportv1.Job, f *exportv1.File) fileView {
	fv := fileView{
		Name:    f.GetName(),
		Size:    f.GetSize(),
		Records: f.GetRecords(),
		SHA256:  f.GetSha256(),
	}
	if !job.GetFilesExpired() {
		link, exp := a.Links.URL(job.GetId(), f.GetName())
		fv.URL, fv.ExpiresAt = link, rfc3339(exp)
	}
	return fv
}

// downloadable is the file of job that name downloads: one of a
// completed job's files, its manifest or its archive, or one of the
// partial results of a job that ended unfinished.
func downloadable(job *exportv1.Job, name string) *exportv1.File {
	var candidates []*exportv1.File
	switch job.GetState() {
	case exportv1.JobState_JOB_STATE_COMPLETED:
		candidates = append(append(candidates, job.GetFiles()...), job.GetManifest(), job.GetArchive())
	case exportv1.JobState_JOB_STATE_FAILED, exportv1.JobState_JOB_STATE_REJECTED, exportv1.JobState_JOB_STATE_CANCELED:
		candidates = job.GetPartialFiles()
	}
	for _, f := range candidates {
		if f != nil && f.GetName() == name && !f.GetMissing() {
			return f
		}
	}
	return nil
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// download implements GET /v1/exports/{id}/files/{name}?exp=&sig=. The
// signed link is the only credential: it is checked before anything is
// looked up, so an unsigned request learns nothing.
func (a *API) download(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, err := pathParam(r, "id")
	name, nerr := pathParam(r, "name")
	if err != nil || nerr != nil {
		WriteError(w, http.StatusForbidden, "invalid download link")
		return
	}
	q := r.URL.Query()
	switch err := a.Links.Verify(id, name, q.Get("exp"), q.Get("sig")); {
	case errors.Is(err, links.ErrExpired):
		WriteError(w, http.StatusGone, "download link expired; fetch the export again for a fresh link")
		return
	case err != nil:
		WriteError(w, http.StatusForbidden, "invalid download link")
		return
	}
	job, err := a.Jobs.Get(ctx, id)
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		WriteError(w, http.StatusNotFound, msgNotFound)
		return
	case err != nil:
		a.internalError(w, r, "get job", err, "job_id", id)
		return
	}
	file := downloadable(job, name)
	switch {
	case file == nil:
		WriteError(w, http.StatusNotFound, "file not found")
		return
	case job.GetFilesExpired():
		// The sweeper deleted the files after the retention period; a
		// link minted before then still verifies. Gone, not missing, and
		// nothing to look for in MinIO.
		WriteError(w, http.StatusGone, msgFilesExpired)
		return
	}
	// A seekable body lets http.ServeContent answer Range requests
	// (206, multipart/byteranges, 416) and If-Range, so an interrupted
	// download resumes where it stopped; each range is one GET from its
	// offset, never the whole object again.
	body, info, err := a.Blob.OpenSeeker(ctx, objects.Bucket(file, a.ExportBucket), file.GetObjectKey())
	switch {
	case errors.Is(err, blob.ErrNotFound), errors.Is(err, blob.ErrInvalidArgument):
		a.log.WarnContext(ctx, "file of a completed job is missing", "job_id", id, "object_key", file.GetObjectKey(), "error", err)
		WriteError(w, http.StatusNotFound, "file not found")
		return
	case err != nil:
		a.internalError(w, r, "open file", err, "job_id", id, "object_key", file.GetObjectKey())
		return
	}
	defer body.Close()

	h := w.Header()
	ctype := file.GetContentType()
	if ctype == "" {
		ctype = info.ContentType
	}
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	h.Set("Content-Type", ctype)
	disposition := mime.FormatMediaType("attachment", map[string]string{"filename": name})
	if disposition == "" {
		disposition = "attachment"
	}
	h.Set("Content-Disposition", disposition)
	// ServeContent compares If-Range (and If-None-Match) with this ETag:
	// a resumed download continues only if the file is the same.
	if sum := file.GetSha256(); sum != "" {
		h.Set("ETag", `"`+sum+`"`)
		h.Set("X-Checksum-Sha256", sum)
	} else if info.ETag != "" {
		h.Set("ETag", `"`+info.ETag+`"`)
	}
	// The link itself is a credential; keep shared caches out of it.
	h.Set("Cache-Control", "private, no-store")
	// An export holds what users wrote (an HTML room export, a JSON
	// message): the browser must take the declared type, never sniff it
	// into something it would render or run.
	h.Set("X-Content-Type-Options", "nosniff")
	out := &renewingWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: a.WriteTimeout}
	if err := out.renew(); err != nil {
		a.log.WarnContext(ctx, "download: set write deadline", "job_id", id, "error", err)
	}
	if rng := r.Header.Get("Range"); rng != "" && !strings.HasPrefix(rng, "bytes=") {
		// RFC 9110 section 14.2: a range unit the server does not know is
		// ignored (the whole file), where ServeContent would answer 416.
		r.Header.Del("Range")
	}
	in := &readErr{r: body}
	http.ServeContent(out, r, name, info.LastModified, in)
	if err := errors.Join(in.err, out.err); err != nil {
		// ServeContent swallows these; the client sees a short body
		// against Content-Length, and can resume with a Range request.
		a.log.WarnContext(ctx, "download interrupted", "job_id", id, "file", name, "bytes", out.n, "error", err)
	}
}

// readErr remembers the first error, other than EOF, of a download's
// reads and seeks.
type readErr struct {
	r   io.ReadSeeker
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

func (e *readErr) Seek(offset int64, whence int) (int64, error) {
	n, err := e.r.Seek(offset, whence)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

// renewingWriter gives every write of a download the server's write
// timeout afresh. The server's WriteTimeout counts from the end of the
// request headers, which would cut off any download that takes longer; per
// write, a client that stops reading is still dropped after the timeout,
// while one that keeps reading can fetch a file of any size. It counts
// what was written and keeps the first error for the log.
type renewingWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	n       int64
	err     error
}

func (rw *renewingWriter) renew() error {
	err := rw.rc.SetWriteDeadline(time.Now().Add(rw.timeout))
	if errors.Is(err, http.ErrNotSupported) {
		// A writer without deadlines has no server timeout to outlast.
		return nil
	}
	return err
}

func (rw *renewingWriter) Write(p []byte) (int, error) {
	if err := rw.renew(); err != nil {
		err = fmt.Errorf("set write deadline: %w", err)
		if rw.err == nil {
			rw.err = err
		}
		return 0, err
	}
	n, err := rw.ResponseWriter.Write(p)
	rw.n += int64(n)
	if err != nil && rw.err == nil {
		rw.err = err
	}
	return n, err
}

// pathParam returns a route parameter unescaped. chi matches on the raw
// (escaped) path when the request has one, so its parameters are escaped
// exactly then.
func pathParam(r *http.Request, key string) (string, error) {
	v := chi.URLParam(r, key)
	if r.URL.RawPath == "" {
		return v, nil
	}
	return url.PathUnescape(v)
}
