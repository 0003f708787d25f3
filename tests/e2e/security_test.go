package e2e

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/demo"
)

// rebilly sends a Rebilly request with who's API key and decodes a JSON
// answer into out (when not nil).
func rebilly(t *testing.T, s *stack, who credential, method, path, body string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.gatewayURL+path, rd)
	require.NoError(t, err)
	req.Header.Set("REB-APIKEY", who.APIKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := noRedirect.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil && resp.StatusCode < 300 {
		require.NoError(t, json.Unmarshal(b, out), "%s %s (%d): %s", method, path, resp.StatusCode, b)
	}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusUnprocessableEntity {
		t.Logf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// noRedirect shows a redirect instead of following it.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

type rebillyExport struct {
	ID     string `json:"id"`
	Format string `json:"format"`
	Status string `json:"status"`
	Reason string `json:"reason"`
	UserID string `json:"userId"`
}

// rebillyCreate creates a data export at path and returns its id.
func rebillyCreate(t *testing.T, s *stack, who credential, path, body string) string {
	t.Helper()
	var created rebillyExport
	status := rebilly(t, s, who, http.MethodPost, path, body, &created)
	require.Equal(t, http.StatusCreated, status, "create at %s", path)
	require.NotEmpty(t, created.ID)
	return created.ID
}

// rebillyDownload waits until the export at path/id completes and returns
// its file.
func rebillyDownload(t *testing.T, s *stack, who credential, path, id string) []byte {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var e rebillyExport
		assert.Equal(c, http.StatusOK, rebilly(t, s, who, http.MethodGet, path+"/"+id, "", &e))
		assert.Equal(c, "completed", e.Status, "reason: %s", e.Reason)
	}, 2*time.Minute, 200*time.Millisecond)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.gatewayURL+path+"/"+id+"/download", nil)
	require.NoError(t, err)
	req.Header.Set("REB-APIKEY", who.APIKey)
	resp, err := noRedirect.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode)
	return download(t, resp.Header.Get("Location"))
}

func csvColumn(t *testing.T, body []byte, col int) []string {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	require.NoError(t, err)
	require.NotEmpty(t, rows, "a header at least")
	var out []string
	for _, r := range rows[1:] {
		out = append(out, r[col])
	}
	return out
}

// TestRecordExportsReadOnlyWhatTheCallerMay is the report that opened the
// security work, through every service: carol, a plain user in neither
// dev-team nor alice and bob's direct room and a member of globex only,
// exports messages, users, rooms and transactions.
func TestRecordExportsReadOnlyWhatTheCallerMay(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	carol := s.user(t, "carol")
	d := demo.Generate()

	readable := map[string]bool{}
	for _, r := range d.Rooms {
		if r.GetType() == sourcev1.RoomType_ROOM_TYPE_CHANNEL {
			readable[r.GetId()] = true
		}
	}
	for _, m := range d.Memberships {
		if m.GetUserId() == carol.UserID {
			readable[m.GetRoomId()] = true
		}
	}
	want := 0
	for id, msgs := range d.Messages {
		if readable[id] {
			want += len(msgs)
		}
	}

	const path = "/data-exports"
	msgs := rebillyCreate(t, s, carol, path, `{"name":"messages","resource":"messages","format":"csv","fields":["rid","msg"]}`)
	users := rebillyCreate(t, s, carol, path, `{"name":"users","resource":"users","format":"csv","fields":["id","email","roles"]}`)
	rooms := rebillyCreate(t, s, carol, path, `{"name":"rooms","resource":"rooms","format":"csv","fields":["id","name"]}`)
	txns := rebillyCreate(t, s, carol, path, `{"name":"transactions","resource":"transactions","format":"csv","fields":["id"]}`)

	rids := csvColumn(t, rebillyDownload(t, s, carol, path, msgs), 0)
	assert.Len(t, rids, want, "every message of the rooms carol may read")
	for _, rid := range rids {
		require.True(t, readable[rid], "carol's export holds a message of room %s", rid)
	}

	assert.Equal(t, []string{carol.UserID}, csvColumn(t, rebillyDownload(t, s, carol, path, users), 0),
		"her own profile, nobody else's email or roles")

	var wantRooms []string
	for id := range readable {
		wantRooms = append(wantRooms, id)
	}
	assert.ElementsMatch(t, wantRooms, csvColumn(t, rebillyDownload(t, s, carol, path, rooms), 0))

	var globex []string
	for _, r := range d.Records[demo.ResourceTransactions] {
		if r.GetOrganizationId() == "globex" {
			globex = append(globex, r.GetId())
		}
	}
	assert.Equal(t, globex, csvColumn(t, rebillyDownload(t, s, carol, path, txns), 0),
		"her default organization's transactions, in order, and no other tenant's")

	// rooms.export needs mail-messages, and the room must be readable.
	devTeam, ok := d.RoomByName("dev-team")
	require.True(t, ok)
	admin := s.user(t, "admin")
	var refused map[string]any
	status, _ := post(t, s.gatewayURL+"/api/v1/rooms.export", carol, "", fmt.Sprintf(`{"rid":%q,"type":"file","format":"json"}`, devTeam.GetId()), &refused)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, false, refused["success"])
	direct := ""
	for _, r := range d.Rooms {
		if r.GetType() == sourcev1.RoomType_ROOM_TYPE_DIRECT && !strings.Contains(r.GetId(), admin.UserID) {
			direct = r.GetId()
		}
	}
	require.NotEmpty(t, direct, "alice and bob's direct room")
	refused = nil
	status, _ = post(t, s.gatewayURL+"/api/v1/rooms.export", admin, "", fmt.Sprintf(`{"rid":%q,"type":"file","format":"json"}`, direct), &refused)
	assert.Equal(t, http.StatusBadRequest, status, "an admin does not read a direct room they are not in")
	assert.Equal(t, false, refused["success"])
}

