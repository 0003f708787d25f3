package demo_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"image/png"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/demo"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/recordquery"
)

var marshal = proto.MarshalOptions{Deterministic: true}

// encodeAll lists every part of a data set as named byte strings, so a
// difference points at the room or resource where it happened.
func encodeAll(t *testing.T, d *demo.Dataset) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	add := func(name string, ms ...proto.Message) {
		var b []byte
		for _, m := range ms {
			data, err := marshal.Marshal(m)
			require.NoError(t, err)
			b = append(b, data...)
			b = append(b, 0xff)
		}
		out[name] = append(out[name], b...)
	}
	for _, u := range d.Users {
		add("users", u.User)
		out["users"] = append(out["users"], u.AuthToken+u.APIKey...)
	}
	for _, r := range d.Rooms {
		add("rooms", r)
		for _, m := range d.Messages[r.GetId()] {
			add("messages "+r.GetName()+r.GetId(), m)
		}
	}
	for _, m := range d.Memberships {
		add("memberships", m)
	}
	for res, recs := range d.Records {
		for _, r := range recs {
			add("records "+res, r)
		}
	}
	for _, a := range d.Assets {
		out["assets"] = append(out["assets"], a.ObjectKey+a.ContentType...)
		out["assets"] = append(out["assets"], a.Data...)
	}
	return out
}

func TestGenerateIsDeterministic(t *testing.T) {
	a, b := encodeAll(t, demo.Generate()), encodeAll(t, demo.Generate())
	require.Equal(t, slices.Sorted(maps.Keys(a)), slices.Sorted(maps.Keys(b)))
	for name, data := range a {
		assert.True(t, bytes.Equal(data, b[name]), "%s differs between two Generate calls", name)
	}
}

