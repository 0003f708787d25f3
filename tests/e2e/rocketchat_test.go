package e2e

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/demo"
)

type dataDownload struct {
	Requested       bool    `json:"requested"`
	Success         bool    `json:"success"`
	URL             *string `json:"url"`
	ExportOperation struct {
		ID       string `json:"_id"`
		UserID   string `json:"userId"`
		Status   string `json:"status"`
		Reason   string `json:"reason"`
		RoomList []struct {
			RoomID        string `json:"roomId"`
			RoomName      string `json:"roomName"`
			ExportedCount int    `json:"exportedCount"`
			Status        string `json:"status"`
			TargetFile    string `json:"targetFile"`
			Type          string `json:"type"`
		} `json:"roomList"`
		FullExport      bool              `json:"fullExport"`
		GeneratedFile   string            `json:"generatedFile"`
		GeneratedAvatar bool              `json:"generatedAvatar"`
		UserNameTable   map[string]string `json:"userNameTable"`
	} `json:"exportOperation"`
}

// requestDataDownloadUntilDone asks for alice's data the way Rocket.Chat's
// client does, then repeats the same call until the operation completes.
func requestDataDownloadUntilDone(t *testing.T, s *stack, who credential, full bool) dataDownload {
	t.Helper()
	url := s.gatewayURL + "/api/v1/users.requestDataDownload?fullExport=false"
	if full {
		url = s.gatewayURL + "/api/v1/users.requestDataDownload?fullExport=true"
	}
	var first dataDownload
	require.Equal(t, http.StatusOK, call(t, http.MethodGet, url, &who, nil, &first))
	require.True(t, first.Success)
	require.True(t, first.Requested, "the first call starts an operation")
	require.NotEmpty(t, first.ExportOperation.ID)
	assert.Equal(t, full, first.ExportOperation.FullExport)

	var op dataDownload
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		op = dataDownload{}
		assert.Equal(c, http.StatusOK, call(t, http.MethodGet, url, &who, nil, &op))
		assert.False(c, op.Requested, "a repeated call returns the pending operation")
		assert.Equal(c, first.ExportOperation.ID, op.ExportOperation.ID)
		assert.Equal(c, "completed", op.ExportOperation.Status, "reason: %s", op.ExportOperation.Reason)
	}, 120*time.Second, 300*time.Millisecond)
	require.NotNil(t, op.URL, "a completed operation carries its download link")
	return op
}

func readZip(t *testing.T, body []byte) map[string][]byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(body), int64(len(body)))
	require.NoError(t, err, "the download is a valid zip")
	entries := map[string][]byte{}
	for _, f := range zr.File {
		assert.False(t, strings.HasPrefix(f.Name, "/") || strings.Contains(f.Name, ".."), "unsafe entry name %q", f.Name)
		rc, err := f.Open()
		require.NoError(t, err)
		b, err := io.ReadAll(rc)
		require.NoError(t, err)
		rc.Close()
		entries[f.Name] = b
	}
	return entries
}

// checkManifest verifies every entry against manifest.json's checksums.
func checkManifest(t *testing.T, entries map[string][]byte) {
	t.Helper()
	raw, ok := entries["manifest.json"]
	require.True(t, ok, "the archive has a manifest.json")
	var m struct {
		Parts []struct {
			Files []struct {
				Name   string `json:"name"`
				Size   int    `json:"size"`
				SHA256 string `json:"sha256"`
			} `json:"files"`
		} `json:"parts"`
	}
	require.NoError(t, json.Unmarshal(raw, &m))
	listed := 0
	for _, p := range m.Parts {
		for _, f := range p.Files {
			listed++
			b, ok := entries[f.Name]
			if !assert.True(t, ok, "manifest lists %s but the archive lacks it", f.Name) {
				continue
			}
			sum := sha256.Sum256(b)
			assert.Equal(t, f.SHA256, hex.EncodeToString(sum[:]), "checksum of %s", f.Name)
			assert.Equal(t, f.Size, len(b), "size of %s", f.Name)
		}
	}
	assert.Equal(t, len(entries)-1, listed, "every entry but the manifest is listed")
}