// TestNoObjectLevelAccessAcrossUsersOrOrganizations drives every endpoint
// of every dialect with another user's and another organization's ids:
// each answers 404 (or an invalid-link 403 for a tampered signed link) and
// no list shows them.
func TestNoObjectLevelAccessAcrossUsersOrOrganizations(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	alice, bob, carol, admin := s.user(t, "alice"), s.user(t, "bob"), s.user(t, "carol"), s.user(t, "admin")

	// alice (administrator of acme's exports) and bob (member of acme and
	// globex) create one export of each kind; carol (administrator of
	// globex's exports) and the global admin (a plain member of acme)
	// probe them.
	const acme, globex = "/organizations/acme/data-exports", "/organizations/globex/data-exports"
	aliceExport := rebillyCreate(t, s, alice, acme, `{"name":"alice's","resource":"transactions","format":"csv"}`)
	aliceSchedule := rebillyCreate(t, s, alice, acme, `{"name":"alice's weekly","resource":"transactions","format":"csv","recurring":{"instruction":"FREQ=WEEKLY"}}`)
	bobExport := rebillyCreate(t, s, bob, globex, `{"name":"bob's","resource":"events","format":"csv"}`)
	raw := rawCall(t, s, alice, http.MethodPost, "create.json", url.Values{
		"event": {"installs"}, "selectors": {"id"}, "dateFrom": {"2026-05-01"}, "dateTo": {"2026-05-02"},
	})
	require.Equal(t, 200, raw.Code, "%+v", raw)
	roomExport := createRoomExport(t, s, admin, "GENERAL", "")
	roomJob := waitCompleted(t, s, admin, roomExport)
	require.NotEmpty(t, roomJob.Files)

	t.Run("Rebilly", func(t *testing.T) {
		for _, tc := range []struct {
			who     credential
			method  string
			path    string
			whoName string
		}{
			{carol, http.MethodGet, acme + "/" + aliceExport, "carol"},
			{carol, http.MethodGet, "/data-exports/" + aliceExport, "carol"},
			{carol, http.MethodGet, "/experimental" + acme + "/" + aliceExport, "carol"},
			{carol, http.MethodGet, acme, "carol"},
			{carol, http.MethodDelete, acme + "/" + aliceExport, "carol"},
			{carol, http.MethodDelete, "/data-exports/" + aliceExport, "carol"},
			{carol, http.MethodGet, acme + "/" + aliceExport + "/download", "carol"},
			{carol, http.MethodGet, "/data-exports/" + aliceExport + "/download", "carol"},
			{carol, http.MethodGet, acme + "/" + aliceSchedule, "carol"},
			{carol, http.MethodDelete, acme + "/" + aliceSchedule, "carol"},
			{bob, http.MethodGet, acme + "/" + aliceExport, "bob"},
			{bob, http.MethodDelete, acme + "/" + aliceSchedule, "bob"},
			{admin, http.MethodGet, acme + "/" + aliceExport, "admin"},
			{admin, http.MethodDelete, acme + "/" + aliceExport, "admin"},
			{admin, http.MethodGet, globex, "admin"},
			{admin, http.MethodGet, globex + "/" + bobExport, "admin"},
			{alice, http.MethodGet, globex + "/" + bobExport, "alice"},
		} {
			assert.Equal(t, http.StatusNotFound, rebilly(t, s, tc.who, tc.method, tc.path, "", nil), "%s %s as %s", tc.method, tc.path, tc.whoName)
		}
		body := `{"resource":"transactions","format":"json"}`
		assert.Equal(t, http.StatusNotFound, rebilly(t, s, carol, http.MethodPut, acme+"/"+aliceExport, body, nil),
			"PUT into an organization carol is not in")

		ids := func(who credential, path string) []string {
			var list []rebillyExport
			require.Equal(t, http.StatusOK, rebilly(t, s, who, http.MethodGet, path, "", &list))
			var out []string
			for _, e := range list {
				out = append(out, e.ID)
			}
			return out
		}
		assert.NotContains(t, ids(carol, "/data-exports"), aliceExport)
		assert.NotContains(t, ids(carol, globex), aliceExport)
		assert.Contains(t, ids(carol, globex), bobExport, "carol administers globex's exports")
		assert.Equal(t, http.StatusOK, rebilly(t, s, carol, http.MethodGet, globex+"/"+bobExport, "", nil))
		assert.Subset(t, ids(alice, acme), []string{aliceExport, aliceSchedule})
		assert.Empty(t, ids(admin, acme), "the global admin role does not reach into tenants")
		assert.Empty(t, ids(bob, acme), "an acme member sees only his own")
		assert.Contains(t, ids(bob, globex), bobExport)

		// Her id means nothing to others: in carol's organization it is
		// carol's own new export.
		var own rebillyExport
		assert.Equal(t, http.StatusCreated, rebilly(t, s, carol, http.MethodPut, globex+"/"+aliceExport, `{"name":"mine","resource":"transactions","format":"json"}`, &own),
			"alice's id in carol's organization is just carol's own new export")
		assert.Equal(t, carol.UserID, own.UserID)

		// Nothing of alice's changed.
		var still rebillyExport
		require.Equal(t, http.StatusOK, rebilly(t, s, alice, http.MethodGet, acme+"/"+aliceExport, "", &still))
		assert.Equal(t, aliceExport, still.ID)
		assert.Equal(t, alice.UserID, still.UserID)
		assert.NotEqual(t, "json", still.Format)
		require.Equal(t, http.StatusOK, rebilly(t, s, alice, http.MethodGet, acme+"/"+aliceSchedule, "", &still))
	})

	t.Run("myTracker sequential ids", func(t *testing.T) {
		id := raw.Data.IDRawExport
		for _, ep := range []string{"get.json", "cancel.json"} {
			a := rawCall(t, s, carol, http.MethodGet, ep, url.Values{"idRawExport": {id}})
			assert.Equal(t, http.StatusNotFound, a.Code, "%s of alice's raw export as carol: %+v", ep, a)
		}
		a := rawCall(t, s, bob, http.MethodGet, "get.json", url.Values{"idRawExport": {id}})
		assert.Equal(t, http.StatusNotFound, a.Code, "bob, in alice's organization, still not his")
		assert.Equal(t, 200, rawCall(t, s, alice, http.MethodGet, "get.json", url.Values{"idRawExport": {id}}).Code)
	})

	t.Run("native API and Rocket.Chat", func(t *testing.T) {
		for _, id := range []string{roomExport, aliceExport} {
			for _, who := range []credential{carol, bob} {
				assert.Equal(t, http.StatusNotFound, call(t, http.MethodGet, s.gatewayURL+"/v1/exports/"+id, &who, nil, nil), "GET %s as %s", id, who.Username)
				assert.Equal(t, http.StatusNotFound, call(t, http.MethodPost, s.gatewayURL+"/v1/exports/"+id+"/cancel", &who, nil, nil), "cancel %s as %s", id, who.Username)
			}
		}
		var list struct {
			Items []nativeJob `json:"items"`
		}
		require.Equal(t, http.StatusOK, call(t, http.MethodGet, s.gatewayURL+"/v1/exports", &carol, nil, &list))
		for _, j := range list.Items {
			assert.NotContains(t, []string{roomExport, aliceExport, aliceSchedule, bobExport}, j.ID)
		}
		// A data download is the caller's own operation.
		var op dataDownload
		require.Equal(t, http.StatusOK, call(t, http.MethodGet, s.gatewayURL+"/api/v1/users.requestDataDownload?fullExport=false", &carol, nil, &op))
		assert.Equal(t, carol.UserID, op.ExportOperation.UserID)
		assert.NotEqual(t, roomExport, op.ExportOperation.ID)
	})

	t.Run("signed links", func(t *testing.T) {
		link, err := url.Parse(roomJob.Files[0].URL)
		require.NoError(t, err)
		q := link.Query()
		tampered := []string{
			strings.Replace(link.String(), roomExport, aliceExport, 1),
			strings.Replace(link.String(), "sig="+q.Get("sig"), "sig=AAAA"+q.Get("sig")[4:], 1),
			strings.Replace(link.String(), "exp="+q.Get("exp"), "exp=99999999999", 1),
			strings.Replace(link.String(), roomJob.Files[0].Name, "other.json", 1),
		}
		for _, u := range tampered {
			resp, err := http.Get(u)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Contains(t, []int{http.StatusForbidden, http.StatusNotFound}, resp.StatusCode, "%s", u)
		}
		resp, err := http.Get(link.String())
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, "the untouched link works")
	})
}