var rcID = regexp.MustCompile(`^[A-Za-z0-9]{17}$`)

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestGenerateInvariants(t *testing.T) {
	d := demo.Generate()
	users := map[string]*sourcev1.User{}
	for _, u := range d.Users {
		users[u.User.GetUsername()] = u.User
	}
	member := map[string]bool{} // "<username>.<roomName or id>"
	for _, m := range d.Memberships {
		for un, u := range users {
			if u.GetId() == m.GetUserId() {
				member[un+"."+m.GetRoomId()] = true
			}
		}
	}
	room := func(name string) *sourcev1.Room {
		t.Helper()
		r, ok := d.RoomByName(name)
		require.True(t, ok, "room %s", name)
		return r
	}

	t.Run("users", func(t *testing.T) {
		require.GreaterOrEqual(t, len(d.Users), 3)
		admins := 0
		for _, u := range d.Users {
			assert.Regexp(t, rcID, u.User.GetId())
			assert.Len(t, u.AuthToken, 43)
			assert.Len(t, u.APIKey, 32)
			assert.Equal(t, sum(u.AuthToken), u.User.GetAuthTokenSha256(), "stored token hash of %s", u.User.GetUsername())
			assert.Equal(t, sum(u.APIKey), u.User.GetApiKeySha256(), "stored API key hash of %s", u.User.GetUsername())
			assert.Equal(t, u.User.GetUsername()+"@dataport.local", u.User.GetEmail())
			assert.NotEmpty(t, u.User.GetName())
			if slices.Contains(u.User.GetRoles(), "admin") {
				admins++
			}
		}
		assert.Equal(t, 1, admins)
		assert.Equal(t, []string{"admin", "user"}, users["admin"].GetRoles())
		assert.Equal(t, []string{"user"}, users["carol"].GetRoles())
	})

	t.Run("rooms", func(t *testing.T) {
		g, ok := d.Room(demo.GeneralRoomID)
		require.True(t, ok)
		assert.Equal(t, "general", g.GetName())
		assert.Equal(t, sourcev1.RoomType_ROOM_TYPE_CHANNEL, g.GetType())
		assert.NotEmpty(t, g.GetTopic())
		assert.Equal(t, sourcev1.RoomType_ROOM_TYPE_CHANNEL, room("random").GetType())
		assert.Equal(t, sourcev1.RoomType_ROOM_TYPE_PRIVATE, room("dev-team").GetType())
		assert.Equal(t, sourcev1.RoomType_ROOM_TYPE_CHANNEL, room("announcements").GetType())
		for _, pair := range [][2]string{{"alice", "bob"}, {"admin", "carol"}} {
			ids := []string{users[pair[0]].GetId(), users[pair[1]].GetId()}
			slices.Sort(ids)
			dm, ok := d.Room(ids[0] + ids[1])
			if assert.True(t, ok, "direct room %v", pair) {
				assert.Equal(t, sourcev1.RoomType_ROOM_TYPE_DIRECT, dm.GetType())
				assert.Empty(t, dm.GetName())
				assert.ElementsMatch(t, pair[:], dm.GetUsernames())
				assert.True(t, member[pair[0]+"."+dm.GetId()] && member[pair[1]+"."+dm.GetId()], "members of %v", pair)
			}
		}
	})

	t.Run("memberships", func(t *testing.T) {
		for _, name := range []string{"general", "random", "announcements"} {
			for un := range users {
				assert.True(t, member[un+"."+room(name).GetId()], "%s in %s", un, name)
			}
		}
		for _, un := range []string{"admin", "alice", "bob"} {
			assert.True(t, member[un+"."+room("dev-team").GetId()], "%s in dev-team", un)
		}
		assert.False(t, member["carol."+room("dev-team").GetId()], "carol must not be a member of dev-team")
	})

	t.Run("messages", func(t *testing.T) {
		total := 0
		seen := map[string]bool{}
		var edited, threads, system, attachments int
		systemTypes := map[string]bool{}
		texts := map[string]bool{}
		for _, r := range d.Rooms {
			msgs := d.Messages[r.GetId()]
			require.NotEmpty(t, msgs, "room %s", r.GetId())
			total += len(msgs)
			byID := map[string]int{}
			replies := map[string]int{}
			for i, m := range msgs {
				assert.Regexp(t, rcID, m.GetId())
				assert.False(t, seen[m.GetId()], "message id %s used twice", m.GetId())
				seen[m.GetId()] = true
				assert.Equal(t, r.GetId(), m.GetRoomId())
				ts := m.GetTs().AsTime()
				assert.False(t, ts.Before(demo.BaseTime) || !ts.Before(demo.BaseTime.Add(demo.Span)), "ts %v out of range", ts)
				if i > 0 {
					assert.True(t, ts.After(msgs[i-1].GetTs().AsTime()), "%s: ts not strictly increasing at %d", r.GetId(), i)
				}
				if m.GetSystemType() == "" || m.GetSystemType() == "uj" || m.GetSystemType() == "ul" {
					// Authors (and people joining or leaving) are members;
					// only au/ru name an outsider in their text.
					assert.True(t, member[m.GetUser().GetUsername()+"."+r.GetId()], "%s wrote in %s", m.GetUser().GetUsername(), r.GetId())
				}
				if tid := m.GetThreadId(); tid != "" {
					threads++
					j, ok := byID[tid]
					if assert.True(t, ok, "thread root %s of %s is not an earlier message of %s", tid, m.GetId(), r.GetId()) {
						assert.Empty(t, msgs[j].GetThreadId(), "replies do not nest")
						assert.Empty(t, msgs[j].GetSystemType())
					}
					replies[tid]++
				}
				if m.GetEditedAt() != nil {
					edited++
					assert.NotNil(t, m.GetEditedBy())
					assert.True(t, m.GetEditedAt().AsTime().After(ts))
				}
				if m.GetSystemType() != "" {
					system++
					systemTypes[m.GetSystemType()] = true
				}
				if len(m.GetAttachments()) > 0 {
					attachments++
				}
				texts[m.GetText()] = true
				byID[m.GetId()] = i
			}
			for _, m := range msgs {
				assert.Equal(t, uint32(replies[m.GetId()]), m.GetThreadCount(), "thread_count of %s", m.GetId())
				if replies[m.GetId()] > 0 {
					var last *sourcev1.ChatMessage
					for _, x := range msgs {
						if x.GetThreadId() == m.GetId() {
							last = x
						}
					}
					assert.True(t, proto.Equal(last.GetTs(), m.GetThreadLastMessage()), "thread_last_message of %s", m.GetId())
				} else {
					assert.Nil(t, m.GetThreadLastMessage())
				}
			}
		}
		assert.GreaterOrEqual(t, total, 5000)
		// Rough shares: about 5 % edited, 8 % replies, 2 % attachments.
		assert.InDelta(t, 0.05, float64(edited)/float64(total), 0.02, "edited share")
		assert.InDelta(t, 0.08, float64(threads)/float64(total), 0.03, "thread reply share")
		assert.InDelta(t, 0.02, float64(attachments)/float64(total), 0.01, "attachment share")
		assert.Positive(t, system)
		for _, typ := range []string{"uj", "ul", "au", "ru", "room_changed_topic"} {
			assert.True(t, systemTypes[typ], "system type %s present", typ)
		}
		for _, tricky := range []string{"<script>alert(1)</script>", "<img src=x onerror=alert(1)>"} {
			assert.True(t, texts[tricky], "tricky text %q present", tricky)
		}
		assert.True(t, slices.ContainsFunc(slices.Collect(maps.Keys(texts)), func(s string) bool { return strings.Contains(s, "`") }), "inline code present")
	})

	t.Run("joins", func(t *testing.T) {
		for _, r := range d.Rooms {
			if r.GetType() == sourcev1.RoomType_ROOM_TYPE_DIRECT {
				continue
			}
			joined := map[string]bool{}
			for _, m := range d.Messages[r.GetId()] {
				un := m.GetUser().GetUsername()
				switch m.GetSystemType() {
				case "uj":
					joined[un] = true
				case "ul":
					joined[un] = false
				}
				if m.GetSystemType() == "" {
					assert.True(t, joined[un], "%s wrote in %s before joining", un, r.GetName())
				}
			}
		}
	})

	t.Run("assets", func(t *testing.T) {
		assets := map[string]demo.Asset{}
		for _, a := range d.Assets {
			assets[a.ObjectKey] = a
		}
		require.NotEmpty(t, assets)
		n := 0
		for _, msgs := range d.Messages {
			for _, m := range msgs {
				for _, at := range m.GetAttachments() {
					n++
					a, ok := assets[at.GetObjectKey()]
					if !assert.True(t, ok, "asset %s", at.GetObjectKey()) {
						continue
					}
					assert.Equal(t, "assets/"+at.GetFileId()+"/"+at.GetName(), at.GetObjectKey())
					assert.Equal(t, uint64(len(a.Data)), at.GetSize())
					assert.Equal(t, a.ContentType, at.GetContentType())
					assert.NotEmpty(t, at.GetTitle())
					assert.Greater(t, len(a.Data), 512, "a few KB")
					assert.Less(t, len(a.Data), 32<<10, "a few KB")
				}
			}
		}
		assert.Equal(t, len(d.Assets), n)
		types := map[string]bool{}
		for _, a := range d.Assets {
			types[a.ContentType] = true
			switch a.ContentType {
			case "image/png":
				assert.True(t, bytes.HasPrefix(a.Data, []byte("\x89PNG\r\n\x1a\n")), a.ObjectKey)
			case "application/pdf":
				assert.True(t, bytes.HasPrefix(a.Data, []byte("%PDF-")), a.ObjectKey)
			}
		}
		assert.True(t, types["image/png"] && types["application/pdf"] && types["text/plain"], "types %v", types)
	})

	t.Run("records", func(t *testing.T) {
		assert.Equal(t, map[string]int{"transactions": 5000, "events": 5000, "customers": 300, "subscriptions": 422, "invoices": 1594}, d.Counts().Records)
		str := func(r *sourcev1.Record, k string) string { return r.GetFields().GetFields()[k].GetStringValue() }
		isNum := func(r *sourcev1.Record, k string) bool {
			_, ok := r.GetFields().GetFields()[k].GetKind().(*structpb.Value_NumberValue)
			return ok
		}
		for res, keys := range map[string][]string{
			"transactions": {"id", "customerId", "amount", "currency", "status", "type", "gateway", "description", "createdTime"},
			"events": {"id", "eventType", "appId", "deviceId", "country", "platform", "revenue", "createdTime",
				"sdkKey", "accountId", "adId", "campaignId", "countryId", "projectId"},
		} {
			recs := d.Records[res]
			for i, r := range recs {
				assert.Equal(t, res, r.GetResource())
				want := keys
				switch str(r, "eventType") {
				case "payment":
					want = append(slices.Clone(keys), "isVerified")
				case "custom":
					want = append(slices.Clone(keys), "eventName")
				}
				assert.ElementsMatch(t, want, slices.Collect(maps.Keys(r.GetFields().GetFields())), "fields of %s", r.GetId())
				assert.Equal(t, r.GetId(), str(r, "id"))
				assert.Equal(t, r.GetCreatedTime().AsTime().Format("2006-01-02T15:04:05Z07:00"), str(r, "createdTime"))
				if i > 0 {
					assert.False(t, r.GetCreatedTime().AsTime().Before(recs[i-1].GetCreatedTime().AsTime()), "%s in created_time order", res)
				}
				if res == "transactions" {
					assert.True(t, isNum(r, "amount"))
					assert.Contains(t, []string{"approved", "declined", "refunded", "pending"}, str(r, "status"))
					assert.Contains(t, []string{"sale", "refund", "authorize"}, str(r, "type"))
				} else {
					assert.True(t, isNum(r, "revenue") && isNum(r, "appId"))
					// myTracker's dimensions: every country and app has its id.
					for _, k := range []string{"accountId", "adId", "campaignId", "countryId", "projectId"} {
						assert.True(t, isNum(r, k) && r.GetFields().GetFields()[k].GetNumberValue() > 0, "%s of %s", k, r.GetId())
					}
					assert.Len(t, str(r, "sdkKey"), 20)
					assert.Contains(t, []string{"install", "launch", "payment", "custom"}, str(r, "eventType"))
				}
			}
			first, last := recs[0].GetCreatedTime().AsTime(), recs[len(recs)-1].GetCreatedTime().AsTime()
			assert.Greater(t, last.Sub(first).Hours(), 24*150.0, "%s spread over about six months", res)
		}
	})

	t.Run("billing records", func(t *testing.T) {
		str := func(r *sourcev1.Record, k string) string { return r.GetFields().GetFields()[k].GetStringValue() }
		defs := map[string]recordquery.Resource{}
		for _, def := range d.Resources {
			require.NoError(t, def.Validate())
			defs[def.Name] = def
		}
		require.ElementsMatch(t, []string{"customers", "subscriptions", "invoices"}, slices.Collect(maps.Keys(defs)))
		orgOf := map[string]string{}
		for _, c := range d.Records["customers"] {
			orgOf[c.GetId()] = c.GetOrganizationId()
		}
		subs := map[string]*sourcev1.Record{}
		for _, s := range d.Records["subscriptions"] {
			subs[s.GetId()] = s
		}
		txnCustomers := map[string]bool{}
		for _, tx := range d.Records["transactions"] {
			txnCustomers[str(tx, "customerId")] = true
		}
		for txc := range txnCustomers {
			assert.Contains(t, orgOf, txc, "the customer a transaction names exists")
		}
		for res, def := range defs {
			recs := d.Records[res]
			assert.NotEmpty(t, recs, res)
			for i, r := range recs {
				assert.Equal(t, res, r.GetResource())
				assert.Equal(t, r.GetId(), str(r, "id"))
				assert.Contains(t, demo.Organizations, r.GetOrganizationId())
				for k := range r.GetFields().GetFields() {
					assert.Contains(t, def.Columns(), k, "%s of %s is a registered field", k, res)
				}
				if i > 0 {
					assert.False(t, r.GetCreatedTime().AsTime().Before(recs[i-1].GetCreatedTime().AsTime()), "%s in created_time order", res)
				}
				if res == "customers" {
					continue
				}
				assert.Equal(t, r.GetOrganizationId(), orgOf[str(r, "customerId")], "%s %s belongs to its customer's organization", res, r.GetId())
				if res == "invoices" {
					sub := subs[str(r, "subscriptionId")]
					require.NotNil(t, sub, "invoice %s names a subscription", r.GetId())
					assert.Equal(t, str(sub, "customerId"), str(r, "customerId"))
					assert.Contains(t, []string{"paid", "unpaid", "past-due", "voided", "draft", "refunded", "partially-paid"}, str(r, "status"))
				}
			}
		}
	})
}

// TestAvatars: the demo users but carol have an avatar, a PNG under the
// key the host contract names, so data downloads with and without one
// are both in the demo.
func TestAvatars(t *testing.T) {
	d := demo.Generate()
	got := map[string]demo.Asset{}
	for _, a := range d.Avatars {
		got[a.ObjectKey] = a
	}
	for _, u := range d.Users {
		key, ok := objects.AvatarKey(u.User.GetUsername())
		require.True(t, ok)
		a, has := got[key]
		if u.User.GetUsername() == "carol" {
			assert.False(t, has, "carol has no avatar")
			continue
		}
		if !assert.True(t, has, "%s has an avatar", u.User.GetUsername()) {
			continue
		}
		assert.Equal(t, "image/png", a.ContentType)
		img, err := png.Decode(bytes.NewReader(a.Data))
		require.NoError(t, err)
		assert.Equal(t, 64, img.Bounds().Dx())
	}
	assert.Len(t, d.Avatars, len(d.Users)-1)
	assert.Equal(t, d.Avatars, demo.Generate().Avatars, "deterministic")
}