// TestUserDataDownloadThroughEveryService follows Rocket.Chat's "download
// my data" from the request to the zip behind the emailed link, in both
// the HTML and the full JSON variant.
func TestUserDataDownloadThroughEveryService(t *testing.T) {
	s := startStack(t)
	alice := s.user(t, "alice")

	html := requestDataDownloadUntilDone(t, s, alice, false)
	require.NotEmpty(t, html.ExportOperation.RoomList, "alice is a member of several rooms")
	for _, r := range html.ExportOperation.RoomList {
		assert.Equal(t, "completed", r.Status, "room %s", r.RoomID)
		assert.Equal(t, s.seed.Rooms[r.RoomID].Messages, r.ExportedCount, "room %s exported every message", r.RoomID)
		assert.Equal(t, ".html", path.Ext(r.TargetFile))
	}
	body := download(t, *html.URL)
	entries := readZip(t, body)
	checkManifest(t, entries)
	assert.Contains(t, entries, "user.html")
	// The avatar the seeder published for alice, named as Rocket.Chat
	// names it.
	assert.True(t, html.ExportOperation.GeneratedAvatar)
	for _, a := range demo.Generate().Avatars {
		if a.ObjectKey == "avatars/"+alice.Username {
			assert.Equal(t, a.Data, entries["avatar"], "the archive's avatar is alice's")
		}
	}
	assert.Equal(t, alice.Username, html.ExportOperation.UserNameTable[alice.Username], "hideUsers' table: alice reads as herself")
	for _, r := range html.ExportOperation.RoomList {
		page, ok := entries[r.TargetFile]
		if assert.True(t, ok, "archive has %s", r.TargetFile) {
			assert.Contains(t, string(page), "<html", "%s is an HTML page", r.TargetFile)
			assert.NotContains(t, string(page), "<script>alert", "message content stays inert in %s", r.TargetFile)
		}
	}
	for name := range entries {
		if strings.HasPrefix(name, "assets/") {
			assert.NotEmpty(t, entries[name], "asset %s has bytes", name)
		}
	}
	mail := waitForMailContaining(t, s.mailpitURL, alice.Email, html.ExportOperation.ID)
	assert.Equal(t, body, download(t, findLink(t, mail.Text, "/v1/exports/"+html.ExportOperation.ID+"/files/")),
		"the emailed link downloads the same archive")

	full := requestDataDownloadUntilDone(t, s, alice, true)
	assert.NotEqual(t, html.ExportOperation.ID, full.ExportOperation.ID, "a full export is its own operation")
	entries = readZip(t, download(t, *full.URL))
	checkManifest(t, entries)
	assert.Contains(t, entries, "user.json")
	assert.Contains(t, entries, "channels.json")
	// A room file of a personal download is Rocket.Chat's: JSON lines of
	// {msg, username, ts, attachments, type}, other people pseudonymised.
	for _, r := range full.ExportOperation.RoomList {
		lines := strings.Split(strings.TrimSuffix(string(entries[r.TargetFile]), "\n"), "\n")
		assert.Len(t, lines, s.seed.Rooms[r.RoomID].Messages, "room %s", r.RoomID)
		for _, l := range lines {
			var m map[string]any
			require.NoError(t, json.Unmarshal([]byte(l), &m), "%s: a JSON line: %q", r.TargetFile, l)
			assert.Contains(t, m, "msg")
			assert.Contains(t, m, "ts")
			if u, _ := m["username"].(string); u != alice.Username {
				assert.True(t, strings.HasPrefix(u, "User_"), "%s: someone else is pseudonymised, got %q", r.TargetFile, u)
			}
		}
	}
	var user map[string]any
	require.NoError(t, json.Unmarshal(entries["user.json"], &user))
	assert.NotContains(t, string(entries["user.json"]), alice.AuthToken, "the token never leaves")
}

