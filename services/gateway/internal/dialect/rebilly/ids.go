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

// clientKeyLength is the number of base32 digits of a client key: 130 bits
// of SHA-256.
const clientKeyLength = 26

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// clientKey is where the export the caller names clientID is stored.
func clientKey(s scope, clientID string) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{dialectName, s.org, s.user.GetId(), clientID}, "\x00")))
	return "c" + lowerBase32.EncodeToString(sum[:])[:clientKeyLength]
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
// stored ids an admin is shown). An export the caller may not see is not
// found, exactly like a missing one, so no answer tells whether someone
// else's id exists.
func (d *API) resolve(ctx context.Context, s scope, id string) (e entry, found bool, err error) {
	keys := []string{clientKey(s, id)}
	if id != keys[0] {
		keys = append(keys, id)
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
		if !s.sees(job) || d.hidden(ctx, key) {
			continue
		}
		return entry{job: job}, true, nil
	}
	return entry{}, false, nil
}
