package jobstore

import (
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
)

// rank orders states: a job only moves to a state of higher rank, and every
// terminal state has the same, highest rank, so a terminal job never
// changes state again.
func rank(s exportv1.JobState) int {
	switch s {
	case exportv1.JobState_JOB_STATE_PENDING:
		return 1
	case exportv1.JobState_JOB_STATE_QUEUED:
		return 2
	case exportv1.JobState_JOB_STATE_PROCESSING:
		return 3
	case exportv1.JobState_JOB_STATE_FINALIZING:
		return 4
	case exportv1.JobState_JOB_STATE_COMPLETED, exportv1.JobState_JOB_STATE_FAILED,
		exportv1.JobState_JOB_STATE_REJECTED, exportv1.JobState_JOB_STATE_CANCELED:
		return 5
	}
	return 0
}

// Terminal reports whether s is an outcome: completed, failed, rejected or
// canceled.
func Terminal(s exportv1.JobState) bool { return rank(s) == 5 }

// advance moves job to state to if that is a step forward.
func advance(job *exportv1.Job, to exportv1.JobState) bool {
	if Terminal(job.GetState()) || rank(to) <= rank(job.GetState()) {
		return false
	}
	job.State = to
	return true
}

// maxRunningPercent is the most a job that is not completed may show: an
// exporter that has written everything still leaves the archiver's work,
// so 100 means "completed" and nothing else.
const maxRunningPercent = 99

// grow raises job's progress to p field by field; nothing ever shrinks, so
// late or reordered progress reports cannot move a bar backwards.
func grow(job *exportv1.Job, percent uint32, records, bytes uint64) bool {
	if job.Progress == nil {
		job.Progress = &exportv1.Progress{}
	}
	p := job.Progress
	changed := false
	if percent > p.Percent {
		p.Percent, changed = percent, true
	}
	if records > p.Records {
		p.Records, changed = records, true
	}
	if bytes > p.Bytes {
		p.Bytes, changed = bytes, true
	}
	return changed
}

// partProgress turns one part's progress into a lower bound of the job's:
// with several parts, a part's percent counts for its share only and its
// counts are at least what the whole job has done.
func partProgress(p *exportv1.Progress, partsTotal uint32) (percent uint32, records, bytes uint64) {
	percent = min(p.GetPercent(), 100)
	if partsTotal > 1 {
		percent /= partsTotal
	}
	return min(percent, maxRunningPercent), p.GetRecords(), p.GetBytes()
}

// check refuses an event no job can ever take: a bad job id, or an
// ExportRequested that does not carry the job it names. No redelivery
// makes such an event valid, so the errors are bus.Permanent.
func check(ev Event) error {
	id := ev.GetJobId()
	if !ValidID(id) {
		return bus.Permanent(fmt.Errorf("%T: invalid job id %q", ev, id))
	}
	if req, ok := ev.(*exportv1.ExportRequested); ok {
		if req.GetJob() == nil || req.GetJob().GetId() != id {
			return bus.Permanent(fmt.Errorf("ExportRequested for %s carries job %q", id, req.GetJob().GetId()))
		}
	}
	return nil
}

// step is the projection's transition function: the record that follows
// job once ev is applied, and whether it differs from job. job nil means
// there is no record yet; only ExportRequested creates one (with the job
// it carries), any other event then fails with ErrNotFound so that the
// caller retries once the job exists. step is pure; Store.Apply runs it
// under a revision check and writes what it returns. ev must have passed
// check.
//
// Creating a job and replaying its request are the same transition: the
// gateway applies its ExportRequested before publishing it, and the copy
// the projection consumer gets back finds the record it created and
// changes nothing.
func step(job *exportv1.Job, ev Event, retention time.Duration) (*exportv1.Job, bool, error) {
	if job == nil {
		req, ok := ev.(*exportv1.ExportRequested)
		if !ok {
			return nil, false, fmt.Errorf("apply %T to job %s: %w", ev, ev.GetJobId(), ErrNotFound)
		}
		return proto.CloneOf(req.GetJob()), true, nil
	}
	next := proto.CloneOf(job)
	changed, err := reduce(next, ev, retention)
	if err != nil || !changed {
		return job, false, err
	}
	return next, true, nil
}

