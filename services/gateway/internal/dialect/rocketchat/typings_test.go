package rocketchat_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/services/gateway/internal/quota"
	"dataport.dev/shared/bus"
)

// typingsDir holds what the TypeScript check is made of: the pinned
// packages (package.json), the compiler options and the answer types.
const typingsDir = "testdata/typings"

// answer is one real response body and the TypeScript type (declared in
// testdata/typings/answers.ts) it must fit.
type answer struct {
	name   string
	tsType string
	body   []byte
}

// TestAnswersFitRocketChatTypings type-checks real answers of the
// dialect, taken from the real router, against Rocket.Chat's published
// typings with tsc --strict: every users.requestDataDownload variant
// (first request, repeat, full export, direct room, completed with its
// files, failed), both rooms.export variants, and the error bodies (the
// handlers' 400 and 401, the middleware's 429). Node.js and npm are
// required (make node installs them); the typing packages are fetched
// once per pinned version.
func TestAnswersFitRocketChatTypings(t *testing.T) {
	node := requireTool(t, "node")
	modules := typingPackages(t, requireTool(t, "npm"))
	answers := collectAnswers(t)

	dir := t.TempDir()
	for _, f := range []string{"answers.ts", "tsconfig.json"} {
		data, err := os.ReadFile(filepath.Join(typingsDir, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), data, 0o644))
	}
	// The link's target is itself a node_modules directory, so the
	// packages resolve their own imports from there.
	require.NoError(t, os.Symlink(modules, filepath.Join(dir, "node_modules")))
	for _, a := range answers {
		var pretty bytes.Buffer
		require.NoError(t, json.Indent(&pretty, a.body, "", "  "), "%s: %s", a.name, a.body)
		src := fmt.Sprintf("// %s\nimport type { %s } from './answers';\n\nexport const body: %s = %s;\n", a.name, a.tsType, a.tsType, pretty.Bytes())
		require.NoError(t, os.WriteFile(filepath.Join(dir, fileName(a.name)+".ts"), []byte(src), 0o644))
	}

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(modules, "typescript", "bin", "tsc"), "-p", dir, "--pretty", "false")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the answers do not fit Rocket.Chat's typings (tsc: %v):\n%s\n%s", err, out, quoteFiles(t, dir, out))
	}
}

// TestDataDownloadUserDataIsSafe: userData describes the caller and never
// carries how they sign in, however much the host platform stores.
func TestDataDownloadUserDataIsSafe(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	const (
		id, token = "CarolUserId000001", "carol-token-4b1d"
		apiKey    = "carol-api-key-9f3e"
	)
	carol := &sourcev1.User{
		Id: id, Username: "carol", Name: "Carol Example", Email: "Carol <carol@example.com>",
		Roles: []string{"user"}, AuthTokenSha256: auth.TokenHash(token), ApiKeySha256: auth.TokenHash(apiKey),
		CreatedAt: timestamppb.New(time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)),
	}
	e.Put(t, bus.BucketUsers, id, carol)
	resp := e.Do(t, http.MethodGet, dataDownload, gatewaytest.Token(id, token), "")
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)

	for _, secret := range []string{token, apiKey, carol.GetAuthTokenSha256(), carol.GetApiKeySha256()} {
		assert.NotContains(t, string(resp.Body), secret)
	}
	userData, ok := operationOf(t, resp.JSON(t))["userData"].(map[string]any)
	require.True(t, ok)
	assert.Equal(t, map[string]any{
		"_id": id, "username": "carol", "name": "Carol Example",
		"emails": []any{map[string]any{"address": "carol@example.com"}},
		"roles":  []any{"user"}, "type": "user", "active": true,
		"createdAt": "2024-03-01T12:00:00.000Z", "_updatedAt": "2024-03-01T12:00:00.000Z",
	}, userData)
	// No key anywhere in the answer names a credential.
	secretKey := regexp.MustCompile(`(?i)services|password|bcrypt|resume|login|token|hash|secret|apikey|totp|e2e`)
	walkKeys(resp.JSON(t), func(k string) { assert.NotRegexp(t, secretKey, k, "key %q", k) })
}

