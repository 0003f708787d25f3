// Package schedule runs recurring exports. A schedule is a template job
// with a Recurrence (RFC 5545 RRULE, start, next occurrence) kept in the KV
// bucket bus.BucketSchedules under its id. Every gateway replica runs a
// Scheduler; each tick fires, per schedule, the most recent due
// occurrence:
//
//  1. claim the occurrence with kv.Create("<id>.<unix>") whose value is the
//     run's job id (<id>-<unix>), or "skipped" when the owner is at the
//     unfinished-export limit (Admission); only one replica's Create
//     succeeds, and a replica that finds the claim already there follows
//     its decision,
//  2. make sure the run job exists (RunFunc is idempotent: the run id is a
//     function of the occurrence, and creating an existing job is a no-op),
//     which repairs a replica that crashed between claim and submit,
//  3. move the schedule's next occurrence past now with a revision-checked
//     update.
//
// So an occurrence produces at most one job however many replicas race,
// and next only moves after its run exists. Occurrences missed during an
// outage, or lying between a start in the past and now, are not caught up:
// only the most recent one runs.
//
// The work a schedule can cause is bounded: Validate refuses rules whose
// occurrences come closer than a minimum interval, a Store can cap the
// active schedules per owner, and catch-up is at most one run per tick.
package schedule

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/teambition/rrule-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/kvbatch"
	"dataport.dev/shared/telemetry"
)

// Errors.
var (
	ErrNotFound = errors.New("schedule: not found")
	ErrExists   = errors.New("schedule: already exists")
	// ErrInvalidRule wraps every RRULE problem; the message says which.
	ErrInvalidRule = errors.New("invalid RRULE")
	// ErrTooFrequent wraps a valid rule whose occurrences can come closer
	// than the minimum interval; the message gives both.
	ErrTooFrequent = errors.New("too frequent")
	// ErrTooMany is returned by Create (and by an Update that revives a
	// finished schedule) when the owner already has the most active
	// schedules allowed.
	ErrTooMany = errors.New("schedule: too many active recurring exports")
)

// DefaultMinInterval is the shortest time Validate allows between two
// occurrences of a rule.
const DefaultMinInterval = time.Hour

// maxInterval bounds INTERVAL: larger values buy nothing and would let the
// iterator's hour and minute arithmetic overflow.
const maxInterval = 10000

// sampleSize is how many occurrences Validate looks at after the start
// and again after now; maxWalk bounds the whole walk, should the start lie
// so far back that reaching now would take longer (the structural bound
// has then decided alone).
const (
	sampleSize = 500
	maxWalk    = 1 << 20
)

// minStart is the earliest accepted start. The iterator walks from the
// start to every occurrence it is asked about, so an unbounded past would
// make every tick walk further.
var minStart = time.Unix(0, 0).UTC()

// Parse checks an RRULE (with or without the "RRULE:" prefix) and returns
// it anchored at start. Sub-minute frequencies are refused: every
// occurrence is a whole export. Rules the iterator cannot finish (an
// HOURLY or MINUTELY rule whose BYHOUR/BYMINUTE can never be reached by
// stepping INTERVAL from the start: rrule-go loops forever on those) are
// refused too, so nothing built on Parse can hang.
func Parse(instruction string, start time.Time) (*rrule.RRule, error) {
	opt, err := parseOption(instruction, start)
	if err != nil {
		return nil, err
	}
	return newRule(opt)
}

// newRule builds the iterator of a checked option set.
func newRule(opt *rrule.ROption) (*rrule.RRule, error) {
	r, err := rrule.NewRRule(*opt)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRule, err)
	}
	return r, nil
}