// request is what job was created with: job without the fields reduce
// owns. Every field reduce writes must be cleared here, or the request
// that created a job would no longer recognise it once the job has moved
// on (TestRequestRecognisesItsJobAfterEveryEvent checks each event kind).
func request(job *exportv1.Job) *exportv1.Job {
	r := proto.CloneOf(job)
	r.State, r.Progress, r.Files, r.Error, r.UpdatedAt = exportv1.JobState_JOB_STATE_UNSPECIFIED, nil, nil, "", nil
	r.ExpiresAt, r.FilesExpired = nil, false
	r.Manifest, r.Archive, r.PartialFiles = nil, nil, nil
	r.Notified, r.NotifyError, r.Notifications = false, "", nil
	r.Stages = nil
	r.HiddenUsernames, r.HiddenUsernamesTruncated = nil, false
	for _, p := range r.GetParts() {
		p.State, p.Exported = exportv1.PartState_PART_STATE_UNSPECIFIED, 0
	}
	return r
}

// reduce folds ev into job in place and reports whether anything changed.
// retention is how long an ended job's files are kept (0: no expiry).
// An ExportRequested for a job created by another request (another owner,
// another creation time, anything it was created with) fails with
// ErrExists: the id is taken.
func reduce(job *exportv1.Job, ev Event, retention time.Duration) (bool, error) {
	changed := false
	from := job.GetState()
	terminal := Terminal(from)
	wasNotified := job.GetNotified()
	switch e := ev.(type) {
	case *exportv1.ExportRequested:
		// The request that created the job has nothing newer to say.
		if !proto.Equal(request(job), request(e.GetJob())) {
			return false, fmt.Errorf("job %s: %w", job.GetId(), ErrExists)
		}
	case *exportv1.ExportQueued:
		changed = advance(job, exportv1.JobState_JOB_STATE_QUEUED)
	case *exportv1.ExportProgress:
		if terminal {
			break
		}
		changed = advance(job, exportv1.JobState_JOB_STATE_PROCESSING)
		pc, rec, by := partProgress(e.GetProgress(), e.GetPartsTotal())
		if p := partStatus(job, e.GetPart()); p != nil {
			changed = advancePart(p, exportv1.PartState_PART_STATE_EXPORTING) || changed
			// A completed part's count is final; a running one only grows.
			if p.GetState() != exportv1.PartState_PART_STATE_COMPLETED && e.GetProgress().GetRecords() > p.GetExported() {
				p.Exported, changed = e.GetProgress().GetRecords(), true
			}
			pc, rec = partsProgress(job, p, e.GetProgress().GetPercent())
		}
		changed = grow(job, pc, rec, by) || changed
	case *exportv1.PartUploaded:
		if e.GetPartial() {
			// Finished files a canceled part kept; the job has usually
			// ended by the time they are announced.
			if from != exportv1.JobState_JOB_STATE_COMPLETED {
				changed = addPartial(job, e.GetFiles())
			}
			break
		}
		// Whom a part's file hid is true of the files whenever the event
		// is applied, even after the job ended.
		changed = mergeHidden(job, e.GetHiddenUsernames(), e.GetHiddenUsernamesTruncated())
		if terminal {
			break
		}
		changed = advance(job, exportv1.JobState_JOB_STATE_PROCESSING) || changed
		if p := partStatus(job, e.GetPart()); p != nil {
			if advancePart(p, exportv1.PartState_PART_STATE_COMPLETED) {
				p.Exported, changed = uploadedRecords(e), true
			}
			pc, rec := partsProgress(job, nil, 0)
			changed = grow(job, pc, rec, 0) || changed
			break
		}
		// The files of a job come with ExportCompleted (the archiver may
		// bundle parts); an uploaded part only tells how far we are.
		if e.GetPartsTotal() <= 1 {
			f := e.GetFile()
			changed = grow(job, maxRunningPercent, f.GetRecords(), f.GetSize()) || changed
		}
	case *exportv1.ExportFinalizing:
		changed = advance(job, exportv1.JobState_JOB_STATE_FINALIZING)
	case *exportv1.ExportCompleted:
		if terminal {
			break
		}
		job.State = exportv1.JobState_JOB_STATE_COMPLETED
		job.Files = e.GetFiles()
		job.Manifest, job.Archive, job.PartialFiles = e.GetManifest(), e.GetArchive(), nil
		for _, p := range job.GetParts() {
			p.State = exportv1.PartState_PART_STATE_COMPLETED
		}
		expire(job, e.GetOccurredAt(), retention)
		var records, size uint64
		for _, f := range e.GetFiles() {
			records += f.GetRecords()
			size += f.GetSize()
		}
		grow(job, 100, records, size)
		changed = true
	case *exportv1.ExportFailed:
		if terminal {
			break
		}
		job.State = exportv1.JobState_JOB_STATE_FAILED
		if e.GetRejected() {
			job.State = exportv1.JobState_JOB_STATE_REJECTED
		}
		job.Error = e.GetReason()
		addPartial(job, e.GetPartialFiles())
		expire(job, e.GetOccurredAt(), retention)
		changed = true
	case *exportv1.ExportCanceled:
		if terminal {
			break
		}
		job.State = exportv1.JobState_JOB_STATE_CANCELED
		job.Error = e.GetReason()
		expire(job, e.GetOccurredAt(), retention)
		changed = true
	case *exportv1.ExportExpired:
		// Allowed on any state: the sweeper deletes whatever files a job
		// left, completed or not. The files stay listed for the record.
		if !job.GetFilesExpired() {
			job.FilesExpired, changed = true, true
		}
	case *exportv1.NotificationSent:
		// Allowed on terminal jobs: notifications are sent because a job
		// ended. Every channel keeps its own last outcome; notified and
		// notify_error speak for the email alone. A success is final; a
		// failure is recorded only until then.
		changed = applyNotification(job, e)
		if ch := e.GetChannel(); ch != "" && ch != "email" {
			break
		}
		switch {
		case e.GetError() == "" && (!job.GetNotified() || job.GetNotifyError() != ""):
			job.Notified, job.NotifyError = true, ""
			changed = true
		case e.GetError() != "" && !job.GetNotified() && job.GetNotifyError() != e.GetError():
			job.NotifyError = e.GetError()
			changed = true
		}
	default:
		return false, bus.Permanent(fmt.Errorf("jobstore: unknown event %T", ev))
	}
	if changed {
		touch(job, occurredAt(ev))
		stampStage(job, from, wasNotified, occurredAt(ev))
	}
	return changed, nil
}

