package rebilly

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/respond"
	"dataport.dev/shared/recordquery"
)

// list implements GET /data-exports. It streams the summaries of the
// exports the caller sees (jobstore.EachSummary) and holds, besides a
// batch of them, only the offset+limit best in the requested order (a
// bounded heap) and each schedule's latest run: an administrator's list
// over an organization's hundred thousand exports holds its page, not the
// organization. Pagination-Total is every visible match, counted on the
// way.
func (d *API) list(w http.ResponseWriter, r *http.Request, s scope) {
	q := query(r)
	var bad []invalidField
	limit, bl := intParam(q, "limit", 100, 0, maxLimit)
	offset, bo := intParam(q, "offset", 0, 0, maxOffset)
	for _, b := range []*invalidField{bl, bo} {
		if b != nil {
			bad = append(bad, *b)
		}
	}
	filter, err := recordquery.ParseFilter(q.Get("filter"))
	if err != nil {
		bad = append(bad, invalidField{Field: "filter", Message: err.Error()})
	} else {
		for _, f := range filter.Fields() {
			if !slices.Contains(itemFields, f) {
				bad = append(bad, invalidField{Field: "filter", Message: fmt.Sprintf("unknown field %q (known: %s)", f, strings.Join(itemFields, ", "))})
				break
			}
		}
	}
	sortKeys, err := recordquery.ParseSort(strings.Join(q["sort"], ","))
	if err != nil {
		bad = append(bad, invalidField{Field: "sort", Message: err.Error()})
	} else {
		for _, k := range sortKeys {
			if !slices.Contains(itemFields, k.Field) {
				bad = append(bad, invalidField{Field: "sort", Message: fmt.Sprintf("unknown field %q (known: %s)", k.Field, strings.Join(itemFields, ", "))})
				break
			}
		}
	}
	if len(sortKeys) == 0 {
		sortKeys = []recordquery.SortKey{{Field: "createdTime", Desc: true}}
	}
	bad = append(bad, d.checkExpand(r)...)
	if len(bad) > 0 {
		writeInvalid(w, bad)
		return
	}
	ctx := r.Context()
	g, gctx := errgroup.WithContext(ctx)
	sel := newSelection(sortKeys, offset+limit)
	match := filterMemo(filter)
	text := strings.ToLower(q.Get("q"))
	// consider takes e's item as filter, sort and q read it (from
	// summaries: every field they read is in one) and keeps it if it
	// matches.
	considerItem := func(e entry, it item) (listed, bool) {
		if !match(it) || (text != "" && !matchText(it, text)) {
			return listed{}, false
		}
		return sel.listing(e, it), true
	}
	consider := func(e entry) (listed, bool) { return considerItem(e, listedFields(e, s)) }
	// Jobs deleted through this API (Hide) are not listed. Their marks
	// are read for the matching jobs only, a batch at a time: the count
	// of visible matches needs every match's, and a mark per export of
	// the organization read up front was most of a large list's cost.
	var pending []listed
	settle := func() error {
		if len(pending) == 0 {
			return nil
		}
		ids := make([]string, len(pending))
		for i, l := range pending {
			ids[i] = l.e.id()
		}
		hidden, err := d.schedules.Hidden(gctx, ids)
		if err != nil {
			return fmt.Errorf("list deleted: %w", err)
		}
		for _, l := range pending {
			if !hidden[l.e.id()] {
				sel.add(l)
			}
		}
		pending = pending[:0]
		return nil
	}
	// A schedule's runs share its owner and organization, so the scope's
	// jobs hold the runs of the schedules it sees; the newest of each is
	// what its schedule shows (ties: the listing order's first, the
	// greater id).
	runs := map[string]*exportv1.Job{}
	// The scope's schedules do not depend on its jobs: they are read
	// beside the walk, a round trip less per list.
	var scheds []*exportv1.Job
	g.Go(func() (err error) {
		if scheds, err = d.scopedSchedules(gctx, s); err != nil {
			return fmt.Errorf("list schedules: %w", err)
		}
		return nil
	})
	cheap, needUser := cheapQuery(filter, sortKeys, text)
	err = d.jobs.EachLazySummary(gctx, d.jobScope(s), func(lz *jobstore.LazySummary) error {
		if !lz.In(dialectName, s.org) || !(s.admin() || lz.Owned(s.user.GetId())) {
			return nil
		}
		e := entry{sum: lz}
		if lz.HasParent() {
			sum := lz.Job()
			if sum == nil {
				return nil
			}
			if cur, ok := runs[sum.GetParentId()]; !ok || newerRun(sum, cur) {
				runs[sum.GetParentId()] = sum
			}
		}
		var l listed
		var ok bool
		if cheap {
			l, ok = considerItem(e, cheapFields(lz, s, needUser))
		} else {
			if e.job = lz.Job(); e.job == nil {
				return nil
			}
			l, ok = consider(e)
		}
		if !ok {
			return nil
		}
		if pending = append(pending, l); len(pending) == hiddenBatch {
			return settle()
		}
		return nil
	})
	if err == nil {
		err = settle()
	}
	if err := errors.Join(err, g.Wait()); err != nil {
		d.internal(w, r, "list jobs", err)
		return
	}
	for i, sc := range scheds {
		if !s.sees(sc) {
			continue
		}
		if l, ok := consider(entry{job: sc, schedule: true, run: runs[sc.GetId()]}); ok {
			l.schedule = i
			sel.add(l)
		}
	}
	shownEntries, err := d.fullPage(ctx, sel.page(offset))
	if err != nil {
		d.internal(w, r, "list jobs", err)
		return
	}
	expandUser := strings.Contains(q.Get("expand"), "user")
	h := w.Header()
	h.Set("Pagination-Total", strconv.Itoa(sel.total))
	h.Set("Pagination-Limit", strconv.Itoa(limit))
	h.Set("Pagination-Offset", strconv.Itoa(offset))
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	// Each item is rendered and encoded as it is written, not the page
	// built first (respond.Array).
	if err := respond.Array(w, shownEntries, func(e entry) any {
		var u *sourcev1.User
		if expandUser {
			u = d.owner(ctx, s, e.job.GetOwnerId())
		}
		return d.render(e, s, u)
	}); err == nil {
		_, _ = io.WriteString(w, "\n")
	}
}

