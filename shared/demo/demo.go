// Package demo is Dataport's deterministic demo data set and its seeder: the
// users, rooms, memberships, chat histories, uploaded files and business
// records a host platform would publish on the bus.
//
// Generate returns the same data on every run (a fixed PCG seed and a fixed
// base time, never the clock), so local runs, end-to-end tests and bug
// reports all talk about the same message ids and counts. Seed writes the
// data set to NATS and MinIO idempotently; WriteFiles records the clear-text
// credentials and the expected counts for people and scripts.
package demo

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/recordquery"
)

// BaseTime is when the demo history starts. Message and record times fall
// between BaseTime and BaseTime+Span.
var BaseTime = time.Date(2026, time.May, 1, 0, 0, 0, 0, time.UTC)

// Span is how long the demo history lasts (about six months).
const Span = 183 * 24 * time.Hour

// Record resources.
const (
	ResourceTransactions = "transactions"
	ResourceEvents       = "events"
)

// GeneralRoomID is the id of the default channel, as in Rocket.Chat.
const GeneralRoomID = "GENERAL"

// The seed of the generator. Changing it (or the order of draws) changes
// every id in the data set, so treat it as part of the data's contract.
const (
	seedHi = 0x64617461706f7274 // "dataport"
	seedLo = 20260501
)

// Dataset is the whole deterministic demo data set.
type Dataset struct {
	Users       []DemoUser
	Rooms       []*sourcev1.Room
	Memberships []*sourcev1.Membership
	// OrgMemberships make users members of the organizations that own
	// the records.
	OrgMemberships []*sourcev1.OrganizationMembership
	// Messages holds each room's history by room id, in ts order.
	Messages map[string][]*sourcev1.ChatMessage
	// Records holds each resource's records ("transactions", "events",
	// "customers", "subscriptions", "invoices") in created_time order;
	// each belongs to one of Organizations.
	Records map[string][]*sourcev1.Record
	// Resources are the definitions Seed registers besides the built-in
	// ones (customers, subscriptions, invoices), so the records above are
	// exportable.
	Resources []recordquery.Resource
	// Assets are the files attached to messages, in order of appearance.
	Assets []Asset
	// Avatars are the users' avatars (PNG) under objects.AvatarKey in the
	// assets bucket; carol has none.
	Avatars []Asset
}

// DemoUser is a user together with its clear-text credentials. Only
// WriteFiles uses the clear text; the User carries SHA-256 hashes.
type DemoUser struct {
	User      *sourcev1.User
	AuthToken string
	APIKey    string
}

// Asset is one uploaded file of the data set.
type Asset struct {
	ObjectKey   string
	ContentType string
	Data        []byte
}

// Counts are the expected sizes of the seeded streams; seed.json holds them.
type Counts struct {
	Rooms   map[string]RoomCount `json:"rooms"`
	Records map[string]int       `json:"records"`
	// Organizations holds each organization's record count per resource.
	Organizations map[string]map[string]int `json:"organizations"`
}

// RoomCount is the number of messages of one room's history.
type RoomCount struct {
	Messages int `json:"messages"`
}

// Counts returns how many messages each room and how many records each
// resource has.
func (d *Dataset) Counts() Counts {
	c := Counts{Rooms: make(map[string]RoomCount, len(d.Messages)), Records: make(map[string]int, len(d.Records))}
	for id, msgs := range d.Messages {
		c.Rooms[id] = RoomCount{Messages: len(msgs)}
	}
	c.Organizations = make(map[string]map[string]int, len(Organizations))
	for _, org := range Organizations {
		c.Organizations[org] = make(map[string]int, len(d.Records))
	}
	for res, recs := range d.Records {
		c.Records[res] = len(recs)
		for _, r := range recs {
			c.Organizations[r.GetOrganizationId()][res]++
		}
	}
	return c
}

// User returns the demo user with the given username.
func (d *Dataset) User(username string) (DemoUser, bool) {
	for _, u := range d.Users {
		if u.User.GetUsername() == username {
			return u, true
		}
	}
	return DemoUser{}, false
}

// Room returns the room with the given id.
func (d *Dataset) Room(id string) (*sourcev1.Room, bool) {
	for _, r := range d.Rooms {
		if r.GetId() == id {
			return r, true
		}
	}
	return nil, false
}

