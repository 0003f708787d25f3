package rebilly

import (
	"time"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/jobstore"
)

// item is a data export as Rebilly renders it (seed 003).
type item struct {
	ID                string     `json:"id"`
	Name              string     `json:"name"`
	Format            string     `json:"format"`
	Resource          string     `json:"resource"`
	Arguments         arguments  `json:"arguments"`
	EmailNotification []string   `json:"emailNotification"`
	Fields            []string   `json:"fields"`
	Recurring         *recurring `json:"recurring"`
	UserID            string     `json:"userId"`
	RecordCount       uint64     `json:"recordCount"`
	ScheduledTime     *string    `json:"scheduledTime"`
	CreatedTime       string     `json:"createdTime"`
	UpdatedTime       string     `json:"updatedTime"`
	Status            string     `json:"status"`
	// Reason says why a failed export failed.
	Reason    string     `json:"reason,omitempty"`
	DateRange *dateRange `json:"dateRange"`
	Links     []link     `json:"_links"`
	Embedded  *embedded  `json:"_embedded,omitempty"`
	// secs holds the times as the list sorts by them, taken with the
	// text (listedFields), so that the list does not parse back, for
	// every export it considers, the text it has just formatted.
	secs itemSecs
}

// itemSecs are an item's created, updated and scheduled times in Unix
// seconds, as time.Parse of their RFC 3339 text gives them; set is false
// in an item that listedFields did not build (its text is parsed then).
type itemSecs struct {
	set                         bool
	created, updated, scheduled int64
}

type arguments struct {
	Filter string `json:"filter"`
	Sort   string `json:"sort"`
	Q      string `json:"q"`
}

type recurring struct {
	Instruction string `json:"instruction"`
	Start       string `json:"start"`
}

type dateRange struct {
	Start string `json:"start"`
	End   string `json:"end"`
	Field string `json:"field"`
}

type link struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
	// ExpiredTime is when a signed link stops working.
	ExpiredTime string `json:"expiredTime,omitempty"`
}

type embedded struct {
	User *userView `json:"user,omitempty"`
}