func walkKeys(v any, f func(string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			f(k)
			walkKeys(x, f)
		}
	case []any:
		for _, x := range v {
			walkKeys(x, f)
		}
	}
}

// collectAnswers drives the real router through every answer the check
// covers, asserting along the way that each is the variant it is named
// after.
func collectAnswers(t *testing.T) []answer {
	t.Helper()
	e := gatewaytest.New(t, gatewaytest.Options{Projection: true})
	ctx := t.Context()
	var out []answer
	take := func(name, tsType string, resp gatewaytest.Response, status int) map[string]any {
		t.Helper()
		require.Equal(t, status, resp.Status, "%s: %s", name, resp.Body)
		out = append(out, answer{name: name, tsType: tsType, body: resp.Body})
		return resp.JSON(t)
	}
	const dd, ok = "DataDownloadAnswer", http.StatusOK

	first := take("requestDataDownload first request", dd, e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, ""), ok)
	require.Equal(t, true, first["requested"])
	id := operationOf(t, first)["_id"].(string)
	e.Clock.Advance(time.Second)
	again := take("requestDataDownload repeat (requested false)", dd, e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, ""), ok)
	require.Equal(t, false, again["requested"])
	full := take("requestDataDownload full export", dd, e.Do(t, http.MethodGet, dataDownload+"?fullExport=true", gatewaytest.AsAdmin, ""), ok)
	require.Equal(t, true, operationOf(t, full)["fullExport"])
	direct := take("requestDataDownload with a direct room", dd, e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsUser, ""), ok)
	require.Contains(t, fmt.Sprint(operationOf(t, direct)["roomList"]), gatewaytest.Admin2ID, "the direct room names the other participant")

	now := timestamppb.Now
	for part, name := range []string{"general.html", "staff.html"} {
		// The room files hid someone, and one of them more people than
		// it could name: the table and its truncation flag are typed too.
		require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventPart, id, fmt.Sprint(part), &exportv1.PartUploaded{JobId: id, OccurredAt: now(), Part: uint32(part), PartsTotal: 4, File: &exportv1.File{Name: name, Records: 3},
			HiddenUsernames: []string{"carol"}, HiddenUsernamesTruncated: part == 1}))
	}
	// The profile part with the avatar the host published.
	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventPart, id, "2", &exportv1.PartUploaded{JobId: id, OccurredAt: now(), Part: 2, PartsTotal: 4,
		Files: []*exportv1.File{{Name: "user.html", Records: 1}, {Name: "avatar", Bucket: "dataport-assets", ObjectKey: "avatars/root", Records: 1}}}))
	// The archiver announces completion only after every part, and so
	// does this test: the projection applies a job's events in any order.
	waitForJob(t, e, id, func(j *exportv1.Job) bool { return len(j.GetParts()) > 2 && j.GetParts()[2].GetExported() == 2 })
	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventPart, id, "3", &exportv1.PartUploaded{JobId: id, OccurredAt: now(), Part: 3, PartsTotal: 4, Files: []*exportv1.File{{Name: "assets/a-x.png", Bucket: "dataport-assets"}}}))
	zip := &exportv1.File{Name: "dataport-" + id + ".zip", ObjectKey: "jobs/" + id + "/files/dataport-" + id + ".zip", Size: 2048, Sha256: "ab12", ContentType: "application/zip", Records: 12}
	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventCompleted, id, "", &exportv1.ExportCompleted{JobId: id, OccurredAt: now(), Files: []*exportv1.File{zip}, OwnerId: gatewaytest.AdminID, Kind: exportv1.JobKind_JOB_KIND_USER_DATA}))
	waitForJob(t, e, id, func(j *exportv1.Job) bool { return j.GetState() == exportv1.JobState_JOB_STATE_COMPLETED })
	done := take("requestDataDownload completed with its files", dd, e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, ""), ok)
	doneOp := operationOf(t, done)
	require.Equal(t, "completed", doneOp["status"])
	require.Len(t, doneOp["fileList"], 1)
	require.Equal(t, true, doneOp["generatedUserFile"])
	require.Equal(t, true, doneOp["generatedAvatar"])
	require.Contains(t, doneOp["userNameTable"], "carol")
	require.Equal(t, true, doneOp["userNameTableTruncated"])
	require.NotNil(t, done["url"])

	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventExpired, id, "", &exportv1.ExportExpired{JobId: id, OccurredAt: now()}))
	waitForJob(t, e, id, (*exportv1.Job).GetFilesExpired)
	// Expired files free the caller: the next answer is a new operation,
	// so an expired one is never answered.
	next := take("requestDataDownload after the files expired", dd, e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, ""), ok)
	require.Equal(t, true, next["requested"])
	nextID := operationOf(t, next)["_id"].(string)

	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventFailed, nextID, "", &exportv1.ExportFailed{JobId: nextID, OccurredAt: now(), Reason: "room GENERAL could not be read"}))
	waitForJob(t, e, nextID, func(j *exportv1.Job) bool { return j.GetState() == exportv1.JobState_JOB_STATE_FAILED })
	failed := take("requestDataDownload failed", dd, e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, ""), ok)
	require.Equal(t, "failed", operationOf(t, failed)["status"])

	// rooms.export, both variants.
	const re = "RoomsExportAnswer"
	file := take("rooms.export file", re, e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin, `{"rid":"`+gatewaytest.RoomPrivate+`","type":"file","format":"json"}`), ok)
	require.NotEmpty(t, file["exportId"])
	take("rooms.export email with a missing recipient", re, e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin,
		`{"rid":"GENERAL","type":"email","subject":"Minutes","messages":["m1"],"toUsers":["alice","nobody"]}`), ok)
	nobody := take("rooms.export email to nobody mailable", re, e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin,
		`{"rid":"GENERAL","type":"email","subject":"Minutes","messages":["m1"],"toUsers":["nobody"]}`), ok)
	require.NotContains(t, nobody, "exportId")

	// Errors.
	const bad = http.StatusBadRequest
	take("requestDataDownload 401", "UnauthorizedAnswer", e.Do(t, http.MethodGet, dataDownload, gatewaytest.Anonymous, ""), http.StatusUnauthorized)
	take("rooms.export 401", "UnauthorizedAnswer", e.Do(t, http.MethodPost, roomsExport, gatewaytest.Token(gatewaytest.AdminID, "nope"), seedExample), http.StatusUnauthorized)
	for _, c := range []struct {
		name string
		who  gatewaytest.Creds
		body string
	}{
		{"invalid params", gatewaytest.AsAdmin, `{"type":"file"}`},
		{"invalid params with a reason", gatewaytest.AsAdmin, `{"rid":"GENERAL","type":"email","subject":"x","toUsers":["root"]}`},
		{"not allowed", gatewaytest.AsUser, seedExample},
		{"invalid room", gatewaytest.AsAdmin, `{"rid":"NoSuchRoom","type":"file","format":"json"}`},
		{"invalid format", gatewaytest.AsAdmin, `{"rid":"GENERAL","type":"file","format":"pdf"}`},
		{"invalid dates", gatewaytest.AsAdmin, `{"rid":"GENERAL","type":"file","format":"json","dateFrom":"yesterday"}`},
		{"invalid email", gatewaytest.AsAdmin, `{"rid":"GENERAL","type":"email","subject":"x","messages":["m1"],"toEmails":["not-an-address"]}`},
	} {
		got := take("rooms.export "+c.name, "ErrorAnswer", e.Do(t, http.MethodPost, roomsExport, c.who, c.body), bad)
		require.Equal(t, false, got["success"])
	}

	// What the gateway's middleware refuses comes in the dialect's shape
	// too: here the quota's 429.
	limited := gatewaytest.New(t, gatewaytest.Options{Limits: &quota.Options{MaxConcurrent: 1}})
	require.Equal(t, http.StatusOK, limited.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "").Status)
	take("rooms.export 429", "ErrorAnswer", limited.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin, `{"rid":"GENERAL","type":"file","format":"json"}`), http.StatusTooManyRequests)
	return out
}