// RoomByName returns the (non-direct) room with the given name.
func (d *Dataset) RoomByName(name string) (*sourcev1.Room, bool) {
	for _, r := range d.Rooms {
		if name != "" && r.GetName() == name {
			return r, true
		}
	}
	return nil, false
}

// Organizations are the tenants owning the demo records.
var Organizations = []string{"acme", "globex"}

// orgMemberSpecs: admin and alice work for acme, carol for globex, bob for
// both; alice and carol administer their organization's exports, and the
// global admin is a plain member of acme, as a workspace admin need not
// administer a tenant.
var orgMemberSpecs = []struct {
	username, org string
	roles         []string
	isDefault     bool
}{
	{"admin", "acme", nil, true},
	{"alice", "acme", []string{"admin"}, true},
	{"bob", "acme", nil, true},
	{"bob", "globex", nil, false},
	{"carol", "globex", []string{"admin"}, true},
}

// orgOf assigns the i-th record of a resource to an organization without a
// draw from the generator, so ids stay as they were: three of every four
// go to acme.
func orgOf(i int) string {
	if i%4 == 3 {
		return Organizations[1]
	}
	return Organizations[0]
}

// userSpec describes one demo user before ids are drawn.
type userSpec struct {
	username, name string
	roles          []string
}

var userSpecs = []userSpec{
	{"admin", "Admin Example", []string{"admin", "user"}},
	{"alice", "Alice Example", []string{"user"}},
	{"bob", "Bob Example", []string{"user"}},
	{"carol", "Carol Example", []string{"user"}},
}

// roomSpec describes one room's history before ids are drawn.
type roomSpec struct {
	name     string // empty for direct rooms
	typ      sourcev1.RoomType
	topic    string
	members  []string // usernames; the first is the owner
	messages int
	// weights biases authorship by member index (nil: uniform).
	weights []int
	// kind selects the flavour of texts.
	kind textKind
}

var roomSpecs = []roomSpec{
	{name: "general", typ: sourcev1.RoomType_ROOM_TYPE_CHANNEL, topic: "Company-wide chatter: say hi, ask anything",
		members: []string{"admin", "alice", "bob", "carol"}, messages: 4000, kind: textChat},
	{name: "random", typ: sourcev1.RoomType_ROOM_TYPE_CHANNEL, topic: "Off-topic, memes and lunch plans 🍕",
		members: []string{"admin", "alice", "bob", "carol"}, messages: 1500, kind: textChat},
	{name: "dev-team", typ: sourcev1.RoomType_ROOM_TYPE_PRIVATE, topic: "Engineering: builds, deploys, incidents",
		members: []string{"admin", "alice", "bob"}, messages: 1200, kind: textDev},
	{name: "announcements", typ: sourcev1.RoomType_ROOM_TYPE_CHANNEL, topic: "Official news <b>only</b> — please keep replies in threads",
		members: []string{"admin", "alice", "bob", "carol"}, messages: 200, weights: []int{17, 1, 1, 1}, kind: textAnnouncement},
	{typ: sourcev1.RoomType_ROOM_TYPE_DIRECT, members: []string{"alice", "bob"}, messages: 300, kind: textChat},
	{typ: sourcev1.RoomType_ROOM_TYPE_DIRECT, members: []string{"admin", "carol"}, messages: 300, kind: textChat},
}