type userView struct {
	ID        string `json:"id"`
	Email     string `json:"email"`
	Username  string `json:"username"`
	FirstName string `json:"firstName"`
	LastName  string `json:"lastName"`
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// listedSecs is t in seconds as time.Parse reads rfc3339(t) back: the
// whole seconds of t for years 1 to 9999; outside them the text is
// parsed, as the list always did (a year it cannot parse sorts as the
// zero time).
func listedSecs(t time.Time) int64 {
	if y := t.UTC().Year(); y >= 1 && y <= 9999 {
		return t.Unix()
	}
	p, _ := time.Parse(time.RFC3339, rfc3339(t))
	return p.Unix()
}

// statusWord maps job states onto Rebilly's words; finalizing is still
// "processing" to a Rebilly client, rejected is "failed" with a reason.
func statusWord(s exportv1.JobState) string {
	switch s {
	case exportv1.JobState_JOB_STATE_QUEUED:
		return "queued"
	case exportv1.JobState_JOB_STATE_PROCESSING, exportv1.JobState_JOB_STATE_FINALIZING:
		return "processing"
	case exportv1.JobState_JOB_STATE_COMPLETED:
		return "completed"
	case exportv1.JobState_JOB_STATE_FAILED, exportv1.JobState_JOB_STATE_REJECTED:
		return "failed"
	case exportv1.JobState_JOB_STATE_CANCELED:
		return "canceled"
	}
	return "pending"
}

// entry is one listed export: a job, or a schedule with its latest run.
type entry struct {
	job *exportv1.Job
	// run is the latest run of a schedule (nil for one-off exports and
	// schedules that have not fired yet).
	run *exportv1.Job
	// schedule is true for recurring exports.
	schedule bool
	// rev is a schedule's revision, for a revision-checked update.
	rev uint64
	// sum is a listed one-off export's or run's summary, from which the
	// list takes what it filters and sorts by; job is nil until the page
	// is rendered when the summary was not decoded (see cheapFields).
	sum *jobstore.LazySummary
}

// id is the stored id of e's job.
func (e entry) id() string {
	if e.job == nil {
		return e.sum.ID()
	}
	return e.job.GetId()
}

// summary is e's job as a LazySummary.
func (e entry) summary() *jobstore.LazySummary {
	if e.sum != nil {
		return e.sum
	}
	return jobstore.LazyOf(e.job)
}

// render builds the item as viewer sees it: the id and links name the
// export the way viewer addresses it (scope.shownID), under viewer's
// collection URL.
func (d *API) render(e entry, viewer scope, user *sourcev1.User) item {
	it := listedFields(e, viewer)
	j := e.job
	sc := j.GetRecords()
	it.Arguments = arguments{Filter: sc.GetFilter(), Sort: sc.GetSort(), Q: sc.GetQ()}
	if dr := sc.GetDateRange(); dr != nil {
		it.DateRange = &dateRange{Start: dr.GetStart(), End: dr.GetEnd(), Field: dr.GetField()}
	}
	// What a run produced: for a schedule its latest run, else the job.
	result := j
	if e.schedule {
		rec := j.GetRecurrence()
		it.Recurring = &recurring{Instruction: rec.GetInstruction(), Start: rfc3339(rec.GetStart().AsTime())}
		result = e.run
	}
	if result != nil {
		switch result.GetState() {
		case exportv1.JobState_JOB_STATE_FAILED, exportv1.JobState_JOB_STATE_REJECTED, exportv1.JobState_JOB_STATE_CANCELED:
			it.Reason = result.GetError()
		}
	}
	// No "user" link: Dataport does not serve Rebilly's users API, and a
	// link must lead somewhere. The owner is userId, and expand=user
	// embeds them.
	base, id := viewer.base, it.ID
	it.Links = []link{{Rel: "self", Href: base + "/" + id}}
	if result != nil && result.GetState() == exportv1.JobState_JOB_STATE_COMPLETED && len(result.GetFiles()) > 0 {
		f := result.GetFiles()[0]
		href, exp := d.links.URL(result.GetId(), f.GetName())
		it.Links = append(it.Links,
			link{Rel: "fileDownload", Href: base + "/" + id + "/download"},
			link{Rel: "signedLink", Href: href, ExpiredTime: rfc3339(exp)})
	}
	if user != nil {
		it.Embedded = &embedded{User: viewUser(user)}
	}
	return it
}

// listedFields is the part of e's item that a list filters, sorts and
// searches by (itemFields), as render gives it: the list takes it for
// every export it considers, and renders in full only the page's.
func listedFields(e entry, viewer scope) item {
	j := e.job
	sc := j.GetRecords()
	created, updated := j.GetCreatedAt().AsTime(), j.GetUpdatedAt().AsTime()
	it := item{
		ID:                viewer.shownID(j),
		Name:              j.GetName(),
		Format:            formatWord(j.GetFormat()),
		Resource:          sc.GetResource(),
		EmailNotification: nonNil(j.GetNotifyEmails()),
		Fields:            nonNil(sc.GetFields()),
		UserID:            j.GetOwnerId(),
		CreatedTime:       rfc3339(created),
		UpdatedTime:       rfc3339(updated),
		Status:            statusWord(j.GetState()),
		secs:              itemSecs{set: true, created: listedSecs(created), updated: listedSecs(updated)},
	}
	// What a run produced: for a schedule its latest run, else the job.
	result := j
	if e.schedule {
		if n := j.GetRecurrence().GetNext(); n != nil {
			s := rfc3339(n.AsTime())
			it.ScheduledTime = &s
			it.secs.scheduled = listedSecs(n.AsTime())
		}
		result = e.run
		it.Status = "pending"
		if e.run != nil {
			it.Status = statusWord(e.run.GetState())
			if t := e.run.GetUpdatedAt().AsTime(); t.After(updated) {
				it.UpdatedTime = rfc3339(t)
				it.secs.updated = listedSecs(t)
			}
		}
	} else {
		// A one-off export (or a run) is scheduled when it was requested.
		s := it.CreatedTime
		it.ScheduledTime = &s
		it.secs.scheduled = it.secs.created
	}
	if result != nil {
		it.RecordCount = result.GetProgress().GetRecords()
	}
	return it
}

func viewUser(u *sourcev1.User) *userView {
	first, last := u.GetName(), ""
	for i := len(first) - 1; i > 0; i-- {
		if first[i] == ' ' {
			first, last = first[:i], first[i+1:]
			break
		}
	}
	return &userView{ID: u.GetId(), Email: u.GetEmail(), Username: u.GetUsername(), FirstName: first, LastName: last}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// terminal reports whether a job has ended.
func terminal(j *exportv1.Job) bool { return jobstore.Terminal(j.GetState()) }