// waitForJob polls the projection until the job satisfies done.
func waitForJob(t *testing.T, e *gatewaytest.Env, id string, done func(*exportv1.Job) bool) {
	t.Helper()
	gatewaytest.Eventually(t, func(c *assert.CollectT) {
		job, err := e.Jobs.Get(t.Context(), id)
		if assert.NoError(c, err) {
			assert.True(c, done(job), "job %s: %v", id, job)
		}
	})
}

// requireTool is the path of a program the check needs; its absence fails
// the test, since a skipped check would pass unnoticed.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("the Rocket.Chat typings check needs %s (Node.js and npm; `make node` installs them): %v", name, err)
	}
	return p
}

// typingPackages returns a node_modules directory holding the packages
// pinned in testdata/typings/package.json. They are fetched with npm
// pack, since @rocket.chat/core-typings declares a dependency only yarn
// can resolve (a "patch:" protocol), so npm install fails on it; only
// types are needed, so their own dependencies are not installed. The
// directory is cached under .dataport/ at the top of the repository,
// keyed by the pinned versions: a bump fetches anew, and every other run
// is offline.
func typingPackages(t *testing.T, npm string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(typingsDir, "package.json"))
	require.NoError(t, err)
	var manifest struct {
		DevDependencies map[string]string `json:"devDependencies"`
	}
	require.NoError(t, json.Unmarshal(raw, &manifest))
	var specs []string
	for name, version := range manifest.DevDependencies {
		specs = append(specs, name+"@"+version)
	}
	slices.Sort(specs)
	require.NotEmpty(t, specs)
	sum := sha256.Sum256([]byte(strings.Join(specs, "\n")))
	root := filepath.Join(cacheRoot(t), "rocketchat-typings")
	final := filepath.Join(root, hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(final); err == nil {
		return filepath.Join(final, "node_modules")
	}

	// Unpacked beside the final directory and renamed into place, so a
	// run interrupted halfway or racing another leaves no partial cache.
	require.NoError(t, os.MkdirAll(root, 0o755))
	tmp, err := os.MkdirTemp(root, "fetch-")
	require.NoError(t, err)
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, append([]string{"pack", "--json", "--pack-destination", tmp}, specs...)...)
	cmd.Dir = tmp
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("npm pack %s: %v\n%s", strings.Join(specs, " "), err, stderr.Bytes())
	}
	var packed []struct {
		Name     string `json:"name"`
		Filename string `json:"filename"`
	}
	require.NoError(t, json.Unmarshal(out, &packed), "npm pack --json: %s", out)
	require.Len(t, packed, len(specs), "npm pack --json: %s", out)
	for _, p := range packed {
		require.NoError(t, untar(filepath.Join(tmp, p.Filename), filepath.Join(tmp, "node_modules", filepath.FromSlash(p.Name))), "unpack %s", p.Name)
	}
	if err := os.Rename(tmp, final); err != nil {
		if _, statErr := os.Stat(final); statErr != nil {
			require.NoError(t, err, "cache the typing packages")
		}
	}
	return filepath.Join(final, "node_modules")
}