// Generate builds the demo data set. Every call returns equal data.
func Generate() *Dataset {
	g := &generator{
		r:    rand.New(rand.NewPCG(seedHi, seedLo)),
		ids:  make(map[string]bool),
		byUN: make(map[string]*sourcev1.User),
	}
	d := &Dataset{
		Messages: make(map[string][]*sourcev1.ChatMessage),
		Records:  make(map[string][]*sourcev1.Record),
	}
	for i, s := range userSpecs {
		token := g.token(43, tokenAlphabet)
		key := g.token(32, alnum)
		u := &sourcev1.User{
			Id:              g.id(),
			Username:        s.username,
			Name:            s.name,
			Email:           s.username + "@dataport.local",
			Roles:           slices.Clone(s.roles),
			AuthTokenSha256: sha256Hex(token),
			ApiKeySha256:    sha256Hex(key),
			// Accounts exist a little before the history starts.
			CreatedAt: timestamppb.New(BaseTime.Add(-time.Duration(len(userSpecs)-i) * 24 * time.Hour)),
		}
		g.byUN[s.username] = u
		d.Users = append(d.Users, DemoUser{User: u, AuthToken: token, APIKey: key})
	}
	for _, s := range roomSpecs {
		room, members, msgs := g.room(s, &d.Assets)
		d.Rooms = append(d.Rooms, room)
		d.Memberships = append(d.Memberships, members...)
		d.Messages[room.GetId()] = msgs
	}
	txns, customerIDs := g.transactions(5000)
	d.Records[ResourceTransactions] = txns
	d.Records[ResourceEvents] = g.events(5000)
	for _, recs := range d.Records {
		for i, r := range recs {
			r.OrganizationId = orgOf(i)
		}
	}
	// The billing resources draw from their own generator (and set their
	// own organizations), after everything else.
	maps.Copy(d.Records, billing(customerIDs))
	d.Resources = BillingResources()
	d.Avatars = avatars(d.Users)
	for _, m := range orgMemberSpecs {
		d.OrgMemberships = append(d.OrgMemberships, &sourcev1.OrganizationMembership{
			UserId: g.byUN[m.username].GetId(), OrganizationId: m.org, Roles: slices.Clone(m.roles),
			Default: m.isDefault, JoinedAt: timestamppb.New(BaseTime),
		})
	}
	return d
}

const (
	alnum         = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	tokenAlphabet = alnum + "-_"
	hexDigits     = "0123456789abcdef"
)

// generator draws everything from one PRNG in a fixed order.
type generator struct {
	r    *rand.Rand
	ids  map[string]bool
	byUN map[string]*sourcev1.User
}

func (g *generator) token(n int, alphabet string) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[g.r.IntN(len(alphabet))]
	}
	return string(b)
}

// id returns a fresh Rocket.Chat-style id: 17 alphanumerics, unique within
// the data set.
func (g *generator) id() string {
	for {
		id := g.token(17, alnum)
		if !g.ids[id] {
			g.ids[id] = true
			return id
		}
	}
}

// pick returns one of xs.
func pick[T any](g *generator, xs []T) T { return xs[g.r.IntN(len(xs))] }

// chance reports true with probability p.
func (g *generator) chance(p float64) bool { return g.r.Float64() < p }

// weighted returns an index into weights, drawn in proportion to them.
func (g *generator) weighted(weights []int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := g.r.IntN(total)
	for i, w := range weights {
		if n < w {
			return i
		}
		n -= w
	}
	return len(weights) - 1
}