// TestRoomExportAsHTMLAndByEmail covers the other two rooms.export
// variants end to end.
func TestRoomExportAsHTMLAndByEmail(t *testing.T) {
	s := startStack(t)
	admin := s.user(t, "admin")
	bob := s.user(t, "bob")

	var created struct {
		Success  bool   `json:"success"`
		ExportID string `json:"exportId"`
	}
	require.Equal(t, http.StatusOK, call(t, http.MethodPost, s.gatewayURL+"/api/v1/rooms.export", &admin,
		map[string]string{"rid": "GENERAL", "type": "file", "format": "html"}, &created))
	job := waitCompleted(t, s, admin, created.ExportID)
	require.Len(t, job.Files, 1)
	assert.Equal(t, "general.html", job.Files[0].Name)
	assert.Equal(t, s.seed.Rooms["GENERAL"].Messages, job.Files[0].Records)
	page := string(download(t, job.Files[0].URL))
	assert.Contains(t, page, "general")
	assert.NotContains(t, page, "<script>alert", "message content stays inert")
	assert.Contains(t, page, "&lt;script&gt;", "the script text is shown, escaped")

	// Pick three messages from a JSON export to mail.
	require.Equal(t, http.StatusOK, call(t, http.MethodPost, s.gatewayURL+"/api/v1/rooms.export", &admin,
		map[string]string{"rid": "GENERAL", "type": "file", "format": "json"}, &created))
	job = waitCompleted(t, s, admin, created.ExportID)
	var doc struct {
		Messages []struct {
			ID  string `json:"_id"`
			Msg string `json:"msg"`
		} `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(download(t, job.Files[0].URL), &doc))
	var ids, texts []string
	for _, m := range doc.Messages {
		if len(m.Msg) > 12 && !strings.ContainsAny(m.Msg, "<>&*_`") && len(ids) < 3 {
			ids = append(ids, m.ID)
			texts = append(texts, m.Msg)
		}
	}
	require.Len(t, ids, 3)

	var mailed struct {
		Success  bool     `json:"success"`
		Missing  []string `json:"missing"`
		ExportID string   `json:"exportId"`
	}
	require.Equal(t, http.StatusOK, call(t, http.MethodPost, s.gatewayURL+"/api/v1/rooms.export", &admin, map[string]any{
		"rid": "GENERAL", "type": "email", "toUsers": []string{"bob", "nobody-here"},
		"toEmails": []string{"auditor@example.com"}, "subject": "Three messages from #general", "messages": ids,
	}, &mailed))
	assert.True(t, mailed.Success)
	assert.Equal(t, []string{"nobody-here"}, mailed.Missing)
	waitCompleted(t, s, admin, mailed.ExportID)
	for _, to := range []string{bob.Email, "auditor@example.com"} {
		m := waitForMailContaining(t, s.mailpitURL, to, texts[0])
		assert.Equal(t, "Three messages from #general", m.Subject)
		for _, text := range texts {
			assert.Contains(t, m.Text, text, "mail to %s carries every selected message", to)
		}
	}
}

func waitCompleted(t *testing.T, s *stack, who credential, id string) nativeJob {
	t.Helper()
	var job nativeJob
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		job = nativeJob{}
		assert.Equal(c, http.StatusOK, call(t, http.MethodGet, s.gatewayURL+"/v1/exports/"+id, &who, nil, &job))
		assert.Equal(c, "completed", job.State, "job error: %q", job.Error)
	}, 120*time.Second, 200*time.Millisecond)
	return job
}

// waitForMailContaining finds the message to addr whose text contains
// want, among everything Mailpit received.
func waitForMailContaining(t *testing.T, mailpitURL, addr, want string) mailMessage {
	t.Helper()
	var found mailMessage
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ids, _ := mailIDsTo(c, mailpitURL, addr)
		for _, id := range ids {
			if msg, err := readMail(mailpitURL, id); err == nil && strings.Contains(msg.Text, want) {
				found = msg
				return
			}
		}
		assert.Fail(c, "no mail yet", "to %s containing %q", addr, want)
	}, 90*time.Second, 300*time.Millisecond)
	return found
}