// hiddenBatch is how many matching jobs the list holds before it reads
// their hidden marks (one direct get).
const hiddenBatch = 1000

// newerRun reports whether run a is listed before run b among a
// schedule's runs: created later, or at the same time with the greater id
// (the listing's newest-first order).
func newerRun(a, b *exportv1.Job) bool {
	if c := a.GetCreatedAt().AsTime().Compare(b.GetCreatedAt().AsTime()); c != 0 {
		return c > 0
	}
	return jobstore.NewestFirst(a, b) < 0
}

// jobScope is the jobs s sees in the projection's index: the caller's
// own in the organization, or, for an administrator, everyone's in it.
// The cost is that of those jobs' index entries, never of the whole
// projection; the jobs of the page answered are read in full afterwards
// (fullPage).
func (d *API) jobScope(s scope) jobstore.Scope {
	sc := jobstore.Scope{Owner: s.user.GetId(), Dialect: dialectName, Organization: s.org}
	if s.admin() && s.org != "" {
		sc.Owner = ""
	}
	return sc
}

// listed is one matching export as the list orders it: its entry, the id
// it is shown by, and the values of the sort keys, taken once.
type listed struct {
	e    entry
	id   string
	keys []sortValue
	// schedule is the schedule's position among the scope's schedules;
	// -1 for one-off exports and runs. The listing always put schedules
	// first, then the jobs newest first, and kept that order among
	// exports equal in every sort key and id.
	schedule int
}

// sortValue is one sort key's value of an item, in the form the list
// compares it: lower-cased text, a number, or a time in seconds; a field
// an item lacks sorts first.
type sortValue struct {
	null bool
	text string
	num  float64
	secs int64
}

func (a sortValue) compare(b sortValue) int {
	switch {
	case a.null && b.null:
		return 0
	case a.null:
		return -1
	case b.null:
		return 1
	}
	if c := strings.Compare(a.text, b.text); c != 0 {
		return c
	}
	if c := cmp.Compare(a.num, b.num); c != 0 {
		return c
	}
	return cmp.Compare(a.secs, b.secs)
}

