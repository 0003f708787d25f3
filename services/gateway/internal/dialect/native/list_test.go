package native_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
)

// TestListPagesNewestFirst walks GET /v1/exports with limit and after
// over the caller's jobs, with another user's jobs in between, and checks
// that the pages join up to exactly the caller's jobs, newest first.
func TestListPagesNewestFirst(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	ctx := t.Context()
	t0 := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	var want []string
	for i := range 7 {
		for _, owner := range []string{gatewaytest.AdminID, gatewaytest.UserID} {
			id := fmt.Sprintf("list-%s-%d", owner, i)
			job := &exportv1.Job{Id: id, OwnerId: owner, Kind: exportv1.JobKind_JOB_KIND_ROOM, Dialect: "rocketchat",
				State: exportv1.JobState_JOB_STATE_PENDING, CreatedAt: timestamppb.New(t0.Add(time.Duration(i) * time.Minute))}
			_, err := e.Jobs.Create(ctx, &exportv1.ExportRequested{JobId: id, OccurredAt: job.GetCreatedAt(), Job: job})
			require.NoError(t, err)
			if owner == gatewaytest.AdminID {
				want = append([]string{id}, want...)
			}
		}
	}

	var got []string
	after := ""
	for page := 0; ; page++ {
		require.Less(t, page, 10, "the cursor must move")
		path := "/v1/exports?limit=3"
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		r := e.Do(t, http.MethodGet, path, gatewaytest.AsAdmin, "")
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		body := r.JSON(t)
		assert.Equal(t, 7.0, body["total"])
		items, _ := body["items"].([]any)
		assert.LessOrEqual(t, len(items), 3)
		for _, it := range items {
			got = append(got, it.(map[string]any)["id"].(string))
		}
		next, _ := body["next"].(string)
		if next == "" {
			break
		}
		after = next
	}
	assert.Equal(t, want, got)

	all := e.Do(t, http.MethodGet, "/v1/exports", gatewaytest.AsAdmin, "").JSON(t)
	assert.Len(t, all["items"], 7, "the default page holds them all")
	assert.NotContains(t, all, "next")

	for _, bad := range []string{"?limit=0", "?limit=1001", "?limit=x", "?after=%21%21"} {
		r := e.Do(t, http.MethodGet, "/v1/exports"+bad, gatewaytest.AsAdmin, "")
		assert.Equal(t, http.StatusBadRequest, r.Status, bad)
	}
}
