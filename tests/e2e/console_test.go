package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// artifactsDir is where browser tests leave their screenshots
// (git-ignored), relative to this package.
const artifactsDir = "artifacts"

// chromiumPath finds Debian's chromium. A missing browser fails the test:
// skipping would let `make test` pass without the console ever tested.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed: run `make chromium` (apt-get install chromium), which `make test-e2e` does first")
	return ""
}

// The web console against the real services, in headless Chromium: sign
// in with a personal access token, see the API's validation message next
// to the field, start a room export, watch it complete over the event
// stream, download the file and check it against the export's SHA-256,
// and keep screenshots of the finished page (desktop and a phone's width)
// in tests/e2e/artifacts/.
func TestConsoleSignInExportWatchDownload(t *testing.T) {
	chromium := chromiumPath(t)
	s := startStack(t)
	admin := s.user(t, "admin")

	downloads := t.TempDir()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		// Tests run as root in containers, where Chromium's sandbox
		// cannot start.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	// The first run starts the browser; its context must not time out.
	require.NoError(t, chromedp.Do(ctx), "start chromium")

	// Everything the page writes to the console: a CSP violation or an
	// uncaught exception is a failure.
	var (
		mu       sync.Mutex
		problems []string
	)
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				problems = append(problems, m.URL+": "+m.Text)
				mu.Unlock()
			}
		}
	}()

	step := func(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, timeout)
		defer scancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
			t.Fatalf("%s: %v\nthe page:\n%s", what, err, page)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		v, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, "text of %s", sel)
		return v
	}

	step("open the console", 30*time.Second,
		chromedp.Navigate(s.gatewayURL+"/console/"),
		chromedp.WaitVisible(chromedp.ID("sign-in-user")),
	)
	// A wrong token is refused with the API's words, and no session.
	step("sign in with a wrong token", 30*time.Second,
		chromedp.SendKeys(chromedp.ID("sign-in-user"), admin.UserID),
		chromedp.SendKeys(chromedp.ID("sign-in-token"), "not-the-token"),
		chromedp.Click(chromedp.CSS("#sign-in button[type=submit]")),
		chromedp.Poll[chromedp.Void](`document.getElementById("sign-in-error").textContent.includes("wrong credentials")`),
	)
	step("sign in", 30*time.Second,
		chromedp.SetValue(chromedp.ID("sign-in-token"), admin.AuthToken),
		// By keyboard: Enter in the field submits the form.
		chromedp.SendKeys(chromedp.ID("sign-in-token"), "\r"),
		chromedp.WaitVisible(chromedp.ID("exports")),
	)
	assert.Contains(t, text("#who"), admin.Username)
	cookies, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	require.NoError(t, err)
	assert.Empty(t, cookies, "the session cookie is HttpOnly: scripts cannot read it")
	stored, err := chromedp.Run(ctx, chromedp.Evaluate[int](`localStorage.length + sessionStorage.length`))
	require.NoError(t, err)
	assert.Zero(t, stored, "nothing is kept in web storage")

	// The API's validation message lands next to its field.
	step("submit a room export without a room", 30*time.Second,
		chromedp.Click(chromedp.CSS(`nav a[href="#/new/room"]`)),
		chromedp.WaitVisible(chromedp.ID("new-export")),
		chromedp.Click(chromedp.CSS("#new-export button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS(`[data-field="room.id"][aria-invalid="true"]`)),
	)
	assert.Contains(t, text(`[data-field="room.id"] ~ .field-error`), "room.id is required")
	assert.Contains(t, text("#form-errors"), "The export was not started")

	step("start a room export", 30*time.Second,
		chromedp.SendKeys(chromedp.CSS(`[data-field="room.id"]`), "GENERAL"),
		chromedp.SetValue(chromedp.CSS(`[data-field="format"]`), "json"),
		chromedp.Click(chromedp.CSS("#new-export button[type=submit]")),
		chromedp.WaitVisible(chromedp.ID("job")),
	)
	loc, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)
	_, id, ok := strings.Cut(loc, "#/exports/")
	require.True(t, ok, "the console shows the new export: %s", loc)

	// The page follows the export's event stream to its end.
	step("watch the export complete", 2*time.Minute,
		chromedp.WaitVisible(chromedp.CSS("#files a.download")),
	)
	assert.Equal(t, "completed", text("#job-state"))
	cancelShown, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`getComputedStyle(document.getElementById("cancel")).display !== "none"`))
	require.NoError(t, err)
	assert.False(t, cancelShown, "a completed export offers no cancel")
	assert.Contains(t, text("#job"), "100%")
	shownSHA := text("#files td.mono")

	type file struct {
		Name   string
		Size   int64
		SHA256 string
	}
	var job struct {
		State    string
		Files    []file
		Manifest *file
		Archive  *file
	}
	require.Equal(t, 200, call(t, "GET", s.gatewayURL+"/v1/exports/"+id, &admin, nil, &job))
	require.Equal(t, "completed", job.State)
	require.Len(t, job.Files, 1)
	assert.Equal(t, job.Files[0].SHA256, shownSHA, "the page shows the file's SHA-256")
	// Beside the file, the page offers what the API answers: the
	// manifest, and the zip when the room had attachments.
	require.NotNil(t, job.Manifest, "every completed delivery has a manifest")
	assert.Equal(t, "Download "+job.Manifest.Name, text("#manifest a.download"))
	assert.Equal(t, job.Manifest.SHA256, text("#manifest td.mono"))
	if job.Archive != nil {
		assert.Equal(t, "Download "+job.Archive.Name, text("#archive a.download"))
		assert.Equal(t, job.Archive.SHA256, text("#archive td.mono"))
	} else {
		gone, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("archive") === null`))
		require.NoError(t, err)
		assert.True(t, gone, "no archive, no archive table")
	}

	// The browser downloads the file through its signed link.
	_, err = chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: new(true),
	})
	require.NoError(t, err)
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	step("click the download link", 10*time.Second, chromedp.Click(chromedp.CSS("#files a.download")))
	dctx, dcancel := context.WithTimeout(ctx, time.Minute)
	defer dcancel()
	var guid string
	for ev, err := range progress {
		if err != nil || dctx.Err() != nil {
			t.Fatalf("the download did not complete: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("the browser canceled the download")
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			guid = ev.GUID
			break
		}
	}
	data, err := os.ReadFile(filepath.Join(downloads, guid))
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	assert.Equal(t, job.Files[0].SHA256, hex.EncodeToString(sum[:]), "the downloaded bytes are the export's")
	assert.EqualValues(t, job.Files[0].Size, len(data))
	assert.Contains(t, string(data), `"messages"`)

	// The finished page, kept for people to look at (PNG: quality 100).
	require.NoError(t, os.MkdirAll(artifactsDir, 0o755))
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(artifactsDir, "console-export-completed.png"), shot, 0o644))

	// A phone's width: the page fits without sideways scrolling.
	step("narrow the window to 360 px", 10*time.Second, chromedp.EmulateViewport(360, 780))
	fits, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`))
	require.NoError(t, err)
	assert.True(t, fits, "the export's page fits a 360 px wide screen")
	shot, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(artifactsDir, "console-export-completed-phone.png"), shot, 0o644))
	step("back to the desktop width", 10*time.Second, chromedp.EmulateViewport(1280, 900))

	// A canceled chunked export's page lists the chunks it kept, with
	// their links.
	var chunked deliveredJob
	require.Equal(t, 201, call(t, "POST", s.gatewayURL+"/v1/exports", &admin, map[string]any{
		"kind": "records", "format": "jsonl",
		"records": map[string]any{"resource": "messages", "chunking": map[string]any{"maxRows": 100, "gzip": true}},
	}, &chunked))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		cur := getDelivered(t, s, admin, chunked.ID)
		assert.GreaterOrEqual(c, cur.Progress.Records, 300, "state %s", cur.State)
		assert.NotEqual(c, "completed", cur.State, "the export must still run when it is canceled")
	}, 60*time.Second, 5*time.Millisecond)
	require.Equal(t, 200, call(t, "POST", s.gatewayURL+"/v1/exports/"+chunked.ID+"/cancel", &admin, nil, nil))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		chunked = getDelivered(t, s, admin, chunked.ID)
		assert.Equal(c, "canceled", chunked.State)
		assert.NotEmpty(c, chunked.PartialFiles, "finished chunks are announced")
	}, 60*time.Second, 100*time.Millisecond)
	step("open the canceled export", 30*time.Second,
		// The console routes by its fragment: a change of it is no page load.
		chromedp.Evaluate[chromedp.Void](`location.hash = "#/exports/`+chunked.ID+`"`),
		chromedp.WaitVisible(chromedp.CSS("#partial-files a.download")),
	)
	assert.Equal(t, "canceled", text("#job-state"))
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#partial-files tbody tr").length`))
	require.NoError(t, err)
	assert.Equal(t, len(chunked.PartialFiles), rows, "one row per kept chunk")
	assert.Equal(t, "Download "+chunked.PartialFiles[0].Name, text("#partial-files a.download"))
	assert.Equal(t, chunked.PartialFiles[0].SHA256, text("#partial-files td.mono"))
	href, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#partial-files a.download").href`))
	require.NoError(t, err)
	assert.Contains(t, href, "/v1/exports/"+chunked.ID+"/files/"+chunked.PartialFiles[0].Name+"?exp=")

	// The list shows the export completed; signing out ends the session.
	step("open my exports", 30*time.Second,
		chromedp.Click(chromedp.CSS(`nav a[href="#/exports"]`)),
		chromedp.WaitVisible(chromedp.ID("row-"+id)),
	)
	assert.Contains(t, text("#row-"+id), "completed")
	step("sign out", 30*time.Second,
		chromedp.Click(chromedp.ID("sign-out")),
		chromedp.WaitVisible(chromedp.ID("sign-in-user")),
	)
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](`(async () => (await fetch("/v1/exports")).status)()`, chromedp.EvalAwaitPromise))
	require.NoError(t, err)
	assert.Equal(t, 401, status, "the browser's old cookie no longer authenticates")

	mu.Lock()
	defer mu.Unlock()
	// The browser logs the answers the test provoked (the wrong
	// sign-in's 401, the invalid form's 422) by itself.
	var unexpected []string
	for _, p := range problems {
		if !strings.Contains(p, "status of 401") && !strings.Contains(p, "status of 422") {
			unexpected = append(unexpected, p)
		}
	}
	assert.Empty(t, unexpected, "console errors (CSP violations, exceptions)")
}