// cacheRoot is the repository's .dataport directory (the one go.work sits
// beside), or the user's cache directory outside a checkout.
func cacheRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return filepath.Join(d, ".dataport")
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	base, err := os.UserCacheDir()
	require.NoError(t, err)
	return filepath.Join(base, "dataport")
}

// untar unpacks an npm tarball into dir, dropping its top directory
// ("package/"). Only regular files and directories are written, and none
// outside dir.
func untar(tarball, dir string) error {
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(h.Name)
		_, rel, ok := strings.Cut(name, "/")
		if !ok || !fs.ValidPath(rel) {
			continue
		}
		target := filepath.Join(dir, filepath.FromSlash(rel))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}

// fileName is an answer's name as a file name.
func fileName(name string) string {
	return strings.Trim(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(name, "-"), "-")
}

// quoteFiles shows, with line numbers, the answers tsc complained about.
func quoteFiles(t *testing.T, dir string, tscOutput []byte) string {
	t.Helper()
	var b strings.Builder
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([\w.-]+\.ts)\(`).FindAllSubmatch(tscOutput, -1) {
		f := string(m[1])
		if seen[f] {
			continue
		}
		seen[f] = true
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "== %s\n", f)
		for i, line := range strings.Split(string(data), "\n") {
			fmt.Fprintf(&b, "%4d  %s\n", i+1, line)
		}
	}
	return b.String()
}