// times returns n strictly increasing instants in [from, to), truncated to
// milliseconds (the resolution of the JSON renderings), denser on weekday
// working hours as real chat is.
func (g *generator) times(n int, from, to time.Time) []time.Time {
	span := to.Sub(from)
	out := make([]time.Time, 0, n)
	for len(out) < n {
		t := from.Add(time.Duration(g.r.Int64N(int64(span))))
		if g.r.Float64() < activity(t) {
			out = append(out, t.Truncate(time.Millisecond))
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(out); i++ {
		if !out[i].After(out[i-1]) {
			out[i] = out[i-1].Add(time.Millisecond)
		}
	}
	return out
}

// activity is the relative chance that someone writes at t (UTC).
func activity(t time.Time) float64 {
	h := t.Hour()
	switch {
	case t.Weekday() == time.Saturday || t.Weekday() == time.Sunday:
		return 0.15
	case h >= 8 && h < 18:
		return 1
	case h >= 18 && h < 23:
		return 0.35
	default:
		return 0.05
	}
}

// uniformTimes returns n sorted instants in [from, to) truncated to seconds,
// for records, which arrive around the clock.
func (g *generator) uniformTimes(n int, from, to time.Time) []time.Time {
	span := to.Sub(from)
	out := make([]time.Time, n)
	for i := range out {
		out[i] = from.Add(time.Duration(g.r.Int64N(int64(span)))).Truncate(time.Second)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

func ref(u *sourcev1.User) *sourcev1.UserRef {
	return &sourcev1.UserRef{Id: u.GetId(), Username: u.GetUsername(), Name: u.GetName()}
}

func directRoomID(a, b *sourcev1.User) string {
	ids := []string{a.GetId(), b.GetId()}
	slices.Sort(ids)
	return ids[0] + ids[1]
}

// room builds one room, its memberships and its history.
func (g *generator) room(s roomSpec, assets *[]Asset) (*sourcev1.Room, []*sourcev1.Membership, []*sourcev1.ChatMessage) {
	members := make([]*sourcev1.User, len(s.members))
	for i, un := range s.members {
		members[i] = g.byUN[un]
	}
	room := &sourcev1.Room{Name: s.name, Type: s.typ, Topic: s.topic, CreatedAt: timestamppb.New(BaseTime)}
	switch {
	case s.typ == sourcev1.RoomType_ROOM_TYPE_DIRECT:
		room.Id = directRoomID(members[0], members[1])
		room.Usernames = slices.Sorted(slices.Values(s.members))
	case s.name == "general":
		room.Id = GeneralRoomID
	default:
		room.Id = g.id()
	}
	h := &history{g: g, room: room, members: members, spec: s, assets: assets}
	msgs, joined := h.build()

	var ms []*sourcev1.Membership
	for i, u := range members {
		m := &sourcev1.Membership{UserId: u.GetId(), RoomId: room.GetId(), JoinedAt: timestamppb.New(joined[i])}
		if i == 0 && s.typ != sourcev1.RoomType_ROOM_TYPE_DIRECT {
			m.Roles = []string{"owner"}
		}
		ms = append(ms, m)
	}
	return room, ms, msgs
}

// Rocket.Chat system message types used in the demo.
const (
	sysUserJoined   = "uj"
	sysUserLeft     = "ul"
	sysUserAdded    = "au"
	sysUserRemoved  = "ru"
	sysTopicChanged = "room_changed_topic"
)

// event is a system message planned at a slot of a room's history.
type event struct {
	typ    string
	actor  int    // member index, or -1 for an outsider given by user
	user   string // username of an outsider (for au/ru of a non-member)
	text   string
	member int // member index the event is about (joins/leaves), or -1
}

// history builds one room's messages.
type history struct {
	g       *generator
	room    *sourcev1.Room
	members []*sourcev1.User
	spec    roomSpec
	assets  *[]Asset
}

// plan places the system messages: each member joins at their first
// appearance (the owner first, everyone within the first few percent of
// the history), plus a few room events per room so exports meet more than
// one system type.
func (h *history) plan(n int) map[int]event {
	g := h.g
	ev := make(map[int]event)
	if h.spec.typ == sourcev1.RoomType_ROOM_TYPE_DIRECT {
		return ev
	}
	ev[0] = event{typ: sysUserJoined, actor: 0, member: 0}
	window := max(n/100, 4*len(h.members))
	for i := 1; i < len(h.members); i++ {
		for {
			slot := 1 + g.r.IntN(window)
			if _, taken := ev[slot]; !taken {
				ev[slot] = event{typ: sysUserJoined, actor: i, member: i}
				break
			}
		}
	}
	free := func(lo, hi int) int {
		for {
			slot := lo + g.r.IntN(hi-lo)
			if _, taken := ev[slot]; !taken {
				return slot
			}
		}
	}
	switch h.spec.name {
	case "general", "random":
		// The owner sets the topic early; carol leaves once and comes back.
		ev[free(window+1, window+20)] = event{typ: sysTopicChanged, actor: 0, member: -1, text: h.spec.topic}
		if h.spec.name == "random" {
			carol := slices.IndexFunc(h.members, func(u *sourcev1.User) bool { return u.GetUsername() == "carol" })
			left := free(n*2/5, n/2)
			ev[left] = event{typ: sysUserLeft, actor: carol, member: carol}
			ev[free(left+20, left+60)] = event{typ: sysUserJoined, actor: carol, member: carol}
		}
	case "dev-team":
		// carol was added by mistake and removed again: she appears in the
		// history but is not a member, which authorization must respect.
		added := free(n/3, n/2)
		ev[added] = event{typ: sysUserAdded, actor: 0, member: -1, user: "carol", text: "carol"}
		ev[added+1] = event{typ: sysUserRemoved, actor: 0, member: -1, user: "carol", text: "carol"}
		ev[free(window+1, window+20)] = event{typ: sysTopicChanged, actor: 0, member: -1, text: h.spec.topic}
	}
	return ev
}

func (h *history) build() ([]*sourcev1.ChatMessage, []time.Time) {
	g := h.g
	n := h.spec.messages
	// Histories start at different moments of the first day.
	from := BaseTime.Add(time.Duration(8*60+g.r.IntN(4*60)) * time.Minute)
	ts := g.times(n, from, BaseTime.Add(Span))
	events := h.plan(n)

	joinedAt := make([]time.Time, len(h.members))
	present := make([]bool, len(h.members))
	if h.spec.typ == sourcev1.RoomType_ROOM_TYPE_DIRECT {
		for i := range present {
			present[i] = true
			joinedAt[i] = ts[0]
		}
	}
	msgs := make([]*sourcev1.ChatMessage, 0, n)
	// roots are recent messages a reply may attach to.
	var roots []int
	for i := range n {
		m := &sourcev1.ChatMessage{Id: g.id(), RoomId: h.room.GetId(), Ts: timestamppb.New(ts[i])}
		if e, ok := events[i]; ok {
			m.SystemType = e.typ
			m.User = ref(h.members[e.actor])
			switch e.typ {
			case sysUserJoined, sysUserLeft:
				// Rocket.Chat stores the username as the text of joins and leaves.
				m.Text = h.members[e.member].GetUsername()
				present[e.member] = e.typ == sysUserJoined
				if e.typ == sysUserJoined && joinedAt[e.member].IsZero() {
					joinedAt[e.member] = ts[i]
				}
			default:
				m.Text = e.text
			}
			msgs = append(msgs, m)
			continue
		}
		author := h.author(present)
		m.User = ref(h.members[author])
		m.Text = g.text(h.spec.kind, h.members, author)

		if len(roots) > 0 && g.chance(0.08) {
			root := msgs[roots[g.r.IntN(len(roots))]]
			m.ThreadId = root.GetId()
			root.ThreadCount++
			root.ThreadLastMessage = m.GetTs()
		}
		if g.chance(0.05) {
			editor := m.GetUser()
			// Now and then the owner fixes someone else's message.
			if h.spec.typ != sourcev1.RoomType_ROOM_TYPE_DIRECT && author != 0 && present[0] && g.chance(0.1) {
				editor = ref(h.members[0])
			}
			m.EditedBy = editor
			m.EditedAt = timestamppb.New(ts[i].Add(time.Duration(30+g.r.IntN(3*3600)) * time.Second))
		}
		if g.chance(0.02) {
			a := g.asset()
			*h.assets = append(*h.assets, a.Asset)
			m.Attachments = []*sourcev1.Attachment{a.attachment}
			if g.chance(0.5) {
				m.Text = ""
			}
		}
		msgs = append(msgs, m)
		if m.GetThreadId() == "" {
			roots = append(roots, len(msgs)-1)
			if len(roots) > 40 {
				roots = roots[1:]
			}
		}
	}
	for i := range joinedAt {
		if joinedAt[i].IsZero() {
			// Cannot happen with the plans above; keep memberships valid anyway.
			joinedAt[i] = ts[0]
		}
	}
	return msgs, joinedAt
}

// author picks a member who is in the room right now.
func (h *history) author(present []bool) int {
	g := h.g
	weights := make([]int, len(h.members))
	for i := range weights {
		if !present[i] {
			continue
		}
		weights[i] = 1
		if h.spec.weights != nil {
			weights[i] = h.spec.weights[i]
		}
	}
	if slices.Max(weights) == 0 {
		return 0
	}
	return g.weighted(weights)
}

// String makes a Dataset printable without dumping thousands of messages.
func (d *Dataset) String() string {
	n := 0
	for _, m := range d.Messages {
		n += len(m)
	}
	r := 0
	for _, recs := range d.Records {
		r += len(recs)
	}
	return fmt.Sprintf("demo data set: %d users, %d rooms, %d messages, %d records, %d assets", len(d.Users), len(d.Rooms), n, r, len(d.Assets))
}