// stampStage records when job entered the stage it moved to (from state from,
// notified or not before), at t, the event's occurred_at. A stage keeps
// its first stamp.
func stampStage(job *exportv1.Job, from exportv1.JobState, wasNotified bool, t *timestamppb.Timestamp) {
	if t == nil || !t.IsValid() {
		return
	}
	if job.Stages == nil {
		job.Stages = &exportv1.StageTimes{}
	}
	st := job.Stages
	set := func(at **timestamppb.Timestamp) {
		if *at == nil {
			*at = t
		}
	}
	if to := job.GetState(); to != from {
		switch {
		case to == exportv1.JobState_JOB_STATE_QUEUED:
			set(&st.QueuedAt)
		case to == exportv1.JobState_JOB_STATE_PROCESSING:
			set(&st.ProcessingAt)
		case to == exportv1.JobState_JOB_STATE_FINALIZING:
			set(&st.FinalizingAt)
		case Terminal(to):
			set(&st.EndedAt)
		}
	}
	if job.GetNotified() && !wasNotified {
		set(&st.NotifiedAt)
	}
}

// touch moves updated_at to t when t is newer.
func touch(job *exportv1.Job, t *timestamppb.Timestamp) {
	if t == nil || !t.IsValid() {
		return
	}
	if job.UpdatedAt == nil || t.AsTime().After(job.UpdatedAt.AsTime()) {
		job.UpdatedAt = t
	}
}