func parseOption(instruction string, start time.Time) (*rrule.ROption, error) {
	s := strings.TrimSpace(instruction)
	s = strings.TrimPrefix(s, "RRULE:")
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidRule)
	}
	if strings.ContainsAny(s, "\r\n") || strings.Contains(strings.ToUpper(s), "DTSTART") {
		return nil, fmt.Errorf("%w: give a single RRULE; the start goes in recurring.start", ErrInvalidRule)
	}
	opt, err := rrule.StrToROption(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRule, err)
	}
	if !strings.Contains(strings.ToUpper(s), "FREQ=") {
		return nil, fmt.Errorf("%w: FREQ is required", ErrInvalidRule)
	}
	if opt.Freq == rrule.SECONDLY {
		return nil, fmt.Errorf("%w: FREQ=SECONDLY is not allowed; the shortest period is MINUTELY", ErrInvalidRule)
	}
	if opt.Interval < 0 || opt.Interval > maxInterval {
		return nil, fmt.Errorf("%w: INTERVAL must be from 1 to %d", ErrInvalidRule, maxInterval)
	}
	if opt.Interval == 0 {
		opt.Interval = 1
	}
	if opt.Count < 0 {
		return nil, fmt.Errorf("%w: COUNT must be positive", ErrInvalidRule)
	}
	start = start.UTC().Truncate(time.Second)
	if start.Before(minStart) || start.Year() > rrule.MAXYEAR {
		return nil, fmt.Errorf("%w: the start must be from 1970 to %d", ErrInvalidRule, rrule.MAXYEAR)
	}
	opt.Dtstart = start
	if err := reachable(opt); err != nil {
		return nil, err
	}
	return opt, nil
}

// reachable refuses HOURLY and MINUTELY rules whose BYHOUR (and BYMINUTE)
// values are never hit by stepping INTERVAL from the start's time of day.
// Stepping by n hours visits exactly the hours congruent to the start's
// modulo gcd(n, 24); by n minutes, the minutes of the day congruent
// modulo gcd(n, 1440).
func reachable(opt *rrule.ROption) error {
	st := opt.Dtstart
	switch opt.Freq {
	case rrule.HOURLY:
		if len(opt.Byhour) == 0 {
			return nil
		}
		g := gcd(opt.Interval, 24)
		for _, h := range opt.Byhour {
			if mod(h-st.Hour(), g) == 0 {
				return nil
			}
		}
		return fmt.Errorf("%w: no BYHOUR value is reached every %d hours from the start at %02d:00", ErrInvalidRule, opt.Interval, st.Hour())
	case rrule.MINUTELY:
		if len(opt.Byhour) == 0 && len(opt.Byminute) == 0 {
			return nil
		}
		g := gcd(opt.Interval, 24*60)
		hours, minutes := opt.Byhour, opt.Byminute
		if len(hours) == 0 {
			hours = seq(24)
		}
		if len(minutes) == 0 {
			minutes = seq(60)
		}
		m0 := st.Hour()*60 + st.Minute()
		for _, h := range hours {
			for _, m := range minutes {
				if mod(h*60+m-m0, g) == 0 {
					return nil
				}
			}
		}
		return fmt.Errorf("%w: no BYHOUR/BYMINUTE time is reached every %d minutes from the start at %02d:%02d", ErrInvalidRule, opt.Interval, st.Hour(), st.Minute())
	}
	return nil
}

// Validate is Parse for a new or changed schedule: it also refuses rules
// whose occurrences can come closer than minInterval (0 means
// DefaultMinInterval), and rules with no occurrence after now.
//
// The gap check is structural first, then empirical. Structurally, every
// occurrence of a rule falls on a period (INTERVAL units of FREQ, or one
// day when BYDAY and its kin can pick neighbouring days) at one of a fixed
// set of offsets into it (the BYHOUR x BYMINUTE x BYSECOND combinations
// finer than FREQ, the start's own values where a list is absent); two
// occurrences are then at least the smallest distance between offsets
// apart, or one period less the offsets' spread. That bound is sound for
// every rule, so FREQ=MINUTELY;BYSECOND=0,30 (30 s) and
// FREQ=HOURLY;BYMINUTE=0,30 (30 min) are refused. Then the first
// occurrences after the start and after now are walked and their gaps
// measured, which catches anything the bound missed.
func Validate(instruction string, start, now time.Time, minInterval time.Duration) (*rrule.RRule, error) {
	if minInterval <= 0 {
		minInterval = DefaultMinInterval
	}
	opt, err := parseOption(instruction, start)
	if err != nil {
		return nil, err
	}
	r, err := newRule(opt)
	if err != nil {
		return nil, err
	}
	if bound := gapBound(opt); bound < minInterval {
		return nil, fmt.Errorf("%w: occurrences of this rule can come %s apart; the minimum is %s", ErrTooFrequent, short(bound), short(minInterval))
	}
	gap, future := sampledGap(r, now.UTC())
	if gap < minInterval {
		return nil, fmt.Errorf("%w: occurrences of this rule come %s apart; the minimum is %s", ErrTooFrequent, short(gap), short(minInterval))
	}
	if !future {
		return nil, fmt.Errorf("%w: the rule has no occurrence after now", ErrInvalidRule)
	}
	return r, nil
}

