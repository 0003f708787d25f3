package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/demo"
	"dataport.dev/shared/resources"
)

const assetBucket = "dataport-assets"

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// subjectCounts returns how many messages each of the data set's subjects
// holds, in the shape of Counts.
func subjectCounts(t *testing.T, js jetstream.JetStream, d *demo.Dataset) demo.Counts {
	t.Helper()
	ctx := t.Context()
	got := demo.Counts{Rooms: map[string]demo.RoomCount{}, Records: map[string]int{}}
	chat, err := js.Stream(ctx, bus.StreamChatMessages)
	require.NoError(t, err)
	info, err := chat.Info(ctx, jetstream.WithSubjectFilter("chat.messages.*"))
	require.NoError(t, err)
	for _, r := range d.Rooms {
		s, err := bus.ChatSubject(r.GetId())
		require.NoError(t, err)
		got.Rooms[r.GetId()] = demo.RoomCount{Messages: int(info.State.Subjects[s])}
	}
	assert.Len(t, info.State.Subjects, len(d.Rooms), "no subjects besides the rooms'")
	recs, err := js.Stream(ctx, bus.StreamRecords)
	require.NoError(t, err)
	info, err = recs.Info(ctx, jetstream.WithSubjectFilter("records.>"))
	require.NoError(t, err)
	got.Organizations = map[string]map[string]int{}
	for _, org := range demo.Organizations {
		got.Organizations[org] = map[string]int{}
		for res := range d.Records {
			s, err := bus.RecordSubject(res, org)
			require.NoError(t, err)
			n := int(info.State.Subjects[s])
			got.Organizations[org][res] = n
			got.Records[res] += n
		}
	}
	return got
}

// lastSeq is the highest sequence a stream ever assigned; it only moves
// when something is published.
func lastSeq(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	return info.State.LastSeq
}

// readSubject replays a subject the way room-exporter does and returns the
// message ids in stream order.
func readSubject(t *testing.T, js jetstream.JetStream, stream, subject string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(t, err)
	var ids []string
	for len(ids) < n {
		batch, err := c.Fetch(min(500, n-len(ids)), jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		got := 0
		for msg := range batch.Messages() {
			var m sourcev1.ChatMessage
			require.NoError(t, proto.Unmarshal(msg.Data(), &m))
			ids = append(ids, m.GetId())
			got++
		}
		require.NoError(t, batch.Error())
		require.Positive(t, got, "no more messages on %s after %d", subject, len(ids))
	}
	return ids
}

func messageIDs(msgs []*sourcev1.ChatMessage) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.GetId()
	}
	return ids
}

