package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type nativeJob struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Format   string `json:"format"`
	State    string `json:"state"`
	Progress struct {
		Percent int `json:"percent"`
		Records int `json:"records"`
		Bytes   int `json:"bytes"`
	} `json:"progress"`
	Files []struct {
		Name      string `json:"name"`
		Size      int64  `json:"size"`
		Records   int    `json:"records"`
		SHA256    string `json:"sha256"`
		URL       string `json:"url"`
		ExpiresAt string `json:"expiresAt"`
	} `json:"files"`
	Error string `json:"error"`
}

// TestRoomExportThroughEveryService is the foundation's promise: a
// Rocket.Chat rooms.export request passes gateway → room-exporter →
// archiver → notifier, and the file behind the signed link holds exactly
// the room's messages.
func TestRoomExportThroughEveryService(t *testing.T) {
	s := startStack(t)
	admin := s.user(t, "admin")
	wantMessages := s.seed.Rooms["GENERAL"].Messages
	require.Positive(t, wantMessages, "seed.json must count GENERAL's messages")

	var created struct {
		Success  bool   `json:"success"`
		ExportID string `json:"exportId"`
	}
	status := call(t, http.MethodPost, s.gatewayURL+"/api/v1/rooms.export", &admin,
		map[string]string{"rid": "GENERAL", "type": "file", "format": "json"}, &created)
	require.Equal(t, http.StatusOK, status)
	require.True(t, created.Success)
	require.NotEmpty(t, created.ExportID)

	var job nativeJob
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		job = nativeJob{}
		code := call(t, http.MethodGet, s.gatewayURL+"/v1/exports/"+created.ExportID, &admin, nil, &job)
		assert.Equal(c, http.StatusOK, code)
		assert.Equal(c, "completed", job.State, "job error: %q", job.Error)
	}, 90*time.Second, 200*time.Millisecond)

	assert.Equal(t, "room", job.Kind)
	assert.Equal(t, "json", job.Format)
	assert.Equal(t, 100, job.Progress.Percent)
	require.Len(t, job.Files, 1)
	file := job.Files[0]
	assert.Equal(t, "general.json", file.Name)
	assert.Equal(t, wantMessages, file.Records)

	body := download(t, file.URL)
	assert.EqualValues(t, file.Size, len(body))
	sum := sha256.Sum256(body)
	assert.Equal(t, file.SHA256, hex.EncodeToString(sum[:]))

	var doc struct {
		Room     map[string]any   `json:"room"`
		Messages []map[string]any `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(body, &doc))
	assert.Equal(t, "GENERAL", doc.Room["_id"])
	assert.Equal(t, "general", doc.Room["name"])
	assert.Equal(t, "c", doc.Room["t"])
	assert.Len(t, doc.Messages, wantMessages, "the export holds every message seed.json counts for GENERAL")
	for _, m := range doc.Messages[:10] {
		assert.Equal(t, "GENERAL", m["rid"])
		assert.NotEmpty(t, m["_id"])
		assert.NotEmpty(t, m["ts"])
		u, _ := m["u"].(map[string]any)
		assert.NotEmpty(t, u["_id"])
		assert.NotEmpty(t, u["username"])
	}

	// The owner is told once, by email, with a link to the same file.
	mail := waitForMail(t, s.mailpitURL, admin.Email)
	assert.Contains(t, mail.Subject, "ready")
	link := findLink(t, mail.Text, "/v1/exports/"+created.ExportID+"/files/")
	assert.Equal(t, body, download(t, link), "the emailed link downloads the same file")

	// A link whose signature was tampered with is refused.
	u, err := url.Parse(file.URL)
	require.NoError(t, err)
	q := u.Query()
	q.Set("sig", strings.Repeat("0", 64))
	u.RawQuery = q.Encode()
	resp, err := http.Get(u.String())
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)

	// Listing shows the job to its owner.
	var list struct {
		Items []nativeJob `json:"items"`
		Total int         `json:"total"`
	}
	require.Equal(t, http.StatusOK, call(t, http.MethodGet, s.gatewayURL+"/v1/exports", &admin, nil, &list))
	assert.Equal(t, 1, list.Total)
	require.Len(t, list.Items, 1)
	assert.Equal(t, created.ExportID, list.Items[0].ID)

	// Bad credentials get Rocket.Chat's answer.
	var denied map[string]any
	wrong := admin
	wrong.AuthToken = "not-the-token"
	assert.Equal(t, http.StatusUnauthorized, call(t, http.MethodPost, s.gatewayURL+"/api/v1/rooms.export", &wrong,
		map[string]string{"rid": "GENERAL", "type": "file", "format": "json"}, &denied))
	assert.Equal(t, map[string]any{"success": false, "status": "error", "message": "You must be logged in to do this."}, denied)
}

func download(t *testing.T, link string) []byte {
	t.Helper()
	resp, err := http.Get(link)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s", link)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return b
}

type mailMessage struct {
	ID      string `json:"ID"`
	Subject string `json:"Subject"`
	Text    string `json:"Text"`
	HTML    string `json:"HTML"`
}

// waitForMail asks Mailpit's API for the one message sent to addr.
func waitForMail(t *testing.T, mailpitURL, addr string) mailMessage {
	t.Helper()
	var id string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ids, ok := mailIDsTo(c, mailpitURL, addr)
		if ok && assert.Len(c, ids, 1, "exactly one email to %s", addr) {
			id = ids[0]
		}
	}, 60*time.Second, 200*time.Millisecond)
	m, err := readMail(mailpitURL, id)
	require.NoError(t, err)
	return m
}

// mailIDsTo lists the ids of the messages Mailpit received for addr.
func mailIDsTo(c *assert.CollectT, mailpitURL, addr string) ([]string, bool) {
	var list struct {
		Messages []struct {
			ID string `json:"ID"`
			To []struct {
				Address string `json:"Address"`
			} `json:"To"`
		} `json:"messages"`
	}
	resp, err := http.Get(mailpitURL + "/api/v1/messages?limit=500")
	if !assert.NoError(c, err) {
		return nil, false
	}
	defer resp.Body.Close()
	if !assert.NoError(c, json.NewDecoder(resp.Body).Decode(&list)) {
		return nil, false
	}
	var ids []string
	for _, m := range list.Messages {
		for _, to := range m.To {
			if to.Address == addr {
				ids = append(ids, m.ID)
			}
		}
	}
	return ids, true
}

// readMail fetches one message, text and HTML, from Mailpit.
func readMail(mailpitURL, id string) (mailMessage, error) {
	var m mailMessage
	resp, err := http.Get(mailpitURL + "/api/v1/message/" + id)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&m)
	return m, err
}

func findLink(t *testing.T, text, contains string) string {
	t.Helper()
	for _, f := range strings.Fields(text) {
		f = strings.Trim(f, "<>()\"'")
		if strings.HasPrefix(f, "http") && strings.Contains(f, contains) {
			return f
		}
	}
	t.Fatalf("no link containing %q in:\n%s", contains, text)
	return ""
}
