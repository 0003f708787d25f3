package e2e

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/demo"
)

// sdkRun is what tests/e2e/sdk/script.mjs prints.
type sdkRun struct {
	Created struct {
		All, Approved  string
		ApprovedStatus int
	}
	Conflict string
	Invalid  struct {
		Name   string
		Status int
	}
	Listed struct {
		Total, Limit, Offset int
		Names                []string
	}
	Completed []string
	Exports   []struct {
		ID, Name, Status, Reason string
		RecordCount              int
		User                     string
		SignedLink               *struct{ Rel, Href, ExpiredTime string }
		CSV                      string
	}
	AfterDelete string
}

// installSDK copies tests/e2e/sdk to a temporary directory and installs the
// pinned rebilly-js-sdk there, so the repository stays free of node_modules.
func installSDK(t *testing.T) string {
	t.Helper()
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not on PATH: the Rebilly SDK test needs Node.js and npm (`make test` installs them with apt-get when missing)", bin)
		}
	}
	dir := t.TempDir()
	for _, name := range []string{"package.json", "script.mjs"} {
		b, err := os.ReadFile(filepath.Join("sdk", name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	cmd := exec.Command("npm", "install", "--no-audit", "--no-fund")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "npm install: %s", out)
	return dir
}

func TestRebillySDK(t *testing.T) {
	sdkDir := installSDK(t)
	s := startStack(t)
	// alice is a member of acme, whose transactions the SDK exports.
	user := s.user(t, "alice")
	require.NotEmpty(t, user.APIKey, "the seeder gives users API keys")

	cmd := exec.Command("node", "script.mjs")
	cmd.Dir = sdkDir
	cmd.Env = append(os.Environ(),
		"GATEWAY_URL="+s.gatewayURL,
		"API_KEY="+user.APIKey,
		"ORGANIZATION_ID=acme",
		"CLIENT_ID=approved-usd-"+strconv.FormatInt(time.Now().UnixNano(), 36),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "node script.mjs: %s", stderr.String())
	var run sdkRun
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &run), "%s", stdout.String())

	assert.NotEmpty(t, run.Created.All)
	assert.Equal(t, 201, run.Created.ApprovedStatus, "queue with an id: GET 404, then PUT")
	assert.Equal(t, "RebillyConflictError", run.Conflict, "queue with a taken id")
	assert.Equal(t, "RebillyValidationError", run.Invalid.Name, "unknown field: 422")
	assert.Equal(t, 2, run.Listed.Total)
	assert.Equal(t, 5, run.Listed.Limit)
	assert.Equal(t, 0, run.Listed.Offset)
	assert.ElementsMatch(t, []string{"all transactions", "approved USD"}, run.Listed.Names)
	assert.Equal(t, []string{"all transactions", "approved USD"}, run.Completed)
	assert.Equal(t, "RebillyNotFoundError", run.AfterDelete)

	// The CSVs hold exactly the seeder's records.
	records := demo.Generate().Records["transactions"]
	type txn struct {
		customer, currency, status string
		amount                     float64
	}
	want := map[string]txn{}
	var wantOrder, approvedUSD []string
	for _, r := range records {
		if r.GetOrganizationId() != "acme" {
			continue
		}
		f := r.GetFields().GetFields()
		tx := txn{f["customerId"].GetStringValue(), f["currency"].GetStringValue(), f["status"].GetStringValue(), f["amount"].GetNumberValue()}
		want[r.GetId()] = tx
		wantOrder = append(wantOrder, r.GetId())
		if tx.status == "approved" && tx.currency == "USD" {
			approvedUSD = append(approvedUSD, r.GetId())
		}
	}
	require.Len(t, run.Exports, 2)
	for i, exp := range run.Exports {
		t.Run(exp.Name, func(t *testing.T) {
			require.Equal(t, "completed", exp.Status, "reason: %s", exp.Reason)
			assert.Equal(t, user.UserID, exp.User, "expand=user")
			require.NotNil(t, exp.SignedLink)
			assert.Contains(t, exp.SignedLink.Href, "sig=")
			assert.NotEmpty(t, exp.SignedLink.ExpiredTime)
			rows, err := csv.NewReader(strings.NewReader(exp.CSV)).ReadAll()
			require.NoError(t, err)
			require.NotEmpty(t, rows)
			assert.Equal(t, []string{"id", "customerId", "amount", "currency", "status", "createdTime"}, rows[0])
			var ids []string
			for _, row := range rows[1:] {
				ids = append(ids, row[0])
				w, ok := want[row[0]]
				if !assert.True(t, ok, "unknown record %s", row[0]) {
					continue
				}
				amount, err := strconv.ParseFloat(row[2], 64)
				assert.NoError(t, err)
				assert.Equal(t, txn{w.customer, w.currency, w.status, w.amount}, txn{row[1], row[3], row[4], amount}, "record %s", row[0])
			}
			assert.Equal(t, exp.RecordCount, len(rows)-1, "recordCount")
			if i == 0 {
				assert.Equal(t, wantOrder, ids, "all records, sorted by createdTime")
			} else {
				slices.Sort(ids)
				slices.Sort(approvedUSD)
				assert.Equal(t, approvedUSD, ids, "filter status:approved;currency:USD")
			}
		})
	}
}
