package e2e

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/config"
	"dataport.dev/shared/objects"
)

// TestSplitExportsLeaveOnlyTheirFiles: with splitting planned from a few
// records on, a room export (HTML, whose ranges hand each other root and
// miss lists besides id tables and reports) and a record export are split
// into ranges that two exporters take and the archiver joins. Once each
// has completed, its job's objects are what it delivers (the joined
// file, the manifest, a room's archive; a part's attachment list may
// stay): no piece and none of the ranges' split state waits for the
// retention sweep.
func TestSplitExportsLeaveOnlyTheirFiles(t *testing.T) {
	s := startStackWith(t, stackOptions{exporters: 2, recordExporters: 2,
		env: []string{"DATAPORT_SPLIT_MIN_RECORDS=10", "DATAPORT_SPLIT_PARTS=3"}})
	admin := s.user(t, "admin")

	var room struct {
		Success  bool   `json:"success"`
		ExportID string `json:"exportId"`
	}
	require.Equal(t, http.StatusOK, call(t, http.MethodPost, s.gatewayURL+"/api/v1/rooms.export", &admin,
		map[string]string{"rid": "GENERAL", "type": "file", "format": "html"}, &room))
	require.True(t, room.Success)
	var records deliveredJob
	require.Equal(t, http.StatusCreated, call(t, http.MethodPost, s.gatewayURL+"/v1/exports", &admin, map[string]any{
		"kind": "records", "format": "json", "records": map[string]any{"resource": "events"},
	}, &records))

	attachmentList := regexp.MustCompile(`^jobs/[^/]+/parts/[0-9]+/attachments\.list\.pb$`)
	for name, id := range map[string]string{"room": room.ExportID, "records": records.ID} {
		t.Run(name, func(t *testing.T) {
			job := waitDelivered(t, s, admin, id, "completed")
			require.Len(t, job.Files, 1, "one joined file")
			require.NotNil(t, job.Manifest)
			delivered := 2 // the file and the manifest
			if job.Archive != nil {
				delivered++
			}
			joined := objects.FileKey(id, job.Files[0].Name)
			require.EventuallyWithT(t, func(c *assert.CollectT) {
				assert.True(c, loggedJoin(s.archiver.logText(t), id), "the export was split and joined")
				objs, err := s.minio.Store.List(t.Context(), config.DefaultExportBucket, objects.JobPrefix(id))
				if !assert.NoError(c, err) {
					return
				}
				var files, left []string
				for _, o := range objs {
					switch {
					case strings.HasPrefix(o.Key, objects.FilesPrefix(id)):
						files = append(files, o.Key)
					case !attachmentList.MatchString(o.Key):
						left = append(left, o.Key)
					}
				}
				assert.Contains(c, files, joined)
				assert.Len(c, files, delivered, "what the job delivers: %v", files)
				assert.Empty(c, left, "pieces or split state left")
			}, 30*time.Second, 200*time.Millisecond)
		})
	}
}

// loggedJoin reports whether the archiver's log has its "pieces joined"
// line for job id.
func loggedJoin(log, id string) bool {
	for line := range strings.Lines(log) {
		if strings.Contains(line, `"msg":"pieces joined"`) && strings.Contains(line, `"job_id":"`+id+`"`) {
			return true
		}
	}
	return false
}