// sortValueOf is the sort value of it's field f: text fields
// lower-cased, lists joined with commas, times parsed (or, in an item
// of listedFields, taken as it took them). It reads the fields directly
// (textField), not through itemValue: boxing each value in an interface
// was an allocation per export and key.
func sortValueOf(it item, f string) sortValue {
	if s, ok := textField(it, f); ok {
		return sortValue{text: strings.ToLower(s)}
	}
	switch f {
	case "recordCount":
		return sortValue{num: float64(it.RecordCount)}
	case "scheduledTime":
		if it.ScheduledTime == nil {
			return sortValue{null: true}
		}
		if it.secs.set {
			return sortValue{secs: it.secs.scheduled}
		}
		return sortValue{secs: parsedSecs(*it.ScheduledTime)}
	case "createdTime":
		if it.secs.set {
			return sortValue{secs: it.secs.created}
		}
		return sortValue{secs: parsedSecs(it.CreatedTime)}
	case "updatedTime":
		if it.secs.set {
			return sortValue{secs: it.secs.updated}
		}
		return sortValue{secs: parsedSecs(it.UpdatedTime)}
	case "emailNotification":
		return sortValue{text: strings.Join(it.EmailNotification, ",")}
	case "fields":
		return sortValue{text: strings.Join(it.Fields, ",")}
	}
	return sortValue{null: true}
}

// parsedSecs is s, an item's time, in Unix seconds (the zero time's if
// it is none).
func parsedSecs(s string) int64 {
	t, _ := time.Parse(time.RFC3339, s)
	return t.Unix()
}

// selection keeps the best max listed exports in the order of keys (a
// heap whose root is the worst kept) and counts every one added.
type selection struct {
	keys  []recordquery.SortKey
	max   int
	kept  []listed
	total int
	// slab is where listing takes each export's sort values from, a
	// block at a time instead of an allocation per export. A block lives
	// while an export kept holds it, so it is small.
	slab []sortValue
}

func newSelection(keys []recordquery.SortKey, max int) *selection {
	// kept grows with what is added, never to max up front: max is
	// offset+limit, and offset may be up to maxOffset.
	return &selection{keys: keys, max: max}
}

func (sel *selection) listing(e entry, it item) listed {
	n := len(sel.keys)
	if len(sel.slab) < n {
		sel.slab = make([]sortValue, n*slabExports)
	}
	l := listed{e: e, id: it.ID, keys: sel.slab[:n:n], schedule: -1}
	sel.slab = sel.slab[n:]
	for i, k := range sel.keys {
		l.keys[i] = sortValueOf(it, k.Field)
	}
	return l
}

// slabExports is how many exports' sort values a selection allocates
// at once.
const slabExports = 64

// before reports whether a is listed before b.
func (sel *selection) before(a, b listed) bool {
	for i, k := range sel.keys {
		c := a.keys[i].compare(b.keys[i])
		if k.Desc {
			c = -c
		}
		if c != 0 {
			return c < 0
		}
	}
	if c := cmp.Compare(a.id, b.id); c != 0 {
		return c < 0
	}
	switch {
	case a.schedule >= 0 && b.schedule >= 0:
		return a.schedule < b.schedule
	case a.schedule >= 0 || b.schedule >= 0:
		return a.schedule >= 0
	}
	return jobstore.LazyNewestFirst(a.e.summary(), b.e.summary()) < 0
}

func (sel *selection) add(l listed) {
	sel.total++
	switch {
	case sel.max == 0:
	case len(sel.kept) < sel.max:
		heap.Push((*worstFirst)(sel), l)
	case sel.before(l, sel.kept[0]):
		sel.kept[0] = l
		heap.Fix((*worstFirst)(sel), 0)
	}
}

// page is the entries kept after the first offset, in order.
func (sel *selection) page(offset int) []entry {
	slices.SortFunc(sel.kept, func(a, b listed) int {
		if sel.before(a, b) {
			return -1
		}
		if sel.before(b, a) {
			return 1
		}
		return 0
	})
	if offset >= len(sel.kept) {
		return []entry{}
	}
	out := make([]entry, 0, len(sel.kept)-offset)
	for _, l := range sel.kept[offset:] {
		out = append(out, l.e)
	}
	return out
}