func TestSeed(t *testing.T) {
	d := demo.Generate()
	minio := blobtest.Start(t)
	log := testLogger(t)

	t.Run("twice leaves exactly the data set", func(t *testing.T) {
		nats := bustest.Start(t)
		ctx := t.Context()

		start := time.Now()
		require.NoError(t, demo.Seed(ctx, nats.JS, minio.Store, assetBucket, d, log))
		t.Logf("first seed took %v", time.Since(start))
		assert.Equal(t, d.Counts(), subjectCounts(t, nats.JS, d))
		reg, err := resources.Open(ctx, nats.JS)
		require.NoError(t, err)
		for _, org := range demo.Organizations {
			names, err := reg.Names(ctx, org)
			require.NoError(t, err)
			assert.Equal(t, []string{"customers", "events", "invoices", "messages", "rooms", "subscriptions", "transactions", "users"}, names,
				"every resource with records is registered for %s", org)
		}
		chatSeq, recSeq := lastSeq(t, nats.JS, bus.StreamChatMessages), lastSeq(t, nats.JS, bus.StreamRecords)
		users, err := nats.JS.KeyValue(ctx, bus.BucketUsers)
		require.NoError(t, err)
		revisions := map[string]uint64{}
		for _, u := range d.Users {
			e, err := users.Get(ctx, u.User.GetId())
			require.NoError(t, err)
			revisions[u.User.GetId()] = e.Revision()
		}

		start = time.Now()
		require.NoError(t, demo.Seed(ctx, nats.JS, minio.Store, assetBucket, d, log))
		t.Logf("second seed took %v", time.Since(start))
		assert.Equal(t, d.Counts(), subjectCounts(t, nats.JS, d))
		assert.Equal(t, chatSeq, lastSeq(t, nats.JS, bus.StreamChatMessages), "second seed published chat messages")
		assert.Equal(t, recSeq, lastSeq(t, nats.JS, bus.StreamRecords), "second seed published records")

		ann, ok := d.RoomByName("announcements")
		require.True(t, ok)
		subject, err := bus.ChatSubject(ann.GetId())
		require.NoError(t, err)
		want := messageIDs(d.Messages[ann.GetId()])
		assert.Equal(t, want, readSubject(t, nats.JS, bus.StreamChatMessages, subject, len(want)), "announcements in sending order")

		for _, u := range d.Users {
			e, err := users.Get(ctx, u.User.GetId())
			require.NoError(t, err, u.User.GetUsername())
			assert.Equal(t, revisions[u.User.GetId()], e.Revision(), "second seed rewrote user %s", u.User.GetUsername())
			var got sourcev1.User
			require.NoError(t, proto.Unmarshal(e.Value(), &got))
			assert.True(t, proto.Equal(u.User, &got), "stored user %s", u.User.GetUsername())
			assert.Equal(t, sum(u.AuthToken), got.GetAuthTokenSha256())
			assert.False(t, bytes.Contains(e.Value(), []byte(u.AuthToken)), "clear auth token of %s stored", u.User.GetUsername())
			assert.False(t, bytes.Contains(e.Value(), []byte(u.APIKey)), "clear API key of %s stored", u.User.GetUsername())
		}
		creds, err := nats.JS.KeyValue(ctx, bus.BucketUserIndex)
		require.NoError(t, err)
		for _, u := range d.Users {
			if u.APIKey == "" {
				continue
			}
			key, ok := access.APIKeyEntry(sum(u.APIKey))
			require.True(t, ok)
			e, err := creds.Get(ctx, key)
			require.NoError(t, err, "credential entry of %s", u.User.GetUsername())
			assert.Equal(t, u.User.GetId(), string(e.Value()), "the API key's hash names its user")
			e, err = creds.Get(ctx, access.UsernameEntry(u.User.GetUsername()))
			require.NoError(t, err, "username entry of %s", u.User.GetUsername())
			assert.Equal(t, u.User.GetId(), string(e.Value()), "the username names its user")
		}
		rooms, err := nats.JS.KeyValue(ctx, bus.BucketRooms)
		require.NoError(t, err)
		e, err := rooms.Get(ctx, demo.GeneralRoomID)
		require.NoError(t, err)
		var general sourcev1.Room
		require.NoError(t, proto.Unmarshal(e.Value(), &general))
		assert.Equal(t, "general", general.GetName())
		members, err := nats.JS.KeyValue(ctx, bus.BucketMemberships)
		require.NoError(t, err)
		keys, err := members.ListKeys(ctx)
		require.NoError(t, err)
		var got []string
		for k := range keys.Keys() {
			got = append(got, k)
		}
		var wantKeys []string
		for _, m := range d.Memberships {
			wantKeys = append(wantKeys, m.GetUserId()+"."+m.GetRoomId())
		}
		assert.ElementsMatch(t, wantKeys, got)
		carol, _ := d.User("carol")
		dev, _ := d.RoomByName("dev-team")
		_, err = members.Get(ctx, carol.User.GetId()+"."+dev.GetId())
		assert.ErrorIs(t, err, jetstream.ErrKeyNotFound, "carol is not in dev-team")

		require.NotEmpty(t, d.Avatars)
		for _, a := range append(slices.Clip(d.Assets), d.Avatars...) {
			r, info, err := minio.Store.Open(ctx, assetBucket, a.ObjectKey)
			if !assert.NoError(t, err, a.ObjectKey) {
				continue
			}
			data, err := io.ReadAll(r)
			r.Close()
			require.NoError(t, err)
			assert.True(t, bytes.Equal(a.Data, data), "asset %s differs", a.ObjectKey)
			assert.Equal(t, a.ContentType, info.ContentType)
		}
	})

	t.Run("completes a partially seeded subject", func(t *testing.T) {
		nats := bustest.Start(t)
		ctx := t.Context()
		general := d.Messages[demo.GeneralRoomID]
		subject, err := bus.ChatSubject(demo.GeneralRoomID)
		require.NoError(t, err)
		// A seeder that died halfway: the first half is there, with the
		// dedup ids it used, still inside the duplicate window.
		for _, m := range general[:len(general)/2] {
			data, err := proto.Marshal(m)
			require.NoError(t, err)
			_, err = nats.JS.Publish(ctx, subject, data, jetstream.WithMsgID(m.GetId()))
			require.NoError(t, err)
		}

		require.NoError(t, demo.Seed(ctx, nats.JS, minio.Store, assetBucket, d, log))

		assert.Equal(t, d.Counts(), subjectCounts(t, nats.JS, d))
		assert.Equal(t, messageIDs(general), readSubject(t, nats.JS, bus.StreamChatMessages, subject, len(general)))
	})

	t.Run("replaces a subject purged within the duplicate window", func(t *testing.T) {
		nats := bustest.Start(t)
		ctx := t.Context()
		require.NoError(t, demo.Seed(ctx, nats.JS, minio.Store, assetBucket, d, log))
		stream, err := nats.JS.Stream(ctx, bus.StreamRecords)
		require.NoError(t, err)
		subject, err := bus.RecordSubject(demo.ResourceEvents, demo.Organizations[0])
		require.NoError(t, err)
		// Someone wipes the subject; its dedup ids are still remembered.
		require.NoError(t, stream.Purge(ctx, jetstream.WithPurgeSubject(subject)))

		require.NoError(t, demo.Seed(ctx, nats.JS, minio.Store, assetBucket, d, log))

		assert.Equal(t, d.Counts(), subjectCounts(t, nats.JS, d))
	})

	t.Run("fails on a missing topology", func(t *testing.T) {
		nats := bustest.StartBare(t)
		err := demo.Seed(t.Context(), nats.JS, minio.Store, assetBucket, d, log)
		assert.ErrorIs(t, err, jetstream.ErrBucketNotFound)
	})

	t.Run("fails on an unreachable object store", func(t *testing.T) {
		nats := bustest.Start(t)
		store, err := blob.New(blob.Config{Endpoint: "127.0.0.1:1", AccessKey: "x", SecretKey: "y", Region: "us-east-1"})
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		assert.Error(t, demo.Seed(ctx, nats.JS, store, assetBucket, d, log))
	})
}