func occurredAt(ev Event) *timestamppb.Timestamp {
	if o, ok := ev.(interface {
		GetOccurredAt() *timestamppb.Timestamp
	}); ok {
		return o.GetOccurredAt()
	}
	return nil
}

// uploadedRecords is how many records an uploaded part holds: its file's,
// or the sum of its files' for a part that produced several.
func uploadedRecords(e *exportv1.PartUploaded) uint64 {
	if f := e.GetFile(); f != nil {
		return f.GetRecords()
	}
	var n uint64
	for _, f := range e.GetFiles() {
		n += f.GetRecords()
	}
	return n
}

// MaxHiddenUsernames bounds a job's hidden_usernames, so that a download
// of many busy rooms keeps a small record (every event rewrites it).
// Past it the job keeps the first names in sort order and says it
// dropped some (hidden_usernames_truncated); Rocket.Chat's userNameTable
// then lacks the others.
const MaxHiddenUsernames = 1000

// mergeHidden adds names (hidden by one room part) to job's, keeping the
// union sorted and its first MaxHiddenUsernames: the outcome is the same
// whatever order the parts' events come in, and however often.
func mergeHidden(job *exportv1.Job, names []string, truncated bool) bool {
	if len(names) == 0 && !truncated {
		return false
	}
	merged := slices.Concat(job.GetHiddenUsernames(), names)
	slices.Sort(merged)
	merged = slices.DeleteFunc(slices.Compact(merged), func(n string) bool { return n == "" })
	if len(merged) > MaxHiddenUsernames {
		merged, truncated = merged[:MaxHiddenUsernames], true
	}
	truncated = truncated || job.GetHiddenUsernamesTruncated()
	if slices.Equal(merged, job.GetHiddenUsernames()) && truncated == job.GetHiddenUsernamesTruncated() {
		return false
	}
	job.HiddenUsernames, job.HiddenUsernamesTruncated = merged, truncated
	return true
}

// applyNotification records e as its channel's outcome unless that channel
// already succeeded or e is older than what is recorded.
func applyNotification(job *exportv1.Job, e *exportv1.NotificationSent) bool {
	channel := e.GetChannel()
	if channel == "" {
		channel = "email"
	}
	status := &exportv1.NotificationStatus{Channel: channel, Recipients: e.GetRecipients(), Error: e.GetError(), At: e.GetOccurredAt()}
	for i, n := range job.GetNotifications() {
		if n.GetChannel() != channel {
			continue
		}
		if n.GetError() == "" || proto.Equal(n, status) {
			return false
		}
		job.Notifications[i] = status
		return true
	}
	job.Notifications = append(job.Notifications, status)
	return true
}

// expire sets when the files of a job that ended at end are deleted:
// retention after it ended, whether it completed, failed, was rejected
// or canceled (what a failed or canceled job keeps is its partial
// results). This is the one rule; the archiver's sweeper deletes at
// expires_at, and every replica computes the same instant from the
// event. retention 0 leaves expires_at unset.
func expire(job *exportv1.Job, end *timestamppb.Timestamp, retention time.Duration) {
	if retention > 0 && end.IsValid() {
		job.ExpiresAt = timestamppb.New(end.AsTime().Add(retention))
	}
}

// addPartial adds files to the job's partial results, once each (by
// object key: a part's kept files may be announced again), and reports
// whether any was new.
func addPartial(job *exportv1.Job, files []*exportv1.File) bool {
	have := make(map[string]bool, len(job.GetPartialFiles()))
	for _, f := range job.GetPartialFiles() {
		have[f.GetObjectKey()] = true
	}
	added := false
	for _, f := range files {
		if f.GetObjectKey() == "" || have[f.GetObjectKey()] {
			continue
		}
		have[f.GetObjectKey()] = true
		job.PartialFiles = append(job.PartialFiles, f)
		added = true
	}
	return added
}