// gapBound is a lower bound of the time between two consecutive
// occurrences (see Validate).
func gapBound(opt *rrule.ROption) time.Duration {
	st := opt.Dtstart
	or := func(list []int, v int) []int {
		if len(list) == 0 {
			return []int{v}
		}
		return list
	}
	n := opt.Interval
	var offsets []int // seconds into the period
	var period int    // seconds
	seconds := or(opt.Bysecond, st.Second())
	switch opt.Freq {
	case rrule.SECONDLY:
		return time.Duration(n) * time.Second
	case rrule.MINUTELY:
		offsets, period = seconds, n*60
	case rrule.HOURLY:
		for _, m := range or(opt.Byminute, st.Minute()) {
			for _, s := range seconds {
				offsets = append(offsets, m*60+s)
			}
		}
		period = n * 3600
	default:
		for _, h := range or(opt.Byhour, st.Hour()) {
			for _, m := range or(opt.Byminute, st.Minute()) {
				for _, s := range seconds {
					offsets = append(offsets, h*3600+m*60+s)
				}
			}
		}
		period = dayPeriod(opt) * 86400
	}
	slices.Sort(offsets)
	offsets = slices.Compact(offsets)
	bound := period - (offsets[len(offsets)-1] - offsets[0])
	for i := 1; i < len(offsets); i++ {
		bound = min(bound, offsets[i]-offsets[i-1])
	}
	return time.Duration(max(bound, 0)) * time.Second
}

// dayPeriod is the fewest days between two days a DAILY or coarser rule
// can pick: one as soon as a day list could pick neighbouring days.
func dayPeriod(opt *rrule.ROption) int {
	days := len(opt.Byweekday) > 0 || len(opt.Bymonthday) > 0 || len(opt.Byyearday) > 0 ||
		len(opt.Byweekno) > 0 || len(opt.Byeaster) > 0
	switch {
	case opt.Freq == rrule.DAILY:
		return opt.Interval
	case days:
		return 1
	case opt.Freq == rrule.WEEKLY:
		return 7 * opt.Interval
	case opt.Freq == rrule.MONTHLY, opt.Freq == rrule.YEARLY && len(opt.Bymonth) > 0:
		// The start's day of the month in neighbouring months.
		return 28
	default:
		return 365 * opt.Interval
	}
}