func TestWriteFiles(t *testing.T) {
	d := demo.Generate()
	dir := filepath.Join(t.TempDir(), "dev", ".dataport")

	// Twice: the second call overwrites.
	for range 2 {
		require.NoError(t, demo.WriteFiles(dir, d))
	}

	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	for _, name := range []string{demo.CredentialsFile, demo.SeedFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), name)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "no temporary files left behind")

	raw, err := os.ReadFile(filepath.Join(dir, demo.CredentialsFile))
	require.NoError(t, err)
	var creds []map[string]any
	require.NoError(t, json.Unmarshal(raw, &creds))
	require.Len(t, creds, len(d.Users))
	for i, c := range creds {
		u := d.Users[i]
		assert.Equal(t, map[string]any{
			"username":  u.User.GetUsername(),
			"email":     u.User.GetEmail(),
			"userId":    u.User.GetId(),
			"authToken": u.AuthToken,
			"apiKey":    u.APIKey,
			"roles":     toAny(u.User.GetRoles()),
			"name":      u.User.GetName(),
		}, c)
	}
	assert.Equal(t, "admin", creds[0]["username"])

	raw, err = os.ReadFile(filepath.Join(dir, demo.SeedFile))
	require.NoError(t, err)
	var seed map[string]map[string]any
	require.NoError(t, json.Unmarshal(raw, &seed))
	assert.Equal(t, map[string]any{"messages": 4000.0}, seed["rooms"][demo.GeneralRoomID])
	assert.Len(t, seed["rooms"], len(d.Rooms))
	assert.Equal(t, map[string]any{"transactions": 5000.0, "events": 5000.0, "customers": 300.0, "subscriptions": 422.0, "invoices": 1594.0}, seed["records"])
	var counts demo.Counts
	require.NoError(t, json.Unmarshal(raw, &counts))
	assert.Equal(t, d.Counts(), counts)
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
