package rebilly

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"strings"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/schedule"
)

// Client-chosen ids (PUT /data-exports/{id}, or "id" in a create body)
// live in a namespace of their own per dialect, organization and owner:
// the job or schedule is stored under clientKey, the id the client chose
// is kept in Job.client_id and shown in its place. So a client id can
// never name another dialect's job (myTracker's raw-7), another owner's
// export or a scheduled run (schedule.RunID) that has not fired yet, and
// two owners' "monthly" are two exports. Server-generated ids (17
// base62 characters) and run ids ("<schedule id>-<unix time>") are stored
// as they are; a client key is "c" and 26 base32 digits, so it is neither.
//
// A run names its schedule the way its owner does: the run of "monthly"
// at 1718431200 is shown to its owner as "monthly-1718431200" (kept in the
// run's client_id, and resolved back by runKey), so ids of runs always
// start with an id of their schedule. When that would be longer than
// Rebilly's 50 characters the run keeps its stored id, "<schedule's
// stored id>-<unix time>" (at most 38 characters), whose prefix resolves
// to the schedule too. A client id of that shape is reserved for the runs
// of the caller's schedule (reservedForRun).
//
// A one-off export updated by PUT before it started is replaced: the old
// job is canceled and hidden, the new one stored under replacementKey of
// the old and shown under the old's id, which resolve follows.

// clientKeyLength is the number of base32 digits of a client key: 130 bits
// of SHA-256.
const clientKeyLength = 26

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// clientKey is where the export the caller names clientID is stored.
func clientKey(s scope, clientID string) string {
	return clientKeyOf(s.org, s.user.GetId(), clientID)
}

// clientKeyOf is clientKey for an owner in an organization.
func clientKeyOf(org, owner, clientID string) string {
	return hashKey(dialectName, org, owner, clientID)
}

// replacementKey is where the update of the one-off export old is stored.
// It depends on old alone (not on who updates it), so every viewer of old
// finds the replacement; its inputs are never those of a client key.
func replacementKey(old *exportv1.Job) string {
	return hashKey(dialectName, old.GetOrganizationId(), old.GetOwnerId(), "replaces", old.GetId())
}

func hashKey(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return "c" + lowerBase32.EncodeToString(sum[:])[:clientKeyLength]
}

// maxReplacements bounds the updates of one not-yet-started export, and so
// the reads of resolve.
const maxReplacements = 16

// splitRunID splits "<schedule id>-<unix time>" into its schedule id and
// time digits.
func splitRunID(id string) (sched, digits string, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 || i == len(id)-1 {
		return "", "", false
	}
	for _, c := range id[i+1:] {
		if c < '0' || c > '9' {
			return "", "", false
		}
	}
	return id[:i], id[i+1:], true
}

// runShownID is the id the owner of the schedule sched sees for its run
// runID: "<the schedule's client id>-<unix time>" when the schedule has a
// client id and that fits Rebilly's limit, else "" (the stored id).
func runShownID(sched *exportv1.Job, runID string) string {
	c := sched.GetClientId()
	_, digits, ok := splitRunID(runID)
	if c == "" || !ok || len(c)+1+len(digits) > maxIDLength {
		return ""
	}
	return c + "-" + digits
}

// runKey is the stored id of the run the caller names id, when id has the
// shape of a run's shown id ("<client id>-<digits>").
func runKey(s scope, id string) (string, bool) {
	sched, digits, ok := splitRunID(id)
	if !ok {
		return "", false
	}
	return clientKey(s, sched) + "-" + digits, true
}

// shownID is the id j has for the caller: the id its owner chose, to its
// owner; the stored id otherwise (an admin listing everyone's exports sees
// two owners' same client id as two ids, each of which resolves).
func (s scope) shownID(j *exportv1.Job) string {
	if c := j.GetClientId(); c != "" && j.GetOwnerId() == s.user.GetId() {
		return c
	}
	return j.GetId()
}

// resolve finds the export id names for the caller: first the caller's
// own client id, then a stored id (server-generated ids, runs, and the
// stored ids an admin is shown), then a run as its owner is shown it. An
// export the caller may not see is not found, exactly like a missing one,
// so no answer tells whether someone else's id exists.
func (d *API) resolve(ctx context.Context, s scope, id string) (e entry, found bool, err error) {
	keys := []string{clientKey(s, id)}
	if id != keys[0] {
		keys = append(keys, id)
	}
	runID, isRun := runKey(s, id)
	if isRun {
		keys = append(keys, runID)
	}
	for _, key := range keys {
		sched, rev, err := d.schedules.Get(ctx, key)
		switch {
		case err == nil:
			if !s.sees(sched) {
				continue
			}
			run, err := d.latestRun(ctx, key)
			if err != nil {
				return entry{}, false, err
			}
			return entry{job: sched, schedule: true, rev: rev, run: run}, true, nil
		case !errors.Is(err, schedule.ErrNotFound):
			return entry{}, false, err
		}
		job, err := d.jobs.Get(ctx, key)
		switch {
		case errors.Is(err, jobstore.ErrNotFound):
			continue
		case err != nil:
			return entry{}, false, err
		}
		if !s.sees(job) || (key == runID && job.GetClientId() != id) {
			continue
		}
		job, err = d.current(ctx, job)
		switch {
		case err != nil:
			return entry{}, false, err
		case job == nil:
			continue
		}
		return entry{job: job}, true, nil
	}
	return entry{}, false, nil
}

// current follows job's replacements (updates by PUT before it started)
// to the export that stands for it now, or nil when that was deleted.
func (d *API) current(ctx context.Context, job *exportv1.Job) (*exportv1.Job, error) {
	for range maxReplacements + 1 {
		if !d.hidden(ctx, job.GetId()) {
			return job, nil
		}
		next, err := d.jobs.Get(ctx, replacementKey(job))
		switch {
		case errors.Is(err, jobstore.ErrNotFound):
			// Deleted, not replaced.
			return nil, nil
		case err != nil:
			return nil, err
		}
		job = next
	}
	return nil, nil
}

// reservedForRun reports whether the client id clientID has the shape of
// the shown id of a run of one of the caller's schedules, which it would
// hide.
func (d *API) reservedForRun(ctx context.Context, s scope, clientID string) (bool, error) {
	sched, _, ok := splitRunID(clientID)
	if !ok {
		return false, nil
	}
	j, _, err := d.schedules.Get(ctx, clientKey(s, sched))
	switch {
	case errors.Is(err, schedule.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return s.sees(j), nil
}