// sampledGap walks the first sampleSize occurrences and the first
// sampleSize after now, and returns the smallest gap between consecutive
// ones (a very long duration when there are fewer than two) and whether
// any occurrence lies after now. The walk from the start to now is bounded
// by maxWalk; past it, only whether the rule goes on after now is asked.
func sampledGap(r *rrule.RRule, now time.Time) (time.Duration, bool) {
	gap := time.Duration(math.MaxInt64)
	next := r.Iterator()
	var prev time.Time
	early, late := 0, 0
	for late < sampleSize {
		if early >= maxWalk && late == 0 {
			return gap, !r.After(now, false).IsZero()
		}
		t, ok := next()
		if !ok {
			break
		}
		after := t.After(now)
		if after {
			late++
		}
		if !prev.IsZero() && (early < sampleSize || after) {
			gap = min(gap, t.Sub(prev))
		}
		early++
		prev = t
	}
	return gap, late > 0
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func mod(a, m int) int { return ((a % m) + m) % m }

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// short prints a duration without zero units: "30s", "1h", "1h30m".
func short(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Next returns the first occurrence of rec after t (at t too when
// inclusive), or nil when the rule has no more.
func Next(rec *exportv1.Recurrence, t time.Time, inclusive bool) (*timestamppb.Timestamp, error) {
	r, err := Parse(rec.GetInstruction(), rec.GetStart().AsTime())
	if err != nil {
		return nil, err
	}
	n := r.After(t.UTC(), inclusive)
	if n.IsZero() {
		return nil, nil
	}
	return timestamppb.New(n), nil
}

// RunID is the job id of a schedule's run at occurrence.
func RunID(scheduleID string, occurrence time.Time) string {
	return scheduleID + "-" + strconv.FormatInt(occurrence.Unix(), 10)
}

func claimKey(scheduleID string, occurrence time.Time) string {
	return scheduleID + "." + strconv.FormatInt(occurrence.Unix(), 10)
}

// hiddenKey marks a one-off export deleted through a dialect: the job
// record stays (the projection owns it) but listings skip it.
func hiddenKey(id string) string { return id + ".deleted" }

// ownerPrefix starts the per-owner index keys
// "owners.o<hex of owner id>.<schedule id>". They have three tokens, so
// neither List ("*"), a hidden marker ("<id>.deleted") nor Delete's claim sweep
// ("<id>.*") ever meets one; hex keeps any owner id a valid token.
const ownerPrefix = "owners."

func ownerToken(ownerID string) string { return "o" + hex.EncodeToString([]byte(ownerID)) }

func ownerKey(ownerID, id string) string { return ownerPrefix + ownerToken(ownerID) + "." + id }

// orgPrefix starts the per-organization index keys
// "orgs.g<hex of organization id>.<schedule id>", three tokens like the
// owner keys, for an administrator's organization-wide listing.
const orgPrefix = "orgs."

func orgKey(orgID, id string) string {
	return orgPrefix + "g" + hex.EncodeToString([]byte(orgID)) + "." + id
}

// active reports whether a schedule still has occurrences to fire.
func active(job *exportv1.Job) bool { return job.GetRecurrence().GetNext() != nil }

// Store reads and writes schedules. It is safe for concurrent use.
type Store struct {
	kv          jetstream.KeyValue
	js          jetstream.JetStream
	maxPerOwner int
}

// StoreOption configures a Store.
type StoreOption func(*Store)

// WithMaxPerOwner caps the active schedules (those with an occurrence
// left) one owner may have; 0, the default, means no cap.
func WithMaxPerOwner(n int) StoreOption { return func(s *Store) { s.maxPerOwner = max(n, 0) } }

// WithBatchReads lets the Store read many keys of its bucket with one
// request (package kvbatch) through js, the JetStream context the bucket
// lives in; without it, Hidden reads them one by one.
func WithBatchReads(js jetstream.JetStream) StoreOption { return func(s *Store) { s.js = js } }

// NewStore returns a Store over the schedules bucket.
func NewStore(kv jetstream.KeyValue, opts ...StoreOption) *Store {
	s := &Store{kv: kv}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Create stores a new schedule: ErrExists if the id is taken, ErrTooMany
// if the owner would have more active schedules than the cap. The schedule
// and its owner index key are written first and counted after, so two
// racing creates can both be refused but never both exceed the cap.
func (s *Store) Create(ctx context.Context, job *exportv1.Job) error {
	if sc := trace.SpanContextFromContext(ctx); job.GetTraceId() == "" && sc.IsValid() {
		// Each run's trace links to the request that made the schedule.
		job.TraceId, job.SpanId = sc.TraceID().String(), sc.SpanID().String()
	}
	data, err := proto.Marshal(job)
	if err != nil {
		return fmt.Errorf("marshal schedule: %w", err)
	}
	if _, err := s.kv.Create(ctx, job.GetId(), data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrExists
		}
		return fmt.Errorf("create schedule %s: %w", job.GetId(), err)
	}
	if _, err := s.kv.Put(ctx, ownerKey(job.GetOwnerId(), job.GetId()), []byte(job.GetId())); err != nil {
		_ = s.kv.Purge(context.WithoutCancel(ctx), job.GetId())
		return fmt.Errorf("index schedule %s: %w", job.GetId(), err)
	}
	if org := job.GetOrganizationId(); org != "" {
		if _, err := s.kv.Put(ctx, orgKey(org, job.GetId()), []byte(job.GetId())); err != nil {
			_ = s.kv.Purge(context.WithoutCancel(ctx), job.GetId())
			_ = s.kv.Purge(context.WithoutCancel(ctx), ownerKey(job.GetOwnerId(), job.GetId()))
			return fmt.Errorf("index schedule %s: %w", job.GetId(), err)
		}
	}
	if s.maxPerOwner == 0 || !active(job) {
		return nil
	}
	n, err := s.CountActive(ctx, job.GetOwnerId())
	if err == nil && n <= s.maxPerOwner {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	_ = s.kv.Purge(ctx, job.GetId())
	_ = s.kv.Purge(ctx, ownerKey(job.GetOwnerId(), job.GetId()))
	if err != nil {
		return err
	}
	return ErrTooMany
}

// CountActive returns how many schedules of ownerID have an occurrence
// left. It reads only that owner's index keys and schedules.
func (s *Store) CountActive(ctx context.Context, ownerID string) (int, error) {
	keys, err := s.kv.ListKeysFiltered(ctx, ownerPrefix+ownerToken(ownerID)+".*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("count schedules: %w", err)
	}
	var ids []string
	for k := range keys.Keys() {
		ids = append(ids, k[strings.LastIndexByte(k, '.')+1:])
	}
	n := 0
	for _, id := range ids {
		job, _, err := s.Get(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			// A stale index key (deleted schedule): not counted.
		case err != nil:
			return 0, err
		case job.GetOwnerId() == ownerID && active(job):
			n++
		}
	}
	return n, nil
}

// Get returns a schedule and its revision, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*exportv1.Job, uint64, error) {
	if id == "" || strings.ContainsAny(id, ".*> ") {
		return nil, 0, ErrNotFound
	}
	e, err := s.kv.Get(ctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrInvalidKey):
		return nil, 0, ErrNotFound
	case err != nil:
		return nil, 0, fmt.Errorf("get schedule %s: %w", id, err)
	}
	job := &exportv1.Job{}
	if err := proto.Unmarshal(e.Value(), job); err != nil {
		return nil, 0, fmt.Errorf("decode schedule %s: %w", id, err)
	}
	return job, e.Revision(), nil
}

// Update replaces a schedule if its revision is still rev. An update that
// gives a finished schedule occurrences again counts against the owner's
// cap like a create (ErrTooMany).
func (s *Store) Update(ctx context.Context, job *exportv1.Job, rev uint64) (uint64, error) {
	if s.maxPerOwner > 0 && active(job) {
		if old, _, err := s.Get(ctx, job.GetId()); err == nil && !active(old) {
			n, err := s.CountActive(ctx, job.GetOwnerId())
			if err != nil {
				return 0, err
			}
			if n >= s.maxPerOwner {
				return 0, ErrTooMany
			}
		}
	}
	data, err := proto.Marshal(job)
	if err != nil {
		return 0, fmt.Errorf("marshal schedule: %w", err)
	}
	n, err := s.kv.Update(ctx, job.GetId(), data, rev)
	if err != nil {
		return 0, fmt.Errorf("update schedule %s: %w", job.GetId(), err)
	}
	return n, nil
}

// Delete removes a schedule, its index key and its claims; runs already
// created stay.
func (s *Store) Delete(ctx context.Context, id string) error {
	if job, _, err := s.Get(ctx, id); err == nil {
		_ = s.kv.Purge(ctx, ownerKey(job.GetOwnerId(), id))
		if org := job.GetOrganizationId(); org != "" {
			_ = s.kv.Purge(ctx, orgKey(org, id))
		}
	}
	if err := s.kv.Purge(ctx, id); err != nil {
		return fmt.Errorf("delete schedule %s: %w", id, err)
	}
	keys, err := s.kv.ListKeysFiltered(ctx, id+".*")
	if err != nil {
		return nil // the schedule is gone; stale claims are harmless
	}
	for k := range keys.Keys() {
		if k != hiddenKey(id) {
			_ = s.kv.Purge(ctx, k)
		}
	}
	return nil
}

// List returns every schedule.
func (s *Store) List(ctx context.Context) ([]*exportv1.Job, error) {
	var out []*exportv1.Job
	err := s.scan(ctx, "*", func(e jetstream.KeyValueEntry) error {
		job := &exportv1.Job{}
		if err := proto.Unmarshal(e.Value(), job); err != nil {
			return fmt.Errorf("decode schedule %s: %w", e.Key(), err)
		}
		out = append(out, job)
		return nil
	})
	return out, err
}

// ListOwner returns ownerID's schedules. It reads only that owner's index
// keys and schedules.
func (s *Store) ListOwner(ctx context.Context, ownerID string) ([]*exportv1.Job, error) {
	return s.listIndexed(ctx, ownerPrefix+ownerToken(ownerID)+".*", func(j *exportv1.Job) bool { return j.GetOwnerId() == ownerID })
}

// ListOrganization returns the schedules of organization orgID. It reads
// only that organization's index keys and schedules; schedules created
// before those keys existed are indexed by IndexOrganizations.
func (s *Store) ListOrganization(ctx context.Context, orgID string) ([]*exportv1.Job, error) {
	if orgID == "" {
		return nil, nil
	}
	return s.listIndexed(ctx, orgKey(orgID, "*"), func(j *exportv1.Job) bool { return j.GetOrganizationId() == orgID })
}

// IndexOrganizations writes the organization key of every schedule that
// lacks one and returns how many it wrote. It reads every schedule once,
// so it runs at start, never on a request; it is idempotent.
func (s *Store) IndexOrganizations(ctx context.Context) (int, error) {
	all, err := s.List(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, job := range all {
		org := job.GetOrganizationId()
		if org == "" {
			continue
		}
		if _, err := s.kv.Create(ctx, orgKey(org, job.GetId()), []byte(job.GetId())); err == nil {
			n++
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return n, fmt.Errorf("index schedule %s: %w", job.GetId(), err)
		}
	}
	return n, nil
}

// listIndexed reads the schedules whose index keys match filter (stale
// keys of deleted schedules are skipped) and keeps those keep accepts.
func (s *Store) listIndexed(ctx context.Context, filter string, keep func(*exportv1.Job) bool) ([]*exportv1.Job, error) {
	ids, err := s.indexedIDs(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	var out []*exportv1.Job
	add := func(id string, data []byte) error {
		job := &exportv1.Job{}
		if err := proto.Unmarshal(data, job); err != nil {
			return fmt.Errorf("decode schedule %s: %w", id, err)
		}
		if keep(job) {
			out = append(out, job)
		}
		return nil
	}
	if s.js != nil {
		values, err := kvbatch.Get(ctx, s.js, s.kv, ids)
		if err != nil {
			return nil, fmt.Errorf("list schedules: %w", err)
		}
		for _, id := range ids {
			if data, ok := values[id]; ok {
				if err := add(id, data); err != nil {
					return nil, err
				}
			}
		}
		return out, nil
	}
	for _, id := range ids {
		job, _, err := s.Get(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, err
		case keep(job):
			out = append(out, job)
		}
	}
	return out, nil
}

// indexedIDs are the schedule ids of the index keys under filter: with
// one direct get when batch reads are on and the keys fit one (a caller
// has a few schedules), else by a key listing, which creates a consumer
// and waits in the JetStream API queue: a round trip or three more on
// every list.
func (s *Store) indexedIDs(ctx context.Context, filter string) ([]string, error) {
	var ids []string
	if s.js != nil {
		m, err := kvbatch.Matching(ctx, s.js, s.kv, filter)
		if err == nil {
			for k := range m {
				ids = append(ids, k[strings.LastIndexByte(k, '.')+1:])
			}
			slices.Sort(ids)
			return ids, nil
		}
		if !errors.Is(err, kvbatch.ErrTooMany) {
			return nil, err
		}
	}
	keys, err := s.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, err
	}
	for k := range keys.Keys() {
		ids = append(ids, k[strings.LastIndexByte(k, '.')+1:])
	}
	return ids, nil
}

// IsHidden reports whether id was marked with Hide: one read.
func (s *Store) IsHidden(ctx context.Context, id string) (bool, error) {
	if id == "" || strings.ContainsAny(id, ".*> ") {
		return false, nil
	}
	_, err := s.kv.Get(ctx, hiddenKey(id))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrInvalidKey):
		return false, nil
	}
	return false, fmt.Errorf("hidden %s: %w", id, err)
}

// Hidden returns which of ids were marked with Hide, reading only their
// markers.
func (s *Store) Hidden(ctx context.Context, ids []string) (map[string]bool, error) {
	out := make(map[string]bool, len(ids))
	keys := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != "" && !strings.ContainsAny(id, ".*> ") {
			keys = append(keys, hiddenKey(id))
		}
	}
	if s.js != nil {
		found, err := kvbatch.Get(ctx, s.js, s.kv, keys)
		if err != nil {
			return nil, fmt.Errorf("hidden: %w", err)
		}
		for k := range found {
			out[strings.TrimSuffix(k, ".deleted")] = true
		}
		return out, nil
	}
	for _, k := range keys {
		id := strings.TrimSuffix(k, ".deleted")
		h, err := s.IsHidden(ctx, id)
		if err != nil {
			return nil, err
		}
		out[id] = h
	}
	return out, nil
}

