package scalebench

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
)

// The directory the load runs as: Admin (a Rocket.Chat and native user,
// member of room General) and User (alice, a Rebilly API key in
// organization Org).
const (
	AdminID, AdminToken = "ScaleAdmin0000001", "scale-admin-token-0123456789abcdef"
	UserID, UserAPIKey  = "ScaleUser00000001", "sk_live_scale_alice_0123456789"
	RoomGeneral         = "GENERAL"
	Org                 = "acme"
	// OwnJobs is how many completed jobs the admin and alice each have.
	OwnJobs = 1000
	// Owners is how many other owners share the other jobs.
	Owners = 1000
)

// Seed writes the directory as the host platform would (users with their
// index entries, the room, memberships, the organization membership).
func Seed(ctx context.Context, js jetstream.JetStream) error {
	put := func(bucket, key string, m proto.Message) error {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			return err
		}
		data, err := proto.Marshal(m)
		if err != nil {
			return err
		}
		if _, err := kv.Put(ctx, key, data); err != nil {
			return fmt.Errorf("seed %s/%s: %w", bucket, key, err)
		}
		if u, ok := m.(*sourcev1.User); ok {
			index, err := js.KeyValue(ctx, bus.BucketUserIndex)
			if err != nil {
				return err
			}
			if _, err := access.IndexUser(ctx, index, u); err != nil {
				return err
			}
		}
		return nil
	}
	for _, w := range []struct {
		bucket, key string
		m           proto.Message
	}{
		{bus.BucketUsers, AdminID, &sourcev1.User{Id: AdminID, Username: "root", Roles: []string{"user", "admin"}, AuthTokenSha256: auth.TokenHash(AdminToken)}},
		{bus.BucketUsers, UserID, &sourcev1.User{Id: UserID, Username: "alice", Roles: []string{"user"}, ApiKeySha256: auth.TokenHash(UserAPIKey)}},
		{bus.BucketRooms, RoomGeneral, &sourcev1.Room{Id: RoomGeneral, Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL}},
		{bus.BucketMemberships, AdminID + "." + RoomGeneral, &sourcev1.Membership{UserId: AdminID, RoomId: RoomGeneral}},
		{bus.BucketOrgMembers, UserID + "." + Org, &sourcev1.OrganizationMembership{UserId: UserID, OrganizationId: Org, Default: true}},
	} {
		if err := put(w.bucket, w.key, w.m); err != nil {
			return err
		}
	}
	return nil
}

// Jobs builds the projection's jobs, all completed and created from T0 on.
type Jobs struct{ T0 time.Time }

// Other is the i-th job of another owner: a Rebilly record export in
// alice's organization, so the organization's index holds every one.
func (j Jobs) Other(i int) *exportv1.Job {
	return &exportv1.Job{Id: fmt.Sprintf("other-%07d", i), OwnerId: fmt.Sprintf("owner-%04d", i%Owners),
		Kind: exportv1.JobKind_JOB_KIND_RECORDS, Dialect: "rebilly", OrganizationId: Org,
		Format: exportv1.Format_FORMAT_CSV, Records: &exportv1.RecordsScope{Resource: "transactions"},
		State: exportv1.JobState_JOB_STATE_COMPLETED, CreatedAt: timestamppb.New(j.T0.Add(time.Duration(i) * time.Millisecond))}
}

// Admin is the admin's i-th Rocket.Chat room export.
func (j Jobs) Admin(i int) *exportv1.Job {
	return &exportv1.Job{Id: AdminJobID(i), OwnerId: AdminID,
		Kind: exportv1.JobKind_JOB_KIND_ROOM, Dialect: "rocketchat", Room: &exportv1.RoomScope{RoomId: RoomGeneral},
		State: exportv1.JobState_JOB_STATE_COMPLETED, CreatedAt: timestamppb.New(j.T0.Add(time.Duration(i) * time.Second))}
}

// AdminJobID is the id of Admin(i).
func AdminJobID(i int) string { return fmt.Sprintf("admin-%04d", i) }

// User is alice's i-th Rebilly export; every other one failed.
func (j Jobs) User(i int) *exportv1.Job {
	state := exportv1.JobState_JOB_STATE_COMPLETED
	if i%2 == 0 {
		state = exportv1.JobState_JOB_STATE_FAILED
	}
	return &exportv1.Job{Id: fmt.Sprintf("alice-%04d", i), OwnerId: UserID,
		Kind: exportv1.JobKind_JOB_KIND_RECORDS, Dialect: "rebilly", OrganizationId: Org,
		Format: exportv1.Format_FORMAT_CSV, Records: &exportv1.RecordsScope{Resource: "transactions"},
		State: state, CreatedAt: timestamppb.New(j.T0.Add(time.Duration(i) * time.Second))}
}

// Fill creates the jobs mk(from) .. mk(to-1) through the projection's one
// write path (jobstore.Store.Create: index entries, then the job), with
// workers creates in flight on the one connection, and reports progress
// to progress every 100,000 jobs.
func Fill(ctx context.Context, jobs *jobstore.Store, from, to, workers int, mk func(int) *exportv1.Job, progress func(done int)) error {
	g, gctx := errgroup.WithContext(ctx)
	var next, done atomic.Int64
	next.Store(int64(from))
	for range workers {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= to {
					return nil
				}
				if err := create(gctx, jobs, mk(i)); err != nil {
					return fmt.Errorf("fill job %d: %w", i, err)
				}
				if n := done.Add(1); progress != nil && n%100_000 == 0 {
					progress(from + int(n))
				}
			}
		})
	}
	return g.Wait()
}

// create creates j, retrying a few times: on a loaded machine a write may
// time out after it took effect, and then the retry finds the job there.
func create(ctx context.Context, jobs *jobstore.Store, j *exportv1.Job) error {
	var err error
	for attempt := range 5 {
		_, err = jobs.Create(ctx, &exportv1.ExportRequested{JobId: j.GetId(), OccurredAt: j.GetCreatedAt(), Job: j})
		if err == nil || (attempt > 0 && errors.Is(err, jobstore.ErrExists)) {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	return err
}