// worstFirst is a selection's kept exports as a container/heap whose
// root is the one listed last.
type worstFirst selection

func (h *worstFirst) Len() int           { return len(h.kept) }
func (h *worstFirst) Less(i, j int) bool { return (*selection)(h).before(h.kept[j], h.kept[i]) }
func (h *worstFirst) Swap(i, j int)      { h.kept[i], h.kept[j] = h.kept[j], h.kept[i] }
func (h *worstFirst) Push(x any)         { h.kept = append(h.kept, x.(listed)) }
func (h *worstFirst) Pop() any {
	l := h.kept[len(h.kept)-1]
	h.kept = h.kept[:len(h.kept)-1]
	return l
}

// fullPage replaces the summaries in page's entries (the job of a
// one-off export, the run of a schedule) with the jobs as stored, read
// with one request: the list filters and sorts by summaries, which hold
// every field it does, but renders links and reasons from whole jobs. A
// job gone meanwhile keeps its summary, decoded only then; an entry
// whose summary does not decode either is left out of the page.
func (d *API) fullPage(ctx context.Context, page []entry) ([]entry, error) {
	var ids []string
	for _, e := range page {
		switch {
		case !e.schedule:
			ids = append(ids, e.id())
		case e.run != nil:
			ids = append(ids, e.run.GetId())
		}
	}
	if len(ids) == 0 {
		return page, nil
	}
	jobs, err := d.jobs.GetMany(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := page[:0]
	for _, e := range page {
		switch {
		case !e.schedule && jobs[e.id()] != nil:
			e.job = jobs[e.id()]
		case !e.schedule && e.job == nil:
			if e.job = e.sum.Job(); e.job == nil {
				continue
			}
		case e.schedule && e.run != nil && jobs[e.run.GetId()] != nil:
			e.run = jobs[e.run.GetId()]
		}
		out = append(out, e)
	}
	return out, nil
}

// cheapQuery reports whether a list's filter, sort and q read only
// fields that cheapFields takes without decoding a summary (ok), and
// whether they read userId.
func cheapQuery(f recordquery.Filter, keys []recordquery.SortKey, text string) (ok, user bool) {
	if text != "" {
		return false, false
	}
	for _, name := range f.Fields() {
		if !slices.Contains(cheapFilterFields, name) {
			return false, false
		}
		user = user || name == "userId"
	}
	for _, k := range keys {
		if !slices.Contains(cheapSortFields, k.Field) {
			return false, false
		}
		user = user || k.Field == "userId"
	}
	return true, user
}

// cheapFilterFields and cheapSortFields are what cheapFields fills: the
// text fields read from the summary's protobuf as they are, and the
// times as the list sorts them (a filter on a time reads its text, which
// cheapFields does not format).
var (
	cheapFilterFields = []string{"id", "status", "userId"}
	cheapSortFields   = []string{"id", "status", "userId", "createdTime", "updatedTime"}
)

// cheapFields is listedFields of a one-off export or run, lz, as far as
// a cheapQuery's filter and sort read it (its id always: the order's
// tie-break; its owner if user), taken from the summary without
// decoding it.
func cheapFields(lz *jobstore.LazySummary, viewer scope, user bool) item {
	it := item{ID: lz.ID(), Status: statusWord(lz.State())}
	if lz.Owned(viewer.user.GetId()) {
		it.ID = lz.ClientIDOr(it.ID)
	}
	if user {
		it.UserID = lz.OwnerID()
	}
	it.secs = itemSecs{set: true, created: listedSecs(lz.CreatedAt()), updated: listedSecs(lz.UpdatedAt())}
	it.secs.scheduled = it.secs.created
	return it
}

// filterMemo is f.Match over items, decided once per distinct combination
// of the values f reads (f depends on nothing else): a caller's exports
// share a few statuses, formats and resources, and matching a text value
// tries it as a number and as a date first, which was a fifth of a large
// list's time.
func filterMemo(f recordquery.Filter) func(item) bool {
	if f.IsZero() {
		return func(item) bool { return true }
	}
	fields := f.Fields()
	seen := map[string]bool{}
	var key []byte
	return func(it item) bool {
		key = key[:0]
		for _, name := range fields {
			key = appendFieldKey(key, it, name)
		}
		m, ok := seen[string(key)]
		if !ok {
			m = f.Match(func(name string) (any, bool) { return itemValue(it, name) })
			// A filter on a field of many values (a time, an id) would
			// remember every export's: the list holds its page, not that.
			if len(seen) < maxMemo {
				seen[string(key)] = m
			}
		}
		return m
	}
}

// appendFieldKey is appendMemoKey of it's field name, the text fields
// read by textField, unboxed.
func appendFieldKey(key []byte, it item, name string) []byte {
	s, ok := textField(it, name)
	if !ok {
		v, _ := itemValue(it, name)
		return appendMemoKey(key, v)
	}
	return append(strconv.AppendQuote(append(key, 's'), s), ';')
}

// maxMemo bounds the combinations filterMemo remembers.
const maxMemo = 4096

// appendMemoKey appends v, one of itemValue's values, tagged with its
// type and quoted, so that distinct values give distinct keys; fmt's %T
// and %q did the same at a tenth of a large list's time.
func appendMemoKey(key []byte, v any) []byte {
	switch x := v.(type) {
	case string:
		key = strconv.AppendQuote(append(key, 's'), x)
	case float64:
		key = strconv.AppendFloat(append(key, 'f'), x, 'g', -1, 64)
	case time.Time:
		key = x.AppendFormat(append(key, 't'), time.RFC3339Nano)
	case []string:
		key = append(key, 'l')
		for _, e := range x {
			key = strconv.AppendQuote(key, e)
		}
	default:
		key = append(key, 'n')
	}
	return append(key, ';')
}

// Bounds of the list's integer parameters. offset+limit is at most
// 2^31+1000, which an int holds; the heap of a list grows only with
// the exports that match, whatever the offset.
const (
	maxLimit  = 1000
	maxOffset = 1 << 31
)

// intParam reads an integer query parameter within [lo, hi]; def when it
// is absent. Anything else (not a number, out of range, too large for an
// int64) is Rebilly's 422 on that parameter.
func intParam(q url.Values, name string, def, lo, hi int) (int, *invalidField) {
	v, ok := q[name]
	if !ok || v[0] == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || n < int64(lo) || n > int64(hi) {
		return def, &invalidField{Field: name, Message: fmt.Sprintf("must be an integer from %d to %d", lo, hi)}
	}
	return int(n), nil
}

// itemFields are the fields list sort and filter accept.
var itemFields = []string{"id", "name", "format", "resource", "status", "userId", "recordCount",
	"scheduledTime", "createdTime", "updatedTime", "emailNotification", "fields"}

func itemValue(it item, f string) (any, bool) {
	if s, ok := textField(it, f); ok {
		return s, true
	}
	switch f {
	case "recordCount":
		return float64(it.RecordCount), true
	case "scheduledTime":
		if it.ScheduledTime == nil {
			return nil, false
		}
		t, _ := time.Parse(time.RFC3339, *it.ScheduledTime)
		return t, true
	case "createdTime":
		t, _ := time.Parse(time.RFC3339, it.CreatedTime)
		return t, true
	case "updatedTime":
		t, _ := time.Parse(time.RFC3339, it.UpdatedTime)
		return t, true
	case "emailNotification":
		return it.EmailNotification, true
	case "fields":
		return it.Fields, true
	}
	return nil, false
}

// textField is it's text field f, as a string: the sort values and the
// filter memo's keys read it so, without itemValue's boxing in an
// interface (an allocation per export and field). ok is false for the
// fields that are not text.
func textField(it item, f string) (s string, ok bool) {
	switch f {
	case "id":
		return it.ID, true
	case "name":
		return it.Name, true
	case "format":
		return it.Format, true
	case "resource":
		return it.Resource, true
	case "status":
		return it.Status, true
	case "userId":
		return it.UserID, true
	}
	return "", false
}

// matchText is q: a case-insensitive substring of a text field.
func matchText(it item, q string) bool {
	for _, s := range []string{it.ID, it.Name, it.Format, it.Resource, it.Status, it.UserID} {
		if strings.Contains(strings.ToLower(s), q) {
			return true
		}
	}
	return false
}