// Hide marks a job as deleted for listings.
func (s *Store) Hide(ctx context.Context, id string) error {
	if _, err := s.kv.Put(ctx, hiddenKey(id), []byte{1}); err != nil {
		return fmt.Errorf("hide %s: %w", id, err)
	}
	return nil
}

func (s *Store) scan(ctx context.Context, pattern string, fn func(jetstream.KeyValueEntry) error) error {
	w, err := s.kv.Watch(ctx, pattern, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("scan schedules: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("scan schedules: %w", ctx.Err())
		case e := <-w.Updates():
			if e == nil {
				return nil
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}

// RunFunc creates the run job runID of schedule sched for occurrence. It
// must be idempotent: when the job exists already it returns nil.
type RunFunc func(ctx context.Context, sched *exportv1.Job, occurrence time.Time, runID string) error

// Admission decides whether a run may start now. CanStart is called once
// per due occurrence, before the run is created, and must be safe for
// concurrent use. false skips the occurrence (it is consumed, not retried);
// an error leaves it due for the next tick.
type Admission interface {
	CanStart(ctx context.Context, ownerID string) (bool, error)
}

// ActiveCounter counts an owner's unfinished exports (quota.ActiveJobs
// provides one).
type ActiveCounter interface {
	CountActive(ctx context.Context, ownerID string) (int, error)
}

// UnfinishedLimit admits a run while its owner has fewer than max
// unfinished exports, so a schedule cannot pile runs on an owner who is
// already at the per-user limit; max 0 admits every run.
func UnfinishedLimit(c ActiveCounter, max int) Admission { return unfinishedLimit{c, max} }

type unfinishedLimit struct {
	c   ActiveCounter
	max int
}

func (u unfinishedLimit) CanStart(ctx context.Context, ownerID string) (bool, error) {
	if u.max <= 0 || u.c == nil {
		return true, nil
	}
	n, err := u.c.CountActive(ctx, ownerID)
	if err != nil {
		return false, fmt.Errorf("count unfinished exports: %w", err)
	}
	return n < u.max, nil
}

// skipped is the claim value of an occurrence that was not run; every
// replica that meets the claim skips it too.
const skipped = "skipped"

// Options tune a Scheduler.
type Options struct {
	// Interval between ticks; 0 means 5 seconds.
	Interval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Admission, when set, may skip runs (see Admission).
	Admission Admission
	Logger    *slog.Logger
	// TracerProvider traces each run the scheduler starts; nil traces
	// nothing.
	TracerProvider trace.TracerProvider
}

// Scheduler fires due occurrences. Any number may run against one bucket.
type Scheduler struct {
	store  *Store
	run    RunFunc
	opts   Options
	tracer trace.Tracer
}

// New returns a Scheduler.
func New(store *Store, run RunFunc, opts Options) *Scheduler {
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = tracenoop.NewTracerProvider()
	}
	return &Scheduler{store: store, run: run, opts: opts, tracer: opts.TracerProvider.Tracer("dataport.dev/services/gateway/internal/schedule")}
}

// Run ticks until ctx ends. Tick errors are logged and retried on the next
// tick: a schedule only moves on once its run exists.
func (s *Scheduler) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.opts.Logger.WarnContext(ctx, "schedule tick", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick fires, for every schedule with a due occurrence, the most recent
// due occurrence once.
func (s *Scheduler) Tick(ctx context.Context) error {
	scheds, err := s.store.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, sched := range scheds {
		if err := s.fire(ctx, sched.GetId()); err != nil {
			errs = append(errs, fmt.Errorf("schedule %s: %w", sched.GetId(), err))
		}
	}
	return errors.Join(errs...)
}

// maxAttempts bounds the re-reads of one schedule that other replicas
// keep moving on under us.
const maxAttempts = 8

// fire runs a schedule's due occurrence. After an outage (or for a start
// far in the past) several occurrences are due: only the most recent runs,
// the older ones are skipped, and next moves to the first occurrence after
// now, so a schedule never fires more than once per tick.
func (s *Scheduler) fire(ctx context.Context, id string) error {
	now := s.opts.Now()
	for range maxAttempts {
		sched, rev, err := s.store.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		next := sched.GetRecurrence().GetNext()
		if next == nil || next.AsTime().After(now) {
			return nil
		}
		rule, err := Parse(sched.GetRecurrence().GetInstruction(), sched.GetRecurrence().GetStart().AsTime())
		if err != nil {
			return err
		}
		occ := next.AsTime()
		if latest := rule.Before(now, true); latest.After(occ) {
			s.opts.Logger.WarnContext(ctx, "recurring export missed occurrences; only the most recent runs",
				"schedule_id", id, "first_missed", occ, "running", latest)
			occ = latest
		}
		runID := RunID(id, occ)
		decision, err := s.decide(ctx, sched, occ, runID)
		if err != nil {
			return err
		}
		if decision != skipped {
			// Winner or not, the run must exist before next moves on.
			if err := s.start(ctx, sched, occ, runID); err != nil {
				return fmt.Errorf("run %s: %w", runID, err)
			}
			sched.Recurrence.Runs++
		}
		sched.Recurrence.Next = nil
		if following := rule.After(occ, false); !following.IsZero() {
			sched.Recurrence.Next = timestamppb.New(following)
		}
		sched.UpdatedAt = timestamppb.New(now)
		if _, err := s.store.Update(ctx, sched, rev); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || strings.Contains(err.Error(), "wrong last sequence") {
				continue // another replica moved it on: read again
			}
			return err
		}
		if decision == skipped {
			s.opts.Logger.WarnContext(ctx, "recurring export skipped: its owner is at the unfinished-export limit",
				"job_id", runID, "schedule_id", id, "user_id", sched.GetOwnerId(), "occurrence", occ)
		} else {
			s.opts.Logger.InfoContext(ctx, "recurring export fired", "job_id", runID, "schedule_id", id, "occurrence", occ)
		}
		return nil
	}
	return nil
}

// start runs one occurrence as the root of a trace of its own: the run is
// a job like any other, created inside this span, so its trace begins at
// the scheduler's decision, linked to the trace that created the schedule.
func (s *Scheduler) start(ctx context.Context, sched *exportv1.Job, occ time.Time, runID string) error {
	opts := []trace.SpanStartOption{
		trace.WithNewRoot(),
		trace.WithAttributes(attribute.String("dataport.schedule_id", sched.GetId()), attribute.String("dataport.job_id", runID)),
	}
	if parent := trace.SpanContextFromContext(telemetry.InJobTrace(ctx, sched.GetTraceId(), sched.GetSpanId())); parent.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: parent}))
	}
	ctx, span := s.tracer.Start(ctx, "schedule run", opts...)
	defer span.End()
	err := s.run(ctx, sched, occ, runID)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// decide claims the occurrence with kv.Create("<id>.<unix>") and returns
// the claim's value: the run id, or skipped when Admission refused the
// run. The first replica's decision holds for every other.
func (s *Scheduler) decide(ctx context.Context, sched *exportv1.Job, occ time.Time, runID string) (string, error) {
	key := claimKey(sched.GetId(), occ)
	if e, err := s.store.kv.Get(ctx, key); err == nil {
		return string(e.Value()), nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", fmt.Errorf("read claim %s: %w", key, err)
	}
	decision := runID
	if s.opts.Admission != nil {
		ok, err := s.opts.Admission.CanStart(ctx, sched.GetOwnerId())
		if err != nil {
			return "", err
		}
		if !ok {
			decision = skipped
		}
	}
	if _, err := s.store.kv.Create(ctx, key, []byte(decision)); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", fmt.Errorf("claim %s: %w", key, err)
		}
		e, err := s.store.kv.Get(ctx, key)
		if err != nil {
			return "", fmt.Errorf("read claim %s: %w", key, err)
		}
		return string(e.Value()), nil
	}
	return decision, nil
}
